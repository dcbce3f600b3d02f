'use strict';
/**
 * The Express application factory. It receives its long-lived resources (pool, redis, logger,
 * OpenAPI document) from server.js and creates none itself, so tests can build it around theirs.
 */
const express = require('express');
const { requestId } = require('./middleware/requestId');
const { refuseRepeatedSingletons } = require('./edge');
const { accessLog } = require('./middleware/accessLog');
const { notFound, errorHandler } = require('./middleware/errors');
const { compress, corsPolicy } = require('./middleware/http');
const { createMetrics } = require('./metrics');
const { usersRepo } = require('./repo/users');
const { postsRepo } = require('./repo/posts');
const { refreshTokensRepo } = require('./repo/refreshTokens');
const { healthRoutes } = require('./routes/health');
const { authRoutes } = require('./routes/auth');
const { usersRoutes } = require('./routes/users');
const { postsRoutes } = require('./routes/posts');
const { streamRoutes } = require('./routes/stream');

/**
 * Build the app.
 * @param {{config: object, pool: import('pg').Pool, redis: import('ioredis').Redis, logger: object, openapi: object,
 *          metrics?: object,
 *          hub: import('./lib/streamHub').Hub}} deps  (metrics: from createMetrics; a private one when absent)
 */
function createApp({ config, pool, redis, logger, openapi, metrics, hub }) {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Client IP for the login rate limit: the Nth X-Forwarded-For entry from the right (0: the socket).
  app.set('trust proxy', config.trustedHops);
  // Express defaults, spelled out because the gateway and the new service copy them.
  app.set('case sensitive routing', false);
  app.set('strict routing', false);

  const ctx = {
    config,
    pool,
    redis,
    logger,
    openapi,
    hub,
    users: usersRepo(pool),
    posts: postsRepo(pool),
    refreshTokens: refreshTokensRepo(pool),
  };

  app.use(refuseRepeatedSingletons()); // before anything: the new service's parser refuses these
  app.use(requestId());
  app.use(accessLog(logger));
  app.use((metrics || createMetrics({ pool, version: '1.0.0' })).middleware);
  app.use(compress(config));
  // CORS preflights are answered here (204); any other OPTIONS falls through to the 404 below.
  for (const middleware of corsPolicy(config)) app.use(middleware);
  // Express answers OPTIONS itself with an Allow list; the contract says no method is served there.
  app.use((req, res, next) => (req.method === 'OPTIONS' ? notFound()(req, res, next) : next()));
  app.use(healthRoutes(ctx));
  app.use(authRoutes(ctx));
  app.use(usersRoutes(ctx));
  app.use(streamRoutes(ctx)); // before postsRoutes: /api/v1/posts/stream is not a post id
  app.use(postsRoutes(ctx));
  app.use(notFound());
  app.use(errorHandler(logger));
  return app;
}

module.exports = { createApp };
