'use strict';
/** /api/v1/users: create, list, read, update (self), delete (self), and a user's posts. */
const express = require('express');
const { errors } = require('../errors');
const { UNIQUE_VIOLATION } = require('../db');
const { jsonBody } = require('../middleware/jsonBody');
const { requireAuth } = require('../middleware/auth');
const { schemas, validateBody, validatePage, isId } = require('../lib/validate');
const { hashPassword } = require('../lib/passwords');
const { page, renderJoined } = require('./pages');
const { sendCacheable } = require('../middleware/http');

function usersRoutes(ctx) {
  const { users, posts } = ctx;
  const router = express.Router();
  const auth = requireAuth(ctx);

  /** The user with path id `id`, or 404 (a malformed id is just an unknown one). */
  async function existing(id) {
    const user = isId(id) ? await users.findById(id) : null;
    if (user === null) throw errors.notFound('user');
    return user;
  }

  router.post('/api/v1/users', jsonBody(), async (req, res) => {
    const input = validateBody(req.body, schemas.register);
    const passwordHash = await hashPassword(input.password, ctx.config.bcryptCost);
    try {
      const user = await users.create(ctx.pool, { email: input.email.toLowerCase(), name: input.name, passwordHash });
      res.status(201).json(user);
    } catch (err) {
      if (err.code === UNIQUE_VIOLATION) throw errors.conflict();
      throw err;
    }
  });

  router.get('/api/v1/users', async (req, res) => {
    const { limit, offset } = validatePage(req.query);
    res.json(page(await users.list(limit, offset), limit, offset, (user) => user));
  });

  router.get('/api/v1/users/:id', async (req, res) => {
    const user = await existing(req.params.id);
    // updated_at moves on every change of the user, so it is an exact Last-Modified.
    sendCacheable(res, user, { maxAge: ctx.config.cacheMaxAge, updatedAt: user.updated_at });
  });

  router.patch('/api/v1/users/:id', auth, jsonBody(), async (req, res) => {
    const input = validateBody(req.body, schemas.userPatch, { partial: true });
    const user = await existing(req.params.id);
    if (user.id !== req.user.id) throw errors.forbidden('user');
    const changes = { name: input.name };
    if (input.email !== undefined) changes.email = input.email.toLowerCase();
    if (input.password !== undefined) {
      changes.passwordHash = await hashPassword(input.password, ctx.config.bcryptCost);
    }
    let updated;
    try {
      updated = await users.update(user.id, changes);
    } catch (err) {
      if (err.code === UNIQUE_VIOLATION) throw errors.conflict();
      throw err;
    }
    if (updated === null) throw errors.notFound('user'); // deleted meanwhile
    res.json(updated);
  });

  router.delete('/api/v1/users/:id', auth, async (req, res) => {
    const user = await existing(req.params.id);
    if (user.id !== req.user.id) throw errors.forbidden('user');
    await users.remove(user.id);
    res.status(204).end();
  });

  router.get('/api/v1/users/:id/posts', async (req, res) => {
    const { limit, offset } = validatePage(req.query);
    const user = await existing(req.params.id);
    const rows = await posts.list(limit, offset, user.id);
    res.json(page(rows, limit, offset, renderJoined));
  });

  return router;
}

module.exports = { usersRoutes };
