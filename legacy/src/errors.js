'use strict';
/**
 * The API's errors (docs/API.md "Errors: one shape everywhere").
 *
 * Route code throws (or passes to next) an HttpError; middleware/errorHandler.js is the only place
 * that turns errors into responses, so the shape and the messages live here and nowhere else.
 */

class HttpError extends Error {
  /**
   * @param {number} status HTTP status
   * @param {string} code machine-readable error code
   * @param {string} message human-readable message (fixed per code, see docs/API.md)
   * @param {{fields?: Array<{field: string, message: string}>, headers?: Record<string, string>}} [extra]
   */
  constructor(status, code, message, extra = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.fields = extra.fields;
    this.headers = extra.headers || {};
  }

  /** The JSON body, keys in contract order. */
  toJSON() {
    const error = { code: this.code, message: this.message };
    if (this.fields !== undefined) error.fields = this.fields;
    return { error };
  }
}

const errors = {
  badRequest: () => new HttpError(400, 'bad_request', 'malformed HTTP request'),
  invalidJson: () => new HttpError(400, 'invalid_json', 'request body is not valid JSON'),
  unauthorized: () => new HttpError(401, 'unauthorized', 'missing or invalid access token',
    { headers: { 'WWW-Authenticate': 'Bearer' } }),
  invalidCredentials: () => new HttpError(401, 'invalid_credentials', 'invalid email or password'),
  invalidToken: () => new HttpError(401, 'invalid_token', 'refresh token is invalid or expired'),
  forbidden: (what) => new HttpError(403, 'forbidden', `you may only change your own ${what}`),
  notFound: (what) => new HttpError(404, 'not_found', `${what} not found`),
  conflict: () => new HttpError(409, 'conflict', 'email already registered'),
  payloadTooLarge: (limit) => new HttpError(413, 'payload_too_large', `request body exceeds ${limit} bytes`),
  unsupportedMediaType: () => new HttpError(415, 'unsupported_media_type', 'Content-Type must be application/json'),
  contentEncoding: () => new HttpError(415, 'unsupported_media_type',
    'Content-Encoding is not supported; send the body uncompressed'),
  headersTooLarge: (limit) => new HttpError(431, 'header_too_large', `request headers exceed ${limit} bytes`),
  upgradeRequired: () => new HttpError(426, 'upgrade_required', 'this endpoint only speaks WebSocket',
    { headers: { Upgrade: 'websocket' } }),
  validation: (fields) => new HttpError(422, 'validation_failed', 'request validation failed', { fields }),
  rateLimited: (retryAfter) => new HttpError(429, 'rate_limited', 'too many login attempts, try again later',
    { headers: { 'Retry-After': String(retryAfter) } }),
  internal: () => new HttpError(500, 'internal', 'internal server error'),
};

module.exports = { HttpError, errors };
