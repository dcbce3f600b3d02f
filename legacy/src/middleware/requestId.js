'use strict';
/**
 * X-Request-Id: echo the caller's id, or generate a UUID4 when the header is absent, empty or not
 * printable ASCII (Node would echo other bytes re-encoded as UTF-8, mangled; the new service does the same).
 */
const crypto = require('node:crypto');

const PRINTABLE = /^[\x20-\x7e]+$/;

function requestId() {
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    req.id = typeof given === 'string' && PRINTABLE.test(given) ? given : crypto.randomUUID();
    res.setHeader('X-Request-Id', req.id);
    next();
  };
}

module.exports = { requestId };
