"""eventually(): returns as soon as the condition holds, and fails loudly when it never does."""

from __future__ import annotations

import asyncio
import threading

import pytest

from .waiting import eventually, eventually_sync


async def test_returns_the_first_truthy_value_once_another_task_makes_it_so() -> None:
    """The check is polled while other tasks run; its first truthy value is returned."""
    box: list[str] = []

    async def later() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        box.append("ready")

    task = asyncio.create_task(later())
    assert await eventually(lambda: box[:1], what="the box to fill") == ["ready"]
    await task


async def test_an_awaitable_check_is_awaited() -> None:
    """A check returning a coroutine is awaited each round (e.g. an HTTP probe)."""
    calls = 0

    async def probe() -> int:
        nonlocal calls
        calls += 1
        return calls if calls >= 3 else 0

    assert await eventually(probe, what="the third probe") == 3


async def test_fails_when_the_condition_never_holds_naming_it_and_the_last_value() -> None:
    """At the deadline the failure says what was awaited and the last value the check returned."""
    with pytest.raises(AssertionError) as failed:
        await eventually(lambda: [], what="a log line 'reloaded'", within=0)
    message = str(failed.value)
    assert "waiting for a log line 'reloaded'" in message
    assert "last value seen: []" in message


async def test_last_gives_the_value_shown_on_failure() -> None:
    """`last` replaces the bare False of a comparison with the value that matters."""
    hits = 1
    with pytest.raises(AssertionError, match=r"the second hit; last value seen: 1$"):
        await eventually(lambda: hits >= 2, what="the second hit", within=0, last=lambda: hits)
    with pytest.raises(AssertionError, match=r"last value seen: line 1\nline 2$"):
        await eventually(lambda: False, what="a log line", within=0, last=lambda: "line 1\nline 2")


async def test_ignored_exceptions_mean_not_yet_and_show_on_failure() -> None:
    """An exception listed in `ignore` is retried, and reported if the deadline passes."""
    attempts = 0

    def connect() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionRefusedError("not listening yet")
        return "connected"

    assert await eventually(connect, what="a connection", ignore=(ConnectionRefusedError,)) == "connected"

    def refuse() -> str:
        raise ConnectionRefusedError("still not listening")

    with pytest.raises(AssertionError, match="last check raised ConnectionRefusedError"):
        await eventually(refuse, what="a connection", within=0, ignore=(ConnectionRefusedError,))


async def test_other_exceptions_fail_at_once() -> None:
    """An exception not in `ignore` is a bug in the test or the code: it propagates on the first check."""
    calls = 0

    def broken() -> bool:
        nonlocal calls
        calls += 1
        raise KeyError("missing")

    with pytest.raises(KeyError):
        await eventually(broken, what="anything")
    assert calls == 1


def test_sync_variant_waits_for_another_thread() -> None:
    """eventually_sync() polls without an event loop until another thread sets the condition."""
    done = threading.Event()
    threading.Thread(target=done.set).start()
    assert eventually_sync(done.is_set, what="the thread to run") is True


def test_sync_variant_fails_when_the_condition_never_holds() -> None:
    """eventually_sync() fails like eventually(), with what and the last value."""
    with pytest.raises(AssertionError, match=r"waiting for the process to exit; last value seen: None"):
        eventually_sync(lambda: None, what="the process to exit", within=0)
