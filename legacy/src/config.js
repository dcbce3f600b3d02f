'use strict';
/**
 * Configuration from the environment, validated once at start (docs/API.md "Configuration").
 *
 * loadConfig() returns a frozen object or throws ConfigError naming the variable; server.js prints
 * the message and exits with status 2, so a bad deploy fails loudly instead of half-working.
 */
const path = require('node:path');

class ConfigError extends Error {
  constructor(name, problem) {
    super(`${name} ${problem}`);
    this.name = 'ConfigError';
    this.variable = name;
  }
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error'];
const DEFAULT_OPENAPI_PATH = path.resolve(__dirname, '../../services/openapi.json');

function required(env, name, hint) {
  const value = env[name];
  if (value === undefined || value === '') {
    throw new ConfigError(name, `is not set: ${hint}`);
  }
  return value;
}

function integer(env, name, fallback, min, max = Number.MAX_SAFE_INTEGER) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  // Strict digits only: parseInt('12abc') === 12 would hide a typo.
  if (!/^[0-9]{1,15}$/.test(raw)) {
    throw new ConfigError(name, `must be an integer between ${min} and ${max} (got ${JSON.stringify(raw)})`);
  }
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(name, `must be an integer between ${min} and ${max} (got ${value})`);
  }
  return value;
}

function url(env, name, schemes, hint) {
  const raw = required(env, name, hint);
  let parsed;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `is not a valid URL; expected ${schemes.join(' or ')}//...`);
  }
  if (!schemes.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${schemes.join(' or ')} (got ${parsed.protocol})`);
  }
  return raw;
}

/** A comma-separated list: items trimmed, empty ones dropped; `fallback` when the variable is unset. */
function list(env, name, fallback) {
  const raw = env[name];
  if (raw === undefined) return fallback;
  return raw.split(',').map((item) => item.trim()).filter((item) => item !== '');
}

function bool(env, name, fallback) {
  const raw = (env[name] || '').trim().toLowerCase();
  if (raw === '') return fallback;
  if (raw !== 'true' && raw !== 'false') {
    throw new ConfigError(name, `must be true or false (got ${JSON.stringify(env[name])})`);
  }
  return raw === 'true';
}

const ORIGIN = /^https?:\/\/[^/\s,*]+$/;

/** CORS settings (docs/API.md "CORS"); no allowed origin means CORS is off. */
function corsConfig(env) {
  const origins = list(env, 'CORS_ALLOWED_ORIGINS', []);
  const credentials = bool(env, 'CORS_ALLOW_CREDENTIALS', false);
  if (origins.includes('*') && origins.length > 1) {
    throw new ConfigError('CORS_ALLOWED_ORIGINS', 'cannot combine `*` with other origins');
  }
  if (origins.includes('*') && credentials) {
    throw new ConfigError('CORS_ALLOW_CREDENTIALS',
      'cannot be true with CORS_ALLOWED_ORIGINS=* (browsers refuse it); list the origins instead');
  }
  for (const origin of origins) {
    if (origin !== '*' && !ORIGIN.test(origin)) {
      throw new ConfigError('CORS_ALLOWED_ORIGINS', `has ${JSON.stringify(origin)}, which is not an origin; ` +
        'write scheme://host[:port] without a path, e.g. https://app.example.com');
    }
  }
  return Object.freeze({
    origins,
    methods: list(env, 'CORS_ALLOWED_METHODS', ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE']).map((m) => m.toUpperCase()),
    headers: list(env, 'CORS_ALLOWED_HEADERS', ['Authorization', 'Content-Type', 'X-Request-Id']),
    exposed: list(env, 'CORS_EXPOSED_HEADERS', ['X-Request-Id', 'Retry-After', 'WWW-Authenticate']),
    credentials,
    maxAge: integer(env, 'CORS_MAX_AGE', 600, 0, 86400),
  });
}

/** Read and validate the whole configuration; throws ConfigError on the first bad value. */
function loadConfig(env = process.env) {
  const databaseUrl = url(env, 'DATABASE_URL', ['postgres:', 'postgresql:'],
    'set it to the PostgreSQL URL, e.g. postgresql://user@127.0.0.1:5432/app');
  const redisUrl = url(env, 'REDIS_URL', ['redis:', 'rediss:'],
    'set it to the Redis URL, e.g. redis://127.0.0.1:6379/0');
  const jwtSecret = required(env, 'JWT_SECRET', 'set it to a random secret of at least 32 characters');
  if ([...jwtSecret].length < 32) {
    throw new ConfigError('JWT_SECRET', `must be at least 32 characters (got ${[...jwtSecret].length})`);
  }
  const host = env.HOST === undefined || env.HOST === '' ? '127.0.0.1' : env.HOST;
  const port = integer(env, 'PORT', 3000, 0, 65535);
  const dbPoolMin = integer(env, 'DB_POOL_MIN', 2, 0, 1000);
  const dbPoolMax = integer(env, 'DB_POOL_MAX', 10, 1, 1000);
  if (dbPoolMin > dbPoolMax) {
    throw new ConfigError('DB_POOL_MIN', `must not exceed DB_POOL_MAX (${dbPoolMin} > ${dbPoolMax})`);
  }
  const logLevel = env.LOG_LEVEL === undefined || env.LOG_LEVEL === '' ? 'info' : env.LOG_LEVEL.toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')} (got ${JSON.stringify(env.LOG_LEVEL)})`);
  }
  return Object.freeze({
    databaseUrl,
    redisUrl,
    redisPrefix: env.REDIS_PREFIX === undefined ? 'strangler:' : env.REDIS_PREFIX,
    jwtSecret,
    host,
    port,
    dbPoolMin,
    dbPoolMax,
    accessTokenTtl: integer(env, 'ACCESS_TOKEN_TTL', 900, 1, 86400 * 365),
    refreshTokenTtl: integer(env, 'REFRESH_TOKEN_TTL', 1209600, 1, 86400 * 3650),
    // bcrypt cost of new hashes: 12 (docs/API.md); lower only where hashing is not what is measured.
    bcryptCost: integer(env, 'BCRYPT_COST', 12, 4, 31),
    loginRateWindow: integer(env, 'LOGIN_RATE_WINDOW', 300, 1, 86400),
    loginRateLimitAccount: integer(env, 'LOGIN_RATE_LIMIT_ACCOUNT', 10, 1, 1000000),
    loginRateLimitIp: integer(env, 'LOGIN_RATE_LIMIT_IP', 100, 1, 1000000),
    trustedHops: integer(env, 'TRUSTED_HOPS', 0, 0, 100),
    logLevel,
    compressionThreshold: integer(env, 'COMPRESSION_THRESHOLD', 1024, 0, 2 ** 31 - 1),
    cacheMaxAge: integer(env, 'CACHE_MAX_AGE', 60, 0, 31536000),
    cors: corsConfig(env),
    // Unset: no metrics listener; 0 picks a free port (logged).
    metricsPort: (env.METRICS_PORT || '').trim() === '' ? null : integer(env, 'METRICS_PORT', 0, 0, 65535),
    // The post event stream and WebSocket (routes/stream.js): below a load balancer's 30 s idle timeout.
    streamHeartbeatS: integer(env, 'STREAM_HEARTBEAT_S', 15, 1, 3600),
    wsPingS: integer(env, 'WS_PING_S', 15, 1, 3600),
    wsSendTimeoutS: integer(env, 'WS_SEND_TIMEOUT_S', 10, 1, 3600),
    streamHistoryMax: integer(env, 'STREAM_HISTORY_MAX', 10000, 1, 10000000),
    openapiPath: env.OPENAPI_PATH ? path.resolve(env.OPENAPI_PATH) : DEFAULT_OPENAPI_PATH,
  });
}

module.exports = { loadConfig, ConfigError };
