'use strict';
/** SQL for users. Every statement is parameterised; ids travel as text and PostgreSQL casts them. */

const COLUMNS = 'id, email, name, created_at, updated_at';

/** A users row as the API renders it (key order of docs/API.md). */
function toUser(row) {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

function usersRepo(pool) {
  return {
    async findById(id) {
      const { rows } = await pool.query(`SELECT ${COLUMNS} FROM users WHERE id = $1`, [id]);
      return rows.length ? toUser(rows[0]) : null;
    },

    /** {id, password_hash} for login, or null. `email` is already lowercased. */
    async findCredentials(email) {
      const { rows } = await pool.query('SELECT id, password_hash FROM users WHERE email = $1', [email]);
      return rows[0] || null;
    },

    /** Insert a user; a duplicate email raises pg's unique_violation (23505). */
    async create(db, { email, name, passwordHash }) {
      const { rows } = await db.query(
        `INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3) RETURNING ${COLUMNS}`,
        [email, name, passwordHash],
      );
      return toUser(rows[0]);
    },

    /** One page by id ascending; fetches limit+1 rows to know whether there is a next page. */
    async list(limit, offset) {
      const { rows } = await pool.query(
        `SELECT ${COLUMNS} FROM users ORDER BY id ASC LIMIT $1 OFFSET $2`, [limit + 1, offset],
      );
      return rows.map(toUser);
    },

    /**
     * Update the given fields; updated_at moves forward by at least 1 ms so every PATCH is visible
     * even within one millisecond. Returns the user or null if it vanished.
     */
    async update(id, { name, email, passwordHash }) {
      const { rows } = await pool.query(
        `UPDATE users SET
           name = COALESCE($2, name),
           email = COALESCE($3, email),
           password_hash = COALESCE($4, password_hash),
           updated_at = GREATEST(clock_timestamp(), updated_at + interval '1 millisecond')
         WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, name ?? null, email ?? null, passwordHash ?? null],
      );
      return rows.length ? toUser(rows[0]) : null;
    },

    /** Delete a user; posts and refresh tokens go by ON DELETE CASCADE. */
    async remove(id) {
      const { rowCount } = await pool.query('DELETE FROM users WHERE id = $1', [id]);
      return rowCount > 0;
    },
  };
}

module.exports = { usersRepo, toUser };
