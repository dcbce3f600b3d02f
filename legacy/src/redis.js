'use strict';
/**
 * The Redis client (ioredis). Keys are prefixed with REDIS_PREFIX by the callers, so the keys stay
 * readable in docs/API.md and shared with the new service.
 */
const Redis = require('ioredis');

/** Create a client that reconnects forever but fails each command fast while Redis is away. */
function createRedis(config, onError) {
  const client = new Redis(config.redisUrl, {
    // One retry, then the command rejects (-> 500 / readiness "failing") instead of hanging.
    maxRetriesPerRequest: 1,
    commandTimeout: 2000,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  client.on('error', onError);
  return client;
}

module.exports = { createRedis };
