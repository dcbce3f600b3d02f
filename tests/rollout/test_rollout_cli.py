"""`strangler rollout status | pause | resume | promote | rollback` against the real Redis: each writes
one audit event as ``cli:<user>``, a promotion by hand refuses with the blocking reasons unless --force
(then warns), and status shows the stage, what blocks it and the last event."""

from __future__ import annotations

import asyncio
import io

import orjson
import pytest
import redis.asyncio as aioredis
from rollout_rig import compare, route, table

from proxy.autopilot.cli import main
from proxy.cli import main as strangler
from proxy.rollout.state import events, load
from proxy.routing.table import RouteTable


def run(redis_url: str, prefix: str, *argv: str, t: RouteTable | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--redis-url", redis_url, "--prefix", prefix], out, err, table=t or table())
    return code, out.getvalue(), err.getvalue()


async def stored(redis_url: str, prefix: str) -> tuple[dict[str, object], list[tuple[str, int, int, str]]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        states = {name: (s.percent, s.paused) for name, s in (await load(client, prefix)).items()}
        evs = [(e.action, e.from_pct, e.to_pct, e.who) for e in await events(client, prefix)]
    finally:
        await client.aclose()
    return states, evs  # type: ignore[return-value]  # test helper: compared as plain values


def test_promote_refuses_with_the_reasons_then_force_promotes_and_warns(
    redis_url: str, redis_prefix: str
) -> None:
    """A route just started: promote says what blocks it and changes nothing; --force promotes, warns
    on stderr and records a manual-promote event with the reasons it overrode."""
    code, _, err = run(redis_url, redis_prefix, "promote", "users")
    assert code == 1
    assert "the gate for 10% is not met" in err and "verdict NOT ENOUGH DATA" in err and "--force" in err
    assert asyncio.run(stored(redis_url, redis_prefix)) == ({}, [])
    code, out, err = run(redis_url, redis_prefix, "promote", "users", "--force")
    assert code == 0 and "manual-promote 0% -> 10%" in out and "warning: promoting users although" in err
    states, evs = asyncio.run(stored(redis_url, redis_prefix))
    assert states == {"users": (10, False)}
    assert [e[:3] for e in evs] == [("manual-promote", 0, 10)] and evs[0][3].startswith("cli:")


def test_promote_without_force_once_the_gate_holds(redis_url: str, redis_prefix: str) -> None:
    """With the gate met (READY, enough comparisons, min_s 0) a promotion by hand needs no --force."""
    from dataclasses import replace

    from rollout_rig import PLAN

    t = table({"users": replace(PLAN, gate=replace(PLAN.gate, min_s=0))})
    asyncio.run(compare(redis_url, redis_prefix, route(t, "users"), matched=20))
    code, out, err = run(redis_url, redis_prefix, "promote", "users", t=t)
    assert (code, err) == (0, "") and "manual-promote 0% -> 10%" in out


def test_pause_resume_rollback_each_write_one_event(redis_url: str, redis_prefix: str) -> None:
    """pause, resume and rollback change the stored state and record one event each, by the CLI user."""
    run(redis_url, redis_prefix, "promote", "users", "--force")
    assert run(redis_url, redis_prefix, "pause", "users")[0] == 0
    assert "already paused" in run(redis_url, redis_prefix, "pause", "users")[1]
    assert asyncio.run(stored(redis_url, redis_prefix))[0] == {"users": (10, True)}
    assert run(redis_url, redis_prefix, "resume", "users")[0] == 0
    code, out, _ = run(redis_url, redis_prefix, "rollback", "users")
    assert code == 0 and "manual-rollback 10% -> 0%" in out
    states, evs = asyncio.run(stored(redis_url, redis_prefix))
    assert states == {"users": (0, False)}
    assert [e[:3] for e in reversed(evs)] == [
        ("manual-promote", 0, 10), ("pause", 10, 10), ("resume", 10, 10), ("manual-rollback", 10, 0),
    ]  # fmt: skip


def test_status_shows_stage_blocks_manual_routes_and_the_last_event(
    redis_url: str, redis_prefix: str
) -> None:
    """status: each route's stage, what blocks the next one and its last event; a manual route as manual;
    --json the same as one document."""
    run(redis_url, redis_prefix, "pause", "users")
    code, out, _ = run(redis_url, redis_prefix, "status")
    assert code == 0
    assert "users: 0% (stage 0 of [0, 10, 100]), PAUSED" in out
    assert "blocks: paused by hand" in out and "blocks: verdict NOT ENOUGH DATA" in out
    assert "last: pause 0% -> 0% by cli:" in out
    assert "health: manual (target: new), 100% on new" in out
    code, out, _ = run(redis_url, redis_prefix, "status", "posts", "--json")
    doc = orjson.loads(out)
    (row,) = doc["routes"]
    assert (row["route"], row["percent"], row["paused"], row["next"], row["stored"]) == (
        "posts",
        0,
        False,
        "hold",
        False,
    )
    assert any("comparisons" in b for b in row["blocks"])


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["promote", "health"], 1, "target: new set by hand"),
        (["pause", "nobody"], 2, "no route named 'nobody'"),
        (["pause"], 2, "name the route"),
    ],
)
def test_bad_commands_say_what_is_wrong(
    redis_url: str, redis_prefix: str, argv: list[str], code: int, message: str
) -> None:
    """A manual route, an unknown route or a missing name: refused with a message saying so."""
    got, _, err = run(redis_url, redis_prefix, *argv)
    assert got == code and message in err


def test_the_strangler_command_delegates_and_needs_a_redis_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`strangler rollout status` without REDIS_URL exits 2 and says how to give it."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert strangler(["rollout", "status"]) == 2
    assert "no Redis URL" in capsys.readouterr().err
