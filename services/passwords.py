"""Password hashing: argon2id for new hashes; argon2id and bcrypt ($2a$/$2b$/$2y$) verified.

All hashing runs in a thread pool (argon2 and bcrypt release the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id baseline, as docs/API.md fixes it: m=19456 KiB, t=2, p=1.
_ARGON2 = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16)
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# Verified when the email is unknown, so that answer costs what a wrong password costs.
_DUMMY_HASH = _ARGON2.hash("strangler dummy password, never matches")


def is_bcrypt(stored: str) -> bool:
    """True for a bcrypt hash (the legacy app's format), which a login upgrades to argon2id."""
    return stored.startswith(_BCRYPT_PREFIXES)


def hash_sync(password: str) -> str:
    """An argon2id hash of `password` (blocking; use :func:`hash_password`)."""
    return _ARGON2.hash(password)


def verify_sync(stored: str, password: str) -> bool:
    """True when `password` matches `stored` (argon2id or bcrypt); False for any other hash."""
    if is_bcrypt(stored):
        # Node's bcrypt uses the first 72 bytes; python-bcrypt 5 refuses longer input instead.
        secret = password.encode("utf-8", "surrogatepass")[:72]
        try:
            return bcrypt.checkpw(secret, ("$2b$" + stored[4:]).encode())
        except ValueError:  # a malformed hash in the row
            return False
    try:
        return _ARGON2.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(pool: Executor, password: str) -> str:
    """Hash in the thread pool."""
    return await asyncio.get_running_loop().run_in_executor(pool, hash_sync, password)


async def verify_password(pool: Executor, stored: str | None, password: str) -> bool:
    """Verify in the thread pool; `stored` None (unknown email) checks a dummy hash and fails."""
    target = _DUMMY_HASH if stored is None else stored
    ok = await asyncio.get_running_loop().run_in_executor(pool, verify_sync, target, password)
    return ok and stored is not None
