'use strict';
/**
 * HTTP behaviour around the routes (docs/API.md "Compression", "Caching", "CORS"): the `compression`
 * and `cors` middleware configured from the environment, `Cache-Control: no-store` for personal
 * answers, and cacheable representations with a strong ETag. Express's res.send answers a fresh
 * conditional GET with 304 by itself (the `fresh` package) once ETag / Last-Modified are set.
 */
const crypto = require('node:crypto');
const compression = require('compression');
const cors = require('cors');

const JSON_TYPE = /^application\/json\b/i;

/**
 * Compress JSON bodies of at least `threshold` bytes with the coding the client prefers (br, gzip,
 * deflate). Only JSON: the new service compresses nothing else, and a stream (text/event-stream)
 * must not sit in a compressor's buffer.
 */
function compress(config) {
  return compression({
    threshold: config.compressionThreshold,
    filter: (req, res) => JSON_TYPE.test(String(res.getHeader('Content-Type') || '')),
  });
}

/**
 * CORS: only an allowed Origin gets CORS headers, and only an OPTIONS request from one that names
 * Access-Control-Request-Method is a preflight (204 on any path); every other OPTIONS stays 404.
 * While CORS is on, every response varies on Origin, because what it says depends on the origin.
 */
function corsPolicy({ cors: settings }) {
  if (settings.origins.length === 0) return [];
  const wildcard = settings.origins.length === 1 && settings.origins[0] === '*';
  const allowed = new Set(settings.origins);
  const options = {
    methods: settings.methods,
    allowedHeaders: settings.headers,
    exposedHeaders: settings.exposed,
    credentials: settings.credentials,
    maxAge: settings.maxAge,
  };
  const varyOrigin = (req, res, next) => {
    res.vary('Origin');
    next();
  };
  const delegate = (req, callback) => {
    const origin = req.headers.origin;
    const ok = origin !== undefined && (wildcard || allowed.has(origin));
    const preflightOk = req.method !== 'OPTIONS' || req.headers['access-control-request-method'] !== undefined;
    // origin: false makes cors skip the request entirely (no header at all).
    callback(null, ok && preflightOk ? { ...options, origin: wildcard ? '*' : origin } : { origin: false });
  };
  return [varyOrigin, cors(delegate)];
}

/** Route middleware: answers (errors included) that carry tokens or the caller's account are never stored. */
function noStore(req, res, next) {
  res.setHeader('Cache-Control', 'no-store');
  next();
}

/** The strong ETag of a body, as the `etag` package computes it: "<length hex>-<sha1 base64, 27 chars>". */
function strongEtag(body) {
  const hash = crypto.createHash('sha1').update(body).digest('base64').substring(0, 27);
  return `"${body.length.toString(16)}-${hash}"`;
}

/**
 * Send `value` as a public, cacheable representation: ETag of its bytes, Last-Modified when given
 * (an ISO timestamp that moves with every change of everything in the body), Cache-Control max-age.
 */
function sendCacheable(res, value, { maxAge, updatedAt }) {
  const json = JSON.stringify(value);
  res.setHeader('ETag', strongEtag(Buffer.from(json)));
  if (updatedAt !== undefined) res.setHeader('Last-Modified', new Date(updatedAt).toUTCString());
  res.setHeader('Cache-Control', `public, max-age=${maxAge}`);
  // A string body gets "; charset=utf-8" and goes through res.send's freshness check (304).
  res.setHeader('Content-Type', 'application/json');
  res.send(json);
}

module.exports = { compress, corsPolicy, noStore, sendCacheable, strongEtag };
