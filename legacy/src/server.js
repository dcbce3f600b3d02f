'use strict';
/**
 * Process entry: `node legacy/src/server.js`. Validates the environment (exit 2 naming the bad
 * variable), opens the pool and Redis, serves, and drains on SIGTERM/SIGINT.
 */
const fs = require('node:fs');
const http = require('node:http');
const { loadConfig, ConfigError } = require('./config');
const { createLogger, errorFields } = require('./logger');
const { createPool } = require('./db');
const { createRedis } = require('./redis');
const { createApp } = require('./app');
const { createMetrics } = require('./metrics');
const { version } = require('../package.json');
const { serverOptions, onClientError } = require('./edge');
const { Hub } = require('./lib/streamHub');
const { UPGRADE } = require('./routes/stream');

const SHUTDOWN_DEADLINE_MS = 10000;

function fail(message) {
  process.stderr.write(`legacy: ${message}\n`);
  process.exit(2);
}

function loadOpenapi(path) {
  try {
    return JSON.parse(fs.readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError('OPENAPI_PATH', `cannot be read as JSON at ${path} (${err.message}); ` +
      'point it at services/openapi.json');
  }
}

function main() {
  let config;
  let openapi;
  try {
    config = loadConfig();
    openapi = loadOpenapi(config.openapiPath);
  } catch (err) {
    if (err instanceof ConfigError) fail(`configuration error: ${err.message}`);
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const pool = createPool(config, (err) => logger.warn('idle database client failed', errorFields(err)));
  let lastRedisError = '';
  const redis = createRedis(config, (err) => {
    // ioredis reports every failed reconnect; one line per distinct error is enough.
    if (err.message !== lastRedisError) logger.warn('redis error', errorFields(err));
    lastRedisError = err.message;
  });
  redis.on('ready', () => { lastRedisError = ''; });

  const metrics = createMetrics({ pool, version });
  metrics.watchRedis(redis);
  let metricsServer = null;
  if (config.metricsPort !== null) {
    metrics.listen(config.host, config.metricsPort).then((listening) => {
      metricsServer = listening;
      logger.info('metrics listening', { host: config.host, metrics_port: listening.address().port });
    }, (err) => {
      logger.error('cannot listen for metrics', { host: config.host, port: config.metricsPort, ...errorFields(err) });
      process.exit(1);
    });
  }

  const hub = new Hub({ redis, config, logger });
  const app = createApp({ config, pool, redis, logger, openapi, metrics, hub });
  // Head size limit and JSON answers for unparseable requests: see edge.js (the new service matches).
  const server = http.createServer(serverOptions, app);
  server.maxHeadersCount = 0; // no count limit (Node's default drops headers after 2000): only the size
  server.on('clientError', onClientError);
  server.once('error', (err) => {
    logger.error('cannot listen', { host: config.host, port: config.port, ...errorFields(err) });
    process.exit(1);
  });
  server.listen(config.port, config.host, () => {
    const { port } = server.address();
    logger.info('listening', { host: config.host, port, pid: process.pid });
  });
  // WebSocket upgrades go through the app like any request, with a response bound to the socket: the
  // /api/v1/ws route authenticates and takes the socket over; any other answer ends the connection.
  server.on('upgrade', (req, socket, head) => {
    const res = new http.ServerResponse(req);
    res.assignSocket(socket);
    res.on('finish', () => socket.destroySoon());
    req[UPGRADE] = { socket, head };
    app(req, res);
  });
  // Longer than the gateway's idle timeout, so a pooled upstream connection is never closed under it.
  server.keepAliveTimeout = 65000;
  server.headersTimeout = 66000;

  let stopping = false;
  // server.close() only closes connections idle at that moment; a keep-alive connection whose request
  // was in flight turns idle later and would hold the process until the deadline.
  server.on('request', (req, res) => {
    if (stopping) res.setHeader('Connection', 'close');
    res.on('finish', () => {
      if (stopping) setImmediate(() => server.closeIdleConnections());
    });
  });
  const shutdown = (signal) => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal });
    const force = setTimeout(() => {
      logger.error('shutdown deadline passed, exiting');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    force.unref();
    if (metricsServer !== null) metricsServer.close();
    hub.close(); // open event streams and sockets end now, so the server can close
    server.close(async () => {
      await Promise.allSettled([pool.end(), redis.quit()]);
      logger.info('stopped');
      process.exit(0);
    });
    server.closeIdleConnections();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main();
