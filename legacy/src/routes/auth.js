'use strict';
/** /api/v1/auth: register, login, refresh, logout, me. */
const express = require('express');
const { errors } = require('../errors');
const { UNIQUE_VIOLATION, transaction } = require('../db');
const { jsonBody } = require('../middleware/jsonBody');
const { requireAuth } = require('../middleware/auth');
const { noStore } = require('../middleware/http');
const { schemas, validateBody } = require('../lib/validate');
const { hashPassword, verifyPassword, verifyDummy } = require('../lib/passwords');
const { issueAccessToken, newRefreshToken, hashRefreshToken } = require('../lib/tokens');
const { checkLoginRate } = require('../lib/rateLimit');

/** Issue an access token and a stored refresh token for `userId`, using `db` (pool or transaction). */
async function issueTokens(ctx, db, userId) {
  const { config, refreshTokens } = ctx;
  const refresh = newRefreshToken();
  await refreshTokens.create(db, userId, hashRefreshToken(refresh), config.refreshTokenTtl);
  const access = issueAccessToken(userId, config.jwtSecret, config.accessTokenTtl);
  return {
    access_token: access.token,
    token_type: 'Bearer',
    expires_in: config.accessTokenTtl,
    refresh_token: refresh,
  };
}

function authRoutes(ctx) {
  const { config, pool, redis, users, refreshTokens } = ctx;
  const router = express.Router();
  const auth = requireAuth(ctx);

  router.post('/api/v1/auth/register', noStore, jsonBody(), async (req, res) => {
    const input = validateBody(req.body, schemas.register);
    const passwordHash = await hashPassword(input.password, config.bcryptCost);
    try {
      const body = await transaction(pool, async (client) => {
        const user = await users.create(client, {
          email: input.email.toLowerCase(), name: input.name, passwordHash,
        });
        return { user, tokens: await issueTokens(ctx, client, user.id) };
      });
      res.status(201).json(body);
    } catch (err) {
      if (err.code === UNIQUE_VIOLATION) throw errors.conflict();
      throw err;
    }
  });

  router.post('/api/v1/auth/login', noStore, jsonBody(), async (req, res) => {
    const input = validateBody(req.body, schemas.login);
    const email = input.email.toLowerCase();
    await checkLoginRate(redis, config, email, req.ip);
    const found = await users.findCredentials(email);
    const ok = found === null
      ? await verifyDummy(input.password, config.bcryptCost)
      : await verifyPassword(input.password, found.password_hash);
    if (!ok) throw errors.invalidCredentials();
    res.json(await issueTokens(ctx, pool, found.id));
  });

  router.post('/api/v1/auth/refresh', noStore, jsonBody(), async (req, res) => {
    const input = validateBody(req.body, schemas.refresh);
    const tokens = await transaction(pool, async (client) => {
      const userId = await refreshTokens.consume(client, hashRefreshToken(input.refresh_token));
      return userId === null ? null : issueTokens(ctx, client, userId);
    });
    if (tokens === null) throw errors.invalidToken();
    res.json(tokens);
  });

  // Any body is ignored here (docs/API.md), so no Content-Type or JSON checks.
  router.post('/api/v1/auth/logout', auth, async (req, res) => {
    const ttl = Math.max(1, Math.ceil(req.token.exp - Date.now() / 1000));
    await redis.set(`${config.redisPrefix}revoked:${req.token.jti}`, '1', 'EX', ttl);
    await refreshTokens.revokeAll(req.user.id);
    res.status(204).end();
  });

  router.get('/api/v1/auth/me', noStore, auth, (req, res) => {
    res.json(req.user);
  });

  return router;
}

module.exports = { authRoutes };
