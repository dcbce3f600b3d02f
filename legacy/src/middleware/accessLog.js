'use strict';
/** One JSON log line per finished (or aborted) request, carrying the request id. */

function accessLog(logger) {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    let logged = false;
    const done = () => {
      if (logged) return;
      logged = true;
      logger.info('request', {
        request_id: req.id,
        method: req.method,
        path: req.originalUrl.split('?')[0],
        status: res.writableFinished ? res.statusCode : 499,
        duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
        ip: req.ip,
      });
    };
    res.on('finish', done);
    res.on('close', done);
    next();
  };
}

module.exports = { accessLog };
