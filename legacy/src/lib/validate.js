'use strict';
/**
 * Request validation with the exact field order and messages of docs/API.md "Validation (422)".
 *
 * A schema is an ordered list of [field, rules]; each field reports the first rule it fails, then
 * unknown fields follow, sorted by code point, with "unknown field".
 */
const { errors } = require('../errors');

const EMAIL = /^[!-?A-~]+@[!-?A-~]+\.[!-?A-~]+$/;
const ID = /^[1-9][0-9]{0,17}$/;
const UINT = /^[0-9]{1,9}$/;

/** Length in Unicode code points, as the contract counts it. */
const length = (s) => [...s].length;

const between = (min, max) => (s) =>
  length(s) >= min && length(s) <= max ? null : `must be between ${min} and ${max} characters`;
const email = (s) => (length(s) <= 254 && EMAIL.test(s) ? null : 'must be a valid email address');
const anyString = () => null;

/** The body schemas, in the contract's field order. */
const schemas = {
  register: [['email', email], ['password', between(8, 128)], ['name', between(1, 100)]],
  login: [['email', anyString], ['password', anyString]],
  refresh: [['refresh_token', anyString]],
  userPatch: [['name', between(1, 100)], ['email', email], ['password', between(8, 128)]],
  post: [['title', between(1, 200)], ['body', between(1, 10000)]],
};

// Compare by code point (not UTF-16 unit) so the order matches the new service's sorted().
function byCodePoint(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/**
 * Validate a parsed JSON body against `schema`; returns the body's known fields or throws 422.
 * `partial`: every field optional but at least one required (PATCH).
 */
function validateBody(body, schema, { partial = false } = {}) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw errors.validation([{ field: 'body', message: 'must be a JSON object' }]);
  }
  const fields = [];
  const values = {};
  const known = new Set(schema.map(([name]) => name));
  for (const [name, rule] of schema) {
    // Own properties only: {"constructor": ...} is data, and a missing "constructor" is not inherited.
    if (!Object.hasOwn(body, name)) {
      if (!partial) fields.push({ field: name, message: 'is required' });
      continue;
    }
    const value = body[name];
    // PostgreSQL text cannot hold U+0000: refuse it here rather than fail in the database.
    let problem = 'must be a string';
    if (typeof value === 'string') problem = value.includes('\u0000') ? 'must not contain the NUL character' : rule(value);
    if (problem !== null) fields.push({ field: name, message: problem });
    else values[name] = value;
  }
  const unknown = Object.keys(body).filter((name) => !known.has(name)).sort(byCodePoint);
  for (const name of unknown) fields.push({ field: name, message: 'unknown field' });
  if (fields.length === 0 && partial && Object.keys(values).length === 0) {
    fields.push({ field: 'body', message: 'must contain at least one field' });
  }
  if (fields.length > 0) throw errors.validation(fields);
  return values;
}

/**
 * Validate list query parameters (limit, offset and, when `withAuthor`, author_id); returns
 * {limit, offset, authorId}. A parameter given twice arrives as an array and is invalid.
 */
function validatePage(query, { withAuthor = false } = {}) {
  const fields = [];
  const page = { limit: 20, offset: 0, authorId: null };
  if (query.limit !== undefined) {
    const ok = typeof query.limit === 'string' && UINT.test(query.limit)
      && Number(query.limit) >= 1 && Number(query.limit) <= 100;
    if (ok) page.limit = Number(query.limit);
    else fields.push({ field: 'limit', message: 'must be an integer between 1 and 100' });
  }
  if (query.offset !== undefined) {
    if (typeof query.offset === 'string' && UINT.test(query.offset)) page.offset = Number(query.offset);
    else fields.push({ field: 'offset', message: 'must be a non-negative integer' });
  }
  if (withAuthor && query.author_id !== undefined) {
    if (typeof query.author_id === 'string' && ID.test(query.author_id)) page.authorId = query.author_id;
    else fields.push({ field: 'author_id', message: 'must be a positive integer' });
  }
  if (fields.length > 0) throw errors.validation(fields);
  return page;
}

/** True when a path id is well-formed; anything else is treated as an unknown id. */
const isId = (value) => typeof value === 'string' && ID.test(value);

module.exports = { schemas, validateBody, validatePage, isId, length };
