'use strict';
/** SQL for refresh tokens, which are stored only as their sha256 hex. */

function refreshTokensRepo(pool) {
  return {
    /** Store a new token hash for `userId`, valid for `ttlSeconds`. */
    async create(db, userId, tokenHash, ttlSeconds) {
      await db.query(
        `INSERT INTO refresh_tokens (user_id, token_hash, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))`,
        [userId, tokenHash, ttlSeconds],
      );
    },

    /**
     * Revoke a live token and return its user id, or null if it is unknown, expired or already
     * revoked. One UPDATE, so two concurrent refreshes cannot both rotate the same token.
     */
    async consume(db, tokenHash) {
      const { rows } = await db.query(
        `UPDATE refresh_tokens SET revoked_at = now()
         WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()
         RETURNING user_id`,
        [tokenHash],
      );
      return rows.length ? rows[0].user_id : null;
    },

    /** Revoke every live refresh token of a user (logout). */
    async revokeAll(userId) {
      await pool.query(
        'UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL', [userId],
      );
    },
  };
}

module.exports = { refreshTokensRepo };
