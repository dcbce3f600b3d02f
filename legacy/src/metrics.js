'use strict';
/**
 * Prometheus metrics (prom-client) with the same names and labels as the new service's
 * (services/metrics.py, docs/API.md "Metrics"), so one dashboard shows both side by side.
 * `/metrics` is served on its own port (METRICS_PORT), never on the API port.
 */
const http = require('node:http');
const client = require('prom-client');

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const UNMATCHED = '<unmatched>';

/** Express's '/api/v1/users/:id' as the contract writes it: '/api/v1/users/{id}'. */
function template(route) {
  return route && typeof route.path === 'string' ? route.path.replace(/:(\w+)/g, '{$1}') : UNMATCHED;
}

/** The registry and its metrics; `pool` is the pg Pool, `version` the service version. */
function createMetrics({ pool, version }) {
  // Only these metrics: no nodejs_* / process_* defaults, which the Python service cannot mirror.
  const registry = new client.Registry();
  const requests = new client.Counter({
    name: 'http_requests_total',
    help: 'HTTP requests answered, by route template, method and status.',
    labelNames: ['route', 'method', 'status'],
    registers: [registry],
  });
  const duration = new client.Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time to answer a request, by route template and method.',
    labelNames: ['route', 'method'],
    buckets: BUCKETS,
    registers: [registry],
  });
  const gauge = (name, help, read) => new client.Gauge({
    name, help, registers: [registry], collect() { this.set(read()); },
  });
  gauge('db_pool_size', 'Open database connections.', () => pool.totalCount);
  gauge('db_pool_in_use', 'Database connections lent to a request.', () => pool.totalCount - pool.idleCount);
  gauge('db_pool_waiting', 'Requests waiting for a database connection.', () => pool.waitingCount);
  gauge('db_pool_max', 'The most connections the pool may open.', () => pool.options.max);
  const redisErrors = new client.Counter({
    name: 'redis_errors_total', help: 'Redis commands that failed.', registers: [registry],
  });
  const info = new client.Gauge({
    name: 'service_info', help: 'Which service this is.', labelNames: ['service', 'version'], registers: [registry],
  });
  info.set({ service: 'legacy', version }, 1);

  /** Middleware: one observation per answered request (on 'finish': an aborted one is not answered). */
  function middleware(req, res, next) {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = template(req.route);
      requests.inc({ route, method: req.method, status: String(res.statusCode) });
      duration.observe({ route, method: req.method }, seconds);
    });
    next();
  }

  /** Count every failed command of an ioredis client (connection lost, timeout, error reply). */
  function watchRedis(redis) {
    const send = redis.sendCommand.bind(redis);
    redis.sendCommand = (command, stream) => {
      if (command && command.promise) command.promise.catch(() => redisErrors.inc());
      return send(command, stream);
    };
  }

  /** Serve GET /metrics on host:port; resolves with the server once listening. */
  function listen(host, port) {
    const server = http.createServer(async (req, res) => {
      if (req.method !== 'GET' || req.url.split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
        return;
      }
      const text = await registry.metrics();
      res.writeHead(200, { 'Content-Type': registry.contentType }).end(text);
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve(server));
    });
  }

  return { registry, middleware, watchRedis, listen };
}

module.exports = { createMetrics, template, UNMATCHED };
