'use strict';
/** X-Request-Id: echo the caller's id, or generate a UUID4 when the header is absent or empty. */
const crypto = require('node:crypto');

function requestId() {
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    req.id = typeof given === 'string' && given !== '' ? given : crypto.randomUUID();
    res.setHeader('X-Request-Id', req.id);
    next();
  };
}

module.exports = { requestId };
