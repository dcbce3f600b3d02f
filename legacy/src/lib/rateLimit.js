'use strict';
/**
 * Login rate limit: fixed windows in Redis, keys shared with the new service (docs/API.md "Auth").
 */
const crypto = require('node:crypto');
const { errors } = require('../errors');

/**
 * Count one login attempt for (email, ip); throws 429 when either counter is over its limit.
 * Both counters are incremented on every attempt, so a locked-out account still counts against its IP.
 */
async function checkLoginRate(redis, config, email, ip) {
  const account = crypto.createHash('sha256').update(email.toLowerCase(), 'utf8').digest('hex');
  const keys = [
    [`${config.redisPrefix}rl:login:acct:${account}`, config.loginRateLimitAccount],
    [`${config.redisPrefix}rl:login:ip:${ip}`, config.loginRateLimitIp],
  ];
  const counts = await Promise.all(keys.map(async ([key]) => {
    const count = await redis.incr(key);
    if (count === 1) await redis.expire(key, config.loginRateWindow);
    return count;
  }));
  let retryAfter = 0;
  for (let i = 0; i < keys.length; i += 1) {
    const [key, limit] = keys[i];
    if (counts[i] <= limit) continue;
    let ttl = await redis.ttl(key);
    if (ttl < 0) {
      // The key lost its expiry (a crash between INCR and EXPIRE): restore it rather than lock forever.
      await redis.expire(key, config.loginRateWindow);
      ttl = config.loginRateWindow;
    }
    retryAfter = Math.max(retryAfter, ttl, 1);
  }
  if (retryAfter > 0) throw errors.rateLimited(retryAfter);
}

module.exports = { checkLoginRate };
