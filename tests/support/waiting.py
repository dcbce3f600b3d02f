"""Tests wait for events, not time: `eventually()` polls a condition until it holds, within a deadline.

A fixed sleep either wastes time (the event came sooner) or fails on a loaded machine (it came later).
Poll instead: the check runs at once, then every `interval` until it returns a truthy value, which
`eventually()` returns. When the deadline passes the test fails with what was awaited and the last
value (or exception) the check gave, so a failure says how far things got.

    line = await eventually(lambda: gw.line("reloaded"), what="a 'reloaded' log line")
    await eventually(lambda: up.hits >= 2, what="the second upstream hit", last=lambda: up.hits)

`eventually_sync()` is the same for tests that run without an event loop (subprocess launchers).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

WITHIN = 10.0  # seconds; generous, because a loaded machine is slow, and a passing test never waits it out
INTERVAL = 0.01


class _Never:
    """The last value before the check has returned anything."""

    def __repr__(self) -> str:
        return "nothing (the check never returned)"


_NEVER: Any = _Never()


def _failure(
    what: str,
    within: float,
    tries: int,
    seen: object,
    error: BaseException | None,
    last: Callable[[], object] | None,
) -> AssertionError:
    shown = repr(seen)
    if last is not None:
        try:
            given = last()
        except Exception as exc:  # the failure message must not hide the timeout
            given = f"<last() raised {exc!r}>"
        shown = given if isinstance(given, str) else repr(given)  # a str from last() is text to show as is
    text = f"timed out after {within:g} s ({tries} checks) waiting for {what}; last value seen: {shown}"
    if error is not None:
        text += f"; last check raised {error!r}"
    return AssertionError(text)


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    what: str,
    within: float = ...,
    interval: float = ...,
    ignore: tuple[type[Exception], ...] = ...,
    last: Callable[[], object] | None = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    what: str,
    within: float = ...,
    interval: float = ...,
    ignore: tuple[type[Exception], ...] = ...,
    last: Callable[[], object] | None = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    what: str,
    within: float = WITHIN,
    interval: float = INTERVAL,
    ignore: tuple[type[Exception], ...] = (),
    last: Callable[[], object] | None = None,
) -> Any:
    """Return the first truthy value of ``check()`` (awaited if it returns an awaitable).

    ``what`` names the awaited event for the failure message; ``last`` (optional) gives the value to
    show there instead of the check's own last result (e.g. a counter when the check is a comparison,
    or a process's last output lines: a str is shown as is, anything else by its repr).
    Exceptions of the classes in ``ignore`` count as "not yet" (e.g. ConnectionRefusedError while a
    server starts); any other exception fails the test at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen: Any = _NEVER
    error: BaseException | None = None
    tries = 0
    while True:
        tries += 1
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignore as exc:
            error = exc
        else:
            error = None
            if value:
                return value
            seen = value
        if loop.time() >= deadline:
            raise _failure(what, within, tries, seen, error, last)
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T],
    *,
    what: str,
    within: float = WITHIN,
    interval: float = INTERVAL,
    ignore: tuple[type[Exception], ...] = (),
    last: Callable[[], object] | None = None,
) -> T:
    """`eventually()` for code without an event loop: blocks the calling thread between checks."""
    deadline = time.monotonic() + within
    seen: Any = _NEVER
    error: BaseException | None = None
    tries = 0
    while True:
        tries += 1
        try:
            value = check()
        except ignore as exc:
            error = exc
        else:
            error = None
            if value:
                return value
            seen = value
        if time.monotonic() >= deadline:
            raise _failure(what, within, tries, seen, error, last)
        time.sleep(interval)
