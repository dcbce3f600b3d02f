'use strict';
/** Liveness, readiness (pings PostgreSQL and Redis) and the OpenAPI document. */
const express = require('express');
const { version } = require('../../package.json');

const CHECK_TIMEOUT_MS = 2000;

/** Resolve 'ok' or 'failing: <why>' within CHECK_TIMEOUT_MS. */
async function check(probe) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(`failing: no answer within ${CHECK_TIMEOUT_MS} ms`), CHECK_TIMEOUT_MS);
  });
  const attempt = probe().then(() => 'ok', (err) => `failing: ${err.message || String(err)}`);
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function healthRoutes({ pool, redis, openapi }) {
  const router = express.Router();

  router.get('/health', (req, res) => {
    res.json({ status: 'ok', version, uptime_s: Math.round(process.uptime() * 1000) / 1000 });
  });

  router.get('/health/ready', async (req, res) => {
    const [database, cache] = await Promise.all([
      check(() => pool.query('SELECT 1')),
      check(() => redis.ping()),
    ]);
    const ok = database === 'ok' && cache === 'ok';
    res.status(ok ? 200 : 503).json({
      status: ok ? 'ok' : 'failing',
      checks: { database, redis: cache },
    });
  });

  router.get('/openapi.json', (req, res) => {
    res.json(openapi);
  });

  return router;
}

module.exports = { healthRoutes };
