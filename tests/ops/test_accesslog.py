"""The buffered access log: line shape, timed/size/shutdown flushes, full or closed outputs (pipe, socket,
file), its cost, and a real gateway's shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from prometheus_client.registry import REGISTRY
from support.opshelp import routes_text, start_gateway, upstream
from support.waiting import eventually

from proxy.ops.accesslog import AccessLog
from proxy.ops.logs import access, setup_logging
from proxy.server.gateway import AccessRecord

PATH = '/a"b\\c/\u00e9\t'  # quotes, a backslash, non-ASCII and a control character: all escaped
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
# Production runs uvloop; add_writer on a pipe must work on both loops.
LOOPS = pytest.mark.parametrize(
    "loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"]
)


@contextlib.contextmanager
def pipe(size: int = 0) -> Iterator[tuple[int, int]]:
    """A real pipe (read end non-blocking); ``size`` shrinks its capacity (F_SETPIPE_SZ)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    if size:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def read_all(fd: int) -> bytes:
    """Everything readable on a non-blocking read end right now."""
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def parse(data: bytes) -> list[dict[str, Any]]:
    """Whole JSON lines (fails on a torn or interleaved line)."""
    assert data.endswith(b"\n") or not data, data[-200:]
    return [json.loads(line) for line in data.splitlines()]


def record(i: int, path: str = "/items/9") -> AccessRecord:
    return AccessRecord(f"rid-{i}", "GET", path, "items", "new", 200, 0.00123, 5, 321, "127.0.0.1")


def dropped_metric() -> float:
    return REGISTRY.get_sample_value("strangler_access_log_dropped_total") or 0.0


def test_line_has_the_logging_access_shape() -> None:
    """A buffered line has the same keys, in the same order, and values as proxy.logs.access() writes."""
    stream = io.StringIO()
    saved = [(lg, list(lg.handlers), lg.propagate, lg.level, lg.disabled)
             for lg in map(logging.getLogger, ("strangler", "strangler.access", "aiohttp"))]  # fmt: skip
    try:
        setup_logging("info", access=True, stream=stream)
        access("rid-1", "POST", PATH, 502, "items", "new", 0.0123456, bytes_in=7, bytes_out=9, peer="::1")
    finally:
        for lg, handlers, propagate, level, disabled in saved:
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
            lg.setLevel(level)
    want = json.loads(stream.getvalue())

    async def main() -> bytes:
        with pipe() as (r, w):
            log = AccessLog(w)
            log(AccessRecord("rid-1", "POST", PATH, "items", "new", 502, 0.0123456, 7, 9, "::1"))
            assert log.drain()
            log.close()
            return read_all(r)

    [got] = parse(asyncio.run(main()))
    assert list(got) == list(want)
    assert abs(got.pop("ts") - want.pop("ts")) < 60
    assert got == want


@LOOPS
def test_lines_are_buffered_then_flushed_in_order_by_the_timer(loop_factory: LoopFactory) -> None:
    """Lines are not written one by one: nothing until the interval passes, then all, in order."""

    async def main() -> None:
        with pipe() as (r, w):
            log = AccessLog(w, interval=0.05)
            for i in range(200):
                log(record(i))
            assert read_all(r) == b""
            await eventually(lambda: log.written == 200, what="the timer's flush", last=lambda: log.written)
            lines = parse(read_all(r))
            assert [line["request_id"] for line in lines] == [f"rid-{i}" for i in range(200)]
            assert (log.written, log.dropped) == (200, 0)
            log.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def test_a_full_buffer_is_written_without_waiting_for_the_timer() -> None:
    """Once flush_bytes are buffered they are written at once, even with a long interval."""

    async def main() -> None:
        with pipe() as (r, w):
            log = AccessLog(w, interval=60, flush_bytes=2000)
            for i in range(20):  # about 300 bytes a line
                log(record(i))
            lines = parse(read_all(r))
            assert 6 <= len(lines) < 20
            assert [line["request_id"] for line in lines] == [f"rid-{i}" for i in range(len(lines))]
            log.close()

    asyncio.run(main())


def test_drain_writes_every_buffered_line() -> None:
    """drain() writes what the timer has not yet, and later lines at once; after close() lines are dropped."""

    async def main() -> None:
        with pipe() as (r, w):
            log = AccessLog(w, interval=60)
            for i in range(50):
                log(record(i))
            assert read_all(r) == b""
            assert log.drain() is True
            assert [line["request_id"] for line in parse(read_all(r))] == [f"rid-{i}" for i in range(50)]
            log(record(50))  # a request cut off by the drain timeout: no timer would ever flush it
            assert [line["request_id"] for line in parse(read_all(r))] == ["rid-50"]
            log.close()
            log(record(51))
            assert read_all(r) == b"" and log.dropped == 1

    asyncio.run(main())


@LOOPS
def test_full_pipe_never_blocks_drops_are_counted_and_writing_resumes(loop_factory: LoopFactory) -> None:
    """A reader that stops: write() stays fast, lines past the backlog are dropped and counted; resumes."""

    async def main() -> None:
        with pipe(size=4096) as (r, w):
            log = AccessLog(w, interval=0.02, flush_bytes=1024, max_backlog=16 * 1024)
            before = dropped_metric()
            for i in range(3000):  # a blocking write would hang here (the per-test timeout fails it)
                log(record(i))
            assert log.dropped > 0
            assert dropped_metric() - before == log.dropped
            data = bytearray()

            def read_back() -> bool:  # the reader comes back: the writability callback empties the backlog
                data.extend(read_all(r))
                return log.written + log.dropped == 3000

            await eventually(read_back, what="every line written or dropped", last=lambda: log.written)
            data += read_all(r)
            ids = [int(line["request_id"][4:]) for line in parse(data)]
            assert len(ids) == log.written and log.written + log.dropped == 3000
            assert ids == sorted(ids) and ids[0] == 0  # the oldest lines kept, newer ones dropped
            log(record(3000))  # and new lines flow again
            assert log.drain() is True
            assert parse(read_all(r))[-1]["request_id"] == "rid-3000"
            log.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def test_two_writers_on_one_pipe_never_tear_lines() -> None:
    """Two logs on one small pipe (workers sharing stderr) write whole lines only, never interleaved."""

    async def main() -> None:
        with pipe(size=4096) as (r, w):
            logs = [AccessLog(w, interval=0.01, flush_bytes=3000, max_backlog=1 << 20) for _ in range(2)]
            data = b""
            for i in range(600):
                logs[i % 2](record(i, "/x" * (i % 97)))  # varied lengths: cuts fall mid-line
                if i % 50 == 0:
                    await asyncio.sleep(0)  # one loop iteration: the logs' timers and writers run mid-stream
                    data += read_all(r)

            def read_back() -> bool:
                nonlocal data
                data += read_all(r)
                return all(log.written == 300 for log in logs)

            await eventually(read_back, what="300 lines per log", last=lambda: [g.written for g in logs])
            data += read_all(r)
            lines = parse(data)
            assert len(lines) == 600
            for parity in (0, 1):
                ids = [int(line["request_id"][4:]) for line in lines]
                assert [i for i in ids if i % 2 == parity] == list(range(parity, 600, 2))
            for log in logs:
                log.close()

    asyncio.run(main())


def test_socket_output_never_blocks_and_keeps_the_socket_blocking() -> None:
    """On a socket (systemd's journal): sends never block, drops are counted, the shared fd stays blocking."""

    async def main() -> None:
        ours, reader = socket.socketpair()
        with ours, reader:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            reader.setblocking(False)
            log = AccessLog(ours.fileno(), interval=0.01, flush_bytes=1024, max_backlog=16 * 1024)
            for i in range(3000):  # a blocking send would hang here (the per-test timeout fails it)
                log(record(i))
            assert log.dropped > 0
            assert ours.getblocking()
            data = bytearray()

            def read_back() -> bool:
                with contextlib.suppress(BlockingIOError):
                    while chunk := reader.recv(65536):
                        data.extend(chunk)
                return log.written + log.dropped == 3000

            await eventually(read_back, what="every line written or dropped", last=lambda: log.written)
            with contextlib.suppress(BlockingIOError):
                data.extend(reader.recv(65536))
            ids = [int(line["request_id"][4:]) for line in parse(data)]
            assert len(ids) == log.written and ids == sorted(ids)
            log.close()

    asyncio.run(main())


def test_regular_file_output_gets_every_line(tmp_path: Path) -> None:
    """On a regular file (not pollable, never full) every line is appended, in order."""

    async def main() -> None:
        fd = os.open(tmp_path / "access.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            log = AccessLog(fd, interval=0.01, flush_bytes=4096)
            for i in range(500):
                log(record(i))
            await eventually(lambda: log.written == 500, what="500 lines flushed", last=lambda: log.written)
            log.close()
        finally:
            os.close(fd)

    asyncio.run(main())
    lines = parse((tmp_path / "access.log").read_bytes())
    assert [line["request_id"] for line in lines] == [f"rid-{i}" for i in range(500)]


def test_closed_output_drops_without_raising() -> None:
    """A reader that went away (EPIPE): no exception, every line counted as dropped, nothing retried."""

    async def main() -> None:
        r, w = os.pipe()
        os.close(r)
        try:
            log = AccessLog(w, interval=60, flush_bytes=1000)
            before = dropped_metric()
            for i in range(20):
                log(record(i))
            log.drain()
            assert (log.written, log.dropped) == (0, 20)
            assert dropped_metric() - before == 20
            log.close()
        finally:
            os.close(w)

    asyncio.run(main())


def test_many_lines_to_dev_null_are_all_written() -> None:
    """The hot path's batch (100000 lines, as bench/micro.py times it) is written whole: none dropped."""

    async def main() -> tuple[int, int, bool]:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            log = AccessLog(fd)
            for _ in range(100000):
                log(AccessRecord("0123456789abcdef0123456789abcdef", "GET", "/items/9", "items", "new",
                                 200, 0.00123, 0, 321, "127.0.0.1"))  # fmt: skip
            clean = log.close()
            return log.written, log.dropped, clean
        finally:
            os.close(fd)

    assert asyncio.run(main()) == (100000, 0, True)


async def test_gateway_flushes_access_lines_before_it_exits(tmp_path: Path) -> None:
    """A real gateway stopped right after its requests writes every access line, before 'draining'."""
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "new"))
        gw = await start_gateway(path)
        try:
            async with aiohttp.ClientSession() as session:
                metrics = await (await session.get(gw.admin_url + "/metrics")).text()
                ids = []
                for i in range(30):
                    async with session.get(f"{gw.url}/items/{i}") as resp:
                        assert resp.status == 200
                        ids.append(resp.headers["X-Request-Id"])
                # SIGTERM at once: the 100 ms flush timer has not fired for the last lines.
                gw.signal(signal.SIGTERM)
        finally:
            assert await gw.stop() == 0
        msgs = [line.get("msg") for line in gw.lines]
        draining = msgs.index("draining")
        lines = [line for line in gw.lines if line.get("msg") == "request"]
        assert [line["request_id"] for line in lines] == ids
        assert all(gw.lines.index(line) < draining for line in lines)
        assert [line["path"] for line in lines] == [f"/items/{i}" for i in range(30)]
        assert "strangler_access_log_dropped_total 0.0" in metrics


async def test_no_access_log_writes_no_access_line(tmp_path: Path) -> None:
    """--no-access-log: requests and a shutdown leave no access line at all in the output."""
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "new"))
        gw = await start_gateway(path, "--no-access-log")
        try:
            async with aiohttp.ClientSession() as session:
                for i in range(5):
                    async with session.get(f"{gw.url}/items/{i}") as resp:
                        assert resp.status == 200
        finally:  # stopping flushes any buffered line (test_gateway_flushes_access_lines_before_it_exits)
            assert await gw.stop() == 0
        assert new.hits == 5
        assert "drained" in [line.get("msg") for line in gw.lines]
        assert not [raw for raw in gw.raw if "items/" in raw or '"request"' in raw]
