'use strict';
/** /api/v1/posts: list, create, read, update (author), delete (author). */
const express = require('express');
const { errors } = require('../errors');
const { jsonBody } = require('../middleware/jsonBody');
const { requireAuth } = require('../middleware/auth');
const { schemas, validateBody, validatePage, isId } = require('../lib/validate');
const { toPost } = require('../repo/posts');
const { page, renderJoined } = require('./pages');
const { sendCacheable } = require('../middleware/http');

function postsRoutes(ctx) {
  const { posts, hub, logger } = ctx;
  const router = express.Router();
  const auth = requireAuth(ctx);

  /** The post row with path id `id`, or 404 (a malformed id is just an unknown one). */
  async function existing(id) {
    const post = isId(id) ? await posts.findById(id) : null;
    if (post === null) throw errors.notFound('post');
    return post;
  }

  router.get('/api/v1/posts', async (req, res) => {
    const { limit, offset, authorId } = validatePage(req.query, { withAuthor: true });
    const rows = await posts.list(limit, offset, authorId);
    res.json(page(rows, limit, offset, renderJoined));
  });

  router.post('/api/v1/posts', auth, jsonBody(), async (req, res) => {
    const input = validateBody(req.body, schemas.post);
    const row = await posts.create(req.user.id, input);
    const post = toPost(row, { id: req.user.id, name: req.user.name });
    try { // the post exists either way: a stream outage must not turn its creation into an error
      await hub.publish(JSON.stringify(post));
    } catch (err) {
      logger.error('post not published to the stream', { request_id: req.id, post_id: row.id, error: err.message });
    }
    res.status(201).json(post);
  });

  router.get('/api/v1/posts/:id', async (req, res) => {
    // No Last-Modified: the post embeds its author's name, which changes without the post's updated_at.
    sendCacheable(res, renderJoined(await existing(req.params.id)), { maxAge: ctx.config.cacheMaxAge });
  });

  router.patch('/api/v1/posts/:id', auth, jsonBody(), async (req, res) => {
    const input = validateBody(req.body, schemas.post, { partial: true });
    const post = await existing(req.params.id);
    if (post.author_id !== req.user.id) throw errors.forbidden('posts');
    const updated = await posts.update(post.id, input);
    if (updated === null) throw errors.notFound('post'); // deleted meanwhile
    res.json(renderJoined(updated));
  });

  router.delete('/api/v1/posts/:id', auth, async (req, res) => {
    const post = await existing(req.params.id);
    if (post.author_id !== req.user.id) throw errors.forbidden('posts');
    await posts.remove(post.id);
    res.status(204).end();
  });

  return router;
}

module.exports = { postsRoutes };
