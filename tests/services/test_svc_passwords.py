"""Password hashing: formats, and it never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from services import passwords


def test_new_hashes_are_argon2id_and_verify() -> None:
    """hash_sync makes argon2id (m=19456, t=2, p=1) that verify_sync accepts, and rejects a wrong password."""
    stored = passwords.hash_sync("s3cret password")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_sync(stored, "s3cret password")
    assert not passwords.verify_sync(stored, "s3cret passwore")
    assert not passwords.verify_sync("not a hash", "x")
    assert not passwords.verify_sync("$2b$12$broken", "x")


async def test_hashing_runs_off_the_event_loop() -> None:
    """While a slow bcrypt (cost 12) verification runs, the event loop keeps running other tasks."""
    stored = bcrypt.hashpw(b"password123", bcrypt.gensalt(12)).decode()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)  # one tick per loop iteration
            ticks += 1

    with ThreadPoolExecutor(max_workers=1) as pool:
        task = asyncio.create_task(ticker())
        assert await passwords.verify_password(pool, stored, "password123")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # A verification run on the loop would block it: the ticker could not run until it returned
    # (at most one tick). Loop iterations counted instead of time: a busy machine cannot make it flaky.
    assert ticks >= 3


async def test_unknown_user_costs_a_real_verification() -> None:
    """verify_password with no stored hash still runs an argon2id verification, and fails."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.process_time()
        assert not await passwords.verify_password(pool, None, "whatever password")
        dummy_cpu = time.process_time() - started
    # argon2id with m=19456 KiB, t=2 cannot finish in under a millisecond of CPU; a skipped check would.
    assert dummy_cpu > 0.001
