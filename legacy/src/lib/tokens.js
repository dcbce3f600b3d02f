'use strict';
/**
 * Access tokens (JWT HS256) and refresh tokens, interchangeable with the new service's.
 *
 * Hand-written rather than jsonwebtoken: the contract fixes the header bytes and the payload key
 * order, and verification must accept only HS256 with a constant-time signature compare.
 */
const crypto = require('node:crypto');
const { isStrictJson } = require('../middleware/jsonBody');

const HEADER = Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url');
const ID = /^[1-9][0-9]{0,17}$/;
const JTI = /^[0-9a-f]{32}$/;

function sign(input, secret) {
  return crypto.createHmac('sha256', secret).update(input).digest('base64url');
}

/** Create an access token for user `userId`; returns {token, jti, exp}. */
function issueAccessToken(userId, secret, ttlSeconds, nowSeconds = Math.floor(Date.now() / 1000)) {
  const jti = crypto.randomBytes(16).toString('hex');
  const exp = nowSeconds + ttlSeconds;
  // Key order is part of the contract: sub, jti, iat, exp, typ.
  const payload = JSON.stringify({ sub: String(userId), jti, iat: nowSeconds, exp, typ: 'access' });
  const body = `${HEADER}.${Buffer.from(payload).toString('base64url')}`;
  return { token: `${body}.${sign(body, secret)}`, jti, exp };
}

// fatal: invalid UTF-8 is a defect (as for the new service's orjson), not U+FFFD.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeJson(part) {
  try {
    const value = JSON.parse(UTF8.decode(Buffer.from(part, 'base64url')));
    // Strict JSON as the new service parses it: `"exp":1e400` (Infinity, which never expires), a lone
    // surrogate or a too-deep document makes the token invalid.
    if (!isStrictJson(value)) return null;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/**
 * Verify an access token; returns its payload, or null for any defect (alg, signature, expiry, typ,
 * shape). Revocation is checked by the caller, which owns the Redis client.
 */
function verifyAccessToken(token, secret, nowSeconds) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [headerPart, payloadPart, signature] = parts;
  const header = decodeJson(headerPart);
  if (header === null || header.alg !== 'HS256') return null;
  const expected = Buffer.from(sign(`${headerPart}.${payloadPart}`, secret));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  const payload = decodeJson(payloadPart);
  if (payload === null || payload.typ !== 'access') return null;
  if (typeof payload.exp !== 'number' || payload.exp <= nowSeconds) return null;
  if (typeof payload.sub !== 'string' || !ID.test(payload.sub)) return null;
  if (typeof payload.jti !== 'string' || !JTI.test(payload.jti)) return null;
  return payload;
}

/** A new opaque refresh token (32 random bytes, base64url without padding). */
function newRefreshToken() {
  return crypto.randomBytes(32).toString('base64url');
}

/** The only form in which a refresh token is stored: sha256 hex. */
function hashRefreshToken(token) {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

module.exports = { issueAccessToken, verifyAccessToken, newRefreshToken, hashRefreshToken };
