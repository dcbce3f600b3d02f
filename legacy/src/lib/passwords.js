'use strict';
/**
 * Password hashing: bcrypt cost 12 for new hashes (BCRYPT_COST); verification of bcrypt and argon2id, because the
 * new service rehashes to argon2id and those users must still log in here. Native code on the libuv
 * pool via napi-rs, so hashing never blocks the event loop.
 */
const bcrypt = require('@node-rs/bcrypt');
const argon2 = require('@node-rs/argon2');

const COST = 12;

// Verified when the email is unknown, so that path costs one bcrypt verification like a wrong password.
const DUMMY_HASH = '$2b$12$C6UzMDM.H6dfI/f/IKxGhuKrJ5Z7c9P9nmuQ8bR9Uoz6X9J1vYWBe';
const dummies = new Map([[COST, DUMMY_HASH]]); // cost -> a hash of that cost, made once

/**
 * Hash a new password (bcrypt, `cost` 12 unless BCRYPT_COST says otherwise, $2b$). The Rust bcrypt core
 * labels its output $2y$; $2y$ and $2b$ are the same algorithm (both fixed variants), and the contract
 * stores $2b$.
 */
async function hashPassword(password, cost = COST) {
  const hash = await bcrypt.hash(password, cost);
  return hash.replace(/^\$2y\$/, '$2b$');
}

/** True when `password` matches `hash` (bcrypt or argon2id); false for any other or broken hash. */
async function verifyPassword(password, hash) {
  try {
    if (hash.startsWith('$argon2id$')) return await argon2.verify(hash, password);
    if (/^\$2[aby]\$/.test(hash)) return await bcrypt.verify(password, hash);
  } catch {
    return false; // a malformed stored hash is a failed login, not a 500
  }
  return false;
}

/** Spend the same time as a real verification of a hash of `cost`, then fail (unknown email). */
async function verifyDummy(password, cost = COST) {
  let dummy = dummies.get(cost);
  if (dummy === undefined) {
    dummy = await hashPassword('strangler dummy password, never matches', cost);
    dummies.set(cost, dummy);
  }
  await bcrypt.verify(password, dummy);
  return false;
}

module.exports = { hashPassword, verifyPassword, verifyDummy, DUMMY_HASH };
