'use strict';
/**
 * The HTTP edge, made to behave exactly like the new service's (docs/API.md, "The HTTP edge"):
 *
 * - request heads are limited to MAX_HEADER_BYTES (request target + header names and values, as
 *   Node's maxHeaderSize counts them) with no limit on the number of headers; over it: 431 JSON;
 * - a request Node's parser refuses: 400 JSON (Node's default answer has no body);
 * - a repeated header that the new service's parser (aiohttp) refuses as a singleton: the same 400,
 *   where Node would silently keep the first.
 * Both answers close the connection and carry no X-Request-Id (the request was never read).
 */
const { errors } = require('./errors');

const MAX_HEADER_BYTES = 65536;

/** Options for http.createServer. */
const serverOptions = { maxHeaderSize: MAX_HEADER_BYTES };

// aiohttp's SINGLETON_HEADERS: a second one of these is a malformed request.
const SINGLETONS = new Set(['content-length', 'content-location', 'content-range', 'content-type', 'etag',
  'host', 'max-forwards', 'server', 'transfer-encoding', 'user-agent']);

const REASONS = { 400: 'Bad Request', 431: 'Request Header Fields Too Large' };

/** The raw response for an error written straight to the socket (no request object to answer with). */
function rawResponse(error) {
  const body = JSON.stringify(error);
  return `HTTP/1.1 ${error.status} ${REASONS[error.status]}\r\n`
    + 'Content-Type: application/json; charset=utf-8\r\n'
    + `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** server.on('clientError'): the JSON answers above instead of Node's empty ones. */
function onClientError(err, socket) {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') { // Node's own answer, kept
    socket.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
    return;
  }
  const error = err.code === 'HPE_HEADER_OVERFLOW' ? errors.headersTooLarge(MAX_HEADER_BYTES - 1) : errors.badRequest();
  socket.end(rawResponse(error));
}

/** Middleware (first of all): 400 for a repeated singleton header. */
function refuseRepeatedSingletons() {
  return (req, res, next) => {
    const seen = new Set();
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      if (SINGLETONS.has(name)) {
        if (seen.has(name)) {
          const error = errors.badRequest();
          res.setHeader('Connection', 'close');
          res.status(error.status).json(error);
          return;
        }
        seen.add(name);
      }
    }
    next();
  };
}

module.exports = { MAX_HEADER_BYTES, serverOptions, onClientError, refuseRepeatedSingletons };
