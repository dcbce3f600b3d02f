'use strict';
/** The catch-all 404 and the one error handler that renders every error as the contract's JSON. */
const { HttpError, errors } = require('../errors');
const { errorFields } = require('../logger');

/** Unknown path or method: 404 route not found (never 405). */
function notFound() {
  return (req, res, next) => next(errors.notFound('route'));
}

/** Map any error to the one JSON shape; unknown errors are logged and become 500 internal. */
function errorHandler(logger) {
  // Express recognises error handlers by their four parameters, so `next` must stay.
  // eslint-disable-next-line no-unused-vars
  return (err, req, res, next) => {
    if (req.socket.destroyed) return; // the client went away (mid-body, say): nobody to answer
    let error = err;
    if (!(err instanceof HttpError)) {
      if (err instanceof URIError || (err && err.status === 400 && /decode param/.test(err.message))) {
        // A path parameter with a malformed %-escape: no route can serve that path.
        error = errors.notFound('route');
      } else {
        logger.error('unhandled error', { request_id: req.id, ...errorFields(err) });
        error = errors.internal();
      }
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    for (const [name, value] of Object.entries(error.headers)) res.setHeader(name, value);
    res.status(error.status).json(error);
  };
}

module.exports = { notFound, errorHandler };
