'use strict';
/**
 * A tiny JSON-lines logger: one object per line on stdout, `time`, `level`, `msg` first.
 *
 * We do not need pino's features, and a dependency less is one less thing to audit.
 */

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 };

/** Create a logger that drops records below `level`. */
function createLogger(level = 'info', stream = process.stdout) {
  const threshold = LEVELS[level] ?? LEVELS.info;
  const write = (name) => (msg, fields = {}) => {
    if (LEVELS[name] < threshold) return;
    const record = { time: new Date().toISOString(), level: name, msg, ...fields };
    stream.write(`${JSON.stringify(record)}\n`);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

/** The fields worth logging from an Error (message and stack, plus pg/redis codes when present). */
function errorFields(err) {
  if (!(err instanceof Error)) return { error: String(err) };
  const fields = { error: err.message, stack: err.stack };
  if (err.code !== undefined) fields.error_code = err.code;
  return fields;
}

module.exports = { createLogger, errorFields };
