'use strict';
/**
 * The PostgreSQL pool. The legacy app never migrates: `strangler migrate` owns the schema.
 */
const pg = require('pg');

// bigint (OID 20) comes back as a string by default; our ids are far below 2^53, so numbers are safe
// and render as JSON numbers like the new service's.
pg.types.setTypeParser(20, (value) => Number.parseInt(value, 10));

/** Create the pool; `onError` receives errors of idle clients (a server restart, say). */
function createPool(config, onError) {
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    min: config.dbPoolMin,
    max: config.dbPoolMax,
    idleTimeoutMillis: 30000,
    // Fail a request instead of queueing it forever when the database is unreachable.
    connectionTimeoutMillis: 5000,
    application_name: 'strangler-legacy',
  });
  pool.on('error', onError);
  return pool;
}

/** Run `work(client)` inside a transaction: COMMIT on success, ROLLBACK on any error. */
async function transaction(pool, work) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

/** PostgreSQL SQLSTATE for unique_violation: caught by code, never by message. */
const UNIQUE_VIOLATION = '23505';

module.exports = { createPool, transaction, UNIQUE_VIOLATION };
