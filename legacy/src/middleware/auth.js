'use strict';
/**
 * Bearer authentication: a valid, unrevoked access token whose user still exists, else one 401.
 */
const { errors } = require('../errors');
const { verifyAccessToken } = require('../lib/tokens');

const BEARER = /^bearer +(\S+)$/i;

/** Middleware factory: sets req.user (the User row) and req.token (the verified payload). */
function requireAuth({ config, redis, users }) {
  return async (req, res, next) => {
    const match = BEARER.exec(req.headers.authorization || '');
    if (!match) throw errors.unauthorized();
    const payload = verifyAccessToken(match[1], config.jwtSecret, Date.now() / 1000);
    if (payload === null) throw errors.unauthorized();
    if (await redis.exists(`${config.redisPrefix}revoked:${payload.jti}`)) throw errors.unauthorized();
    const user = await users.findById(payload.sub);
    // A deleted user's tokens die with it, although the JWT itself is still well-formed.
    if (user === null) throw errors.unauthorized();
    req.user = user;
    req.token = payload;
    next();
  };
}

module.exports = { requireAuth };
