"""The FIFO gate in front of the database pool: order, cancellation safety, and the service under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.waiting import eventually
from svc_kit import bearer, register
from test_svc_dry_run import sign

from services.context import POOL
from services.db import close_pool, create_pool
from services.fairpool import FairGate, FairPool


async def _settle() -> None:
    """Let every ready task run until it blocks (a few loop iterations, no wall-clock sleeps)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _queue(gate: FairGate, name: str, order: list[str], hold: asyncio.Event | None = None) -> None:
    await gate.acquire()
    order.append(name)
    try:
        if hold is not None:
            await hold.wait()
        await asyncio.sleep(0)
    finally:
        gate.release()


async def test_waiters_are_admitted_in_arrival_order_and_a_newcomer_cannot_overtake() -> None:
    """A released slot goes to the longest waiter; a caller arriving right after a release queues last."""
    gate = FairGate(1)
    await gate.acquire()
    order: list[str] = []
    waiters = [asyncio.create_task(_queue(gate, f"w{i}", order)) for i in range(5)]
    await _settle()
    assert gate.waiting == 5 and gate.free == 0
    gate.release()
    # Arrives after the release but before the woken waiter has run: asyncio.Queue would let it barge.
    newcomer = asyncio.create_task(_queue(gate, "new", order))
    await asyncio.gather(*waiters, newcomer)
    assert order == ["w0", "w1", "w2", "w3", "w4", "new"]
    assert gate.free == 1 and gate.waiting == 0


async def test_slots_bound_concurrency() -> None:
    """No more than `slots` callers hold the gate at once, and all of them get through."""
    gate = FairGate(3)
    holding = peak = 0

    async def worker() -> None:
        nonlocal holding, peak
        await gate.acquire()
        holding += 1
        peak = max(peak, holding)
        await asyncio.sleep(0.001)  # hold the slot for a moment, so that holders overlap
        holding -= 1
        gate.release()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(50))), 10)
    assert peak == 3 and gate.free == 3


async def test_a_waiter_cancelled_while_waiting_takes_no_slot() -> None:
    """Cancelling a queued waiter removes it; the slot later goes to the next waiter, then back to free."""
    gate = FairGate(1)
    await gate.acquire()
    order: list[str] = []
    doomed = asyncio.create_task(_queue(gate, "doomed", order))
    survivor = asyncio.create_task(_queue(gate, "survivor", order))
    await _settle()
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert gate.waiting == 1
    gate.release()
    await asyncio.wait_for(survivor, 5)
    assert order == ["survivor"] and gate.free == 1 and gate.waiting == 0


async def test_a_waiter_cancelled_just_after_the_hand_off_passes_the_slot_on() -> None:
    """A waiter cancelled after release() resolved its future (before it ran) hands the slot to the next."""
    gate = FairGate(1)
    await gate.acquire()
    order: list[str] = []
    first = asyncio.create_task(_queue(gate, "first", order))
    second = asyncio.create_task(_queue(gate, "second", order))
    await _settle()
    gate.release()  # resolves first's future; first has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert order == ["second"] and gate.free == 1 and gate.waiting == 0


async def test_a_release_racing_a_cancellation_leaves_the_count_whole() -> None:
    """A release that skips a just-cancelled waiter (before its task ran) frees the slot exactly once."""
    gate = FairGate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await _settle()
    waiter.cancel()
    gate.release()  # the cancelled future is still queued: skipped, the slot becomes free
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.free == 1 and gate.waiting == 0
    await asyncio.wait_for(gate.acquire(), 1)
    assert gate.free == 0


def test_more_releases_than_acquires_is_an_error() -> None:
    """Releasing an unheld gate raises instead of silently growing the slot count."""
    gate = FairGate(2)
    with pytest.raises(RuntimeError, match="more often than acquired"):
        gate.release()
    with pytest.raises(ValueError, match="at least one slot"):
        FairGate(0)


@pytest.fixture
async def fair_pool(database_url: str) -> AsyncIterator[FairPool]:
    """A real one-connection pool behind the gate."""
    pool = await create_pool(database_url, 1, 1)
    yield FairPool(pool)
    await close_pool(pool)


async def test_a_stream_of_arrivals_is_served_in_order_on_real_postgresql(fair_pool: FairPool) -> None:
    """Requests arriving one per loop iteration get the connection in arrival order.

    This is the load pattern of asyncpg#1247: a raw asyncpg pool lets newcomers take a just-released
    connection ahead of the woken waiter (measured here: one request overtaken by ~250 of 300).
    """
    requested: list[int] = []
    granted: list[int] = []

    async def use(i: int) -> None:
        requested.append(i)
        async with fair_pool.acquire() as conn:
            granted.append(i)
            assert await conn.fetchval("SELECT $1::int", i) == i

    tasks = []
    for i in range(300):
        tasks.append(asyncio.create_task(use(i)))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 20)
    overtaken = max(granted.index(i) - requested.index(i) for i in requested)
    assert overtaken == 0, f"a request was overtaken by {overtaken} later ones"
    assert await fair_pool.fetchval("SELECT $1::int + 1", 1) == 2
    assert fair_pool.gate.free == 1


async def test_a_cancelled_query_returns_its_connection(fair_pool: FairPool) -> None:
    """A request cancelled mid-query (client gone) frees its slot and its connection for the next one."""
    slow = asyncio.create_task(fair_pool.execute("SELECT pg_sleep(5)"))
    queued = asyncio.create_task(fair_pool.fetchval("SELECT 2"))
    gate, pool = fair_pool.gate, fair_pool.pool
    # The slow query holds the one connection; the other request waits at the gate.
    await eventually(lambda: gate.waiting == 1 and pool.get_idle_size() == 0, what="slow running, one queued")
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await asyncio.wait_for(queued, 10) == 2
    assert fair_pool.gate.free == 1 and fair_pool.pool.get_idle_size() == 1


async def test_service_answers_200_concurrent_reads_over_a_small_pool(client: TestClient[Any, Any]) -> None:
    """200 concurrent GETs (a user, a post page) over a 4-connection pool all answer 200, none stuck.

    A request stuck at the gate would hang the gather: the per-test timeout is the hang guard.
    """
    author = await register(client)
    created = await client.post(
        "/api/v1/posts", json={"title": "t", "body": "b"}, headers=bearer(author["tokens"])
    )
    assert created.status == 201
    user_id = author["user"]["id"]

    async def get(path: str) -> int:
        async with client.get(path) as response:
            await response.read()
            return response.status

    paths = [f"/api/v1/users/{user_id}" if i % 2 else "/api/v1/posts?limit=20" for i in range(200)]
    statuses = await asyncio.gather(*(get(p) for p in paths))
    assert statuses == [200] * 200
    gate = client.app[POOL].gate
    assert gate.free == 4 and gate.waiting == 0


async def test_plain_and_dry_run_requests_both_wait_for_the_gate(
    client: TestClient[Any, Any], db: Any
) -> None:
    """With every slot taken, neither a plain nor a dry-run request touches the pool until one is freed."""
    user_id = await db.fetchval(
        "INSERT INTO users (email, name, password_hash) VALUES ($1, 'G', 'x') RETURNING id",
        f"gate-{time.monotonic_ns()}@example.com",
    )
    fair: FairPool = client.app[POOL]
    for _ in range(4):
        await fair.gate.acquire()
    path = f"/api/v1/users/{user_id}"
    plain = asyncio.create_task(client.get(path))
    dry = asyncio.create_task(client.get(path, headers={"X-Strangler-Dry-Run": sign("GET", path)}))
    await eventually(lambda: fair.gate.waiting == 2, what="both at the gate", last=lambda: fair.gate.waiting)
    assert not plain.done() and not dry.done()
    for _ in range(4):
        fair.gate.release()
    responses = await asyncio.wait_for(asyncio.gather(plain, dry), 10)
    assert [r.status for r in responses] == [200, 200]
    assert responses[1].headers["X-Strangler-Dry-Run"] == "applied"
    for response in responses:
        response.release()
    assert fair.gate.free == 4
