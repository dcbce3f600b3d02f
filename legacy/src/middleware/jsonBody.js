'use strict';
/**
 * JSON body parsing with the exact checks and order of docs/API.md: 415 -> 413 -> 400.
 *
 * express.json() answers a wrong Content-Type by skipping the body and a broken one with its own
 * error objects; mapping those back onto our contract was more code than reading the body here.
 */
const { errors } = require('../errors');

const LIMIT = 102400;

const owsTrim = (s) => s.replace(/^[ \t]+|[ \t]+$/g, '');

/** True unless the body declares a Content-Encoding other than identity (bodies are never decoded). */
function isIdentity(contentEncoding) {
  if (contentEncoding === undefined) return true;
  return ['', 'identity'].includes(owsTrim(contentEncoding).toLowerCase());
}

/** True when the media type (before any parameters) is application/json, case-insensitively. */
function isJson(contentType) {
  if (typeof contentType !== 'string') return false;
  // Spaces and tabs only (HTTP's OWS): String.prototype.trim would also drop Unicode spaces.
  return owsTrim(contentType.split(';')[0]).toLowerCase() === 'application/json';
}

// fatal: invalid UTF-8 is a parse error, not U+FFFD; ignoreBOM: keep a BOM so JSON.parse refuses it.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const MAX_DEPTH = 1024;

/**
 * True when a parsed value is also acceptable to a strict parser (the new service's orjson): no
 * container nested deeper than 1024, no lone surrogate in a string or key, no number that overflowed
 * to Infinity. JSON.parse accepts all three; refusing them here keeps the two services identical.
 */
function isStrictJson(root) {
  const stack = [[root, 0]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop();
    if (typeof value === 'string') {
      if (!value.isWellFormed()) return false;
    } else if (typeof value === 'number') {
      if (!Number.isFinite(value)) return false;
    } else if (value !== null && typeof value === 'object') {
      if (depth + 1 > MAX_DEPTH) return false;
      for (const [key, child] of Object.entries(value)) {
        if (!Array.isArray(value) && !key.isWellFormed()) return false;
        stack.push([child, depth + 1]);
      }
    }
  }
  return true;
}

/** Middleware: requires a JSON body and sets req.body to the parsed value (any JSON type). */
function jsonBody() {
  return (req, res, next) => {
    if (!isJson(req.headers['content-type'])) return next(errors.unsupportedMediaType());
    if (!isIdentity(req.headers['content-encoding'])) return next(errors.contentEncoding());
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > LIMIT) {
      req.resume(); // discard the body so the connection stays usable
      return next(errors.payloadTooLarge(LIMIT));
    }
    const chunks = [];
    let size = 0;
    let finished = false;
    const finish = (err) => {
      if (finished) return;
      finished = true;
      req.removeListener('data', onData);
      req.removeListener('end', onEnd);
      req.removeListener('error', onError);
      if (err) {
        req.resume();
        return next(err);
      }
      let text;
      try {
        text = decoder.decode(Buffer.concat(chunks, size));
        req.body = JSON.parse(text);
      } catch {
        return next(errors.invalidJson());
      }
      if (!isStrictJson(req.body)) return next(errors.invalidJson());
      return next();
    };
    const onData = (chunk) => {
      size += chunk.length;
      if (size > LIMIT) finish(errors.payloadTooLarge(LIMIT));
      else chunks.push(chunk);
    };
    const onEnd = () => finish(null);
    // A client that disconnects mid-body gets no answer; the error handler sees a closed socket.
    const onError = (err) => finish(err);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  };
}

module.exports = { jsonBody, isJson, isStrictJson, LIMIT };
