"""proxy/server/canary.py without sockets: sticky keys, the bearer token's sub, buckets, the choice."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from proxy.routing.model import RolloutPlan, StickyKey, UpstreamSpec
from proxy.server.canary import FULL, Canary, bucket, client_ip, jwt_sub
from proxy.upstream.pool import UpstreamPool

SPEC = UpstreamSpec("legacy", "http://127.0.0.1:1", "http", "127.0.0.1", 1, "")
NEW = UpstreamSpec("new", "http://127.0.0.1:2", "http", "127.0.0.1", 2, "")


IP = StickyKey()


def canary(sticky: StickyKey = IP, testers: tuple[str, str] | None = None) -> Canary:
    """A Canary for route ``users`` over two pools that are never connected."""
    plan = RolloutPlan(sticky=sticky, testers=testers)
    return Canary("users", plan, (UpstreamPool(SPEC), b"L"), (UpstreamPool(NEW), b"N"))


def token(payload: bytes) -> bytes:
    """``Bearer h.<payload base64url, unpadded>.s``."""
    return b"Bearer h." + base64.urlsafe_b64encode(payload).rstrip(b"=") + b".s"


def test_jwt_sub_reads_the_claim_without_verifying() -> None:
    """The sub claim (a string or an integer) is read from the payload; the signature is not looked at."""
    assert jwt_sub(token(json.dumps({"sub": "alice", "exp": 1}).encode())) == b"alice"
    assert jwt_sub(token(b'{"sub": 42}')) == b"42"
    assert jwt_sub(b"bearer " + token(b'{"sub": "bob"}')[7:]) == b"bob"  # the scheme ignores case


def test_jwt_sub_none_for_anything_else() -> None:
    """Not Bearer, not three parts, bad base64 or JSON, no usable sub, or too long: None, never an error."""
    bad = [
        b"Basic dTpw",
        b"Bearer abc",
        b"Bearer a.b",
        b"Bearer a.b.c.d",
        b"Bearer h.!!!.s",
        b"Bearer h.a.s",  # one base64 character: not a whole byte
        token(b"\xff\xfe"),
        token(b"[1, 2]"),
        token(b'{"sub": ""}'),
        token(b'{"sub": true}'),
        token(b'{"sub": null}'),
        token(b'{"name": "x"}'),
        token(b"[" * 5000),
        token(json.dumps({"sub": "x", "pad": "y" * 5000}).encode()),
    ]
    assert [jwt_sub(value) for value in bad] == [None] * len(bad)


@given(st.binary(max_size=300))
def test_jwt_sub_never_raises(junk: bytes) -> None:
    """Whatever the client sends as Authorization, reading the sub returns bytes or None."""
    for value in (junk, b"Bearer " + junk, token(junk)):
        assert jwt_sub(value) is None or isinstance(jwt_sub(value), bytes)


def test_keys_header_cookie_and_the_ip_fallback() -> None:
    """header: any case of the name; cookie: the exact name; without either: the client address."""
    headers = [(b"x-USER", b"u1"), (b"Cookie", b"xsid=no; sid=abc"), (b"Cookie", b"other=1")]
    assert canary(StickyKey("header", "x-user")).key(headers, [], b"1.2.3.4", 0) == b"ku1"
    assert canary(StickyKey("cookie", "sid")).key(headers, [], b"1.2.3.4", 0) == b"kabc"
    assert canary(StickyKey("cookie", "SID")).key(headers, [], b"1.2.3.4", 0) == b"i1.2.3.4"
    assert canary(StickyKey("header", "x-other")).key(headers, [], b"1.2.3.4", 0) == b"i1.2.3.4"
    assert canary(StickyKey("jwt_sub")).key(headers, [], b"1.2.3.4", 0) == b"i1.2.3.4"
    assert canary().key(headers, [], b"1.2.3.4", 0) == b"i1.2.3.4"


def test_client_ip_is_the_trusted_hops_view() -> None:
    """With trusted hops the first entry of the forwarded X-Forwarded-For; without, the peer's address."""
    lines = [b"Accept: */*", b"X-Forwarded-For: 203.0.113.9, 10.0.0.2", b"Via: 1.1 strangler"]
    assert client_ip(lines, b"10.0.0.2", 1) == b"203.0.113.9"
    assert client_ip(lines, b"10.0.0.2", 0) == b"10.0.0.2"
    assert client_ip([b"Accept: */*"], b"10.0.0.2", 2) == b"10.0.0.2"


def test_bucket_is_pinned_and_per_route() -> None:
    """Buckets are the same in every process and release (pinned values) and differ between routes."""
    assert bucket("users", b"kalice") == 3737
    assert bucket("users", b"i10.0.0.1") == 2608
    assert bucket("orders", b"kalice") == 79
    assert all(0 <= bucket("r", b"k%d" % i) < FULL for i in range(1000))


def test_choice_grows_with_the_stage_only() -> None:
    """For 2000 keys, each stage's set on new contains the previous stage's; 0 is none, 10000 all."""
    c = canary(StickyKey("header", "x-user"))
    keys = [[(b"x-user", b"user%d" % i)] for i in range(2000)]
    previous: set[int] = set()
    for stage in (0, 1, 50, 100, 1000, 2500, 5000, 7500, 9999, 10000):
        now = {i for i, headers in enumerate(keys) if c.serves_new(stage, headers, [], b"127.0.0.1", 0)}
        assert previous <= now
        if stage in (1000, 5000):  # loose: a share near the stage
            assert abs(len(now) / 2000 - stage / FULL) < 0.05
        previous = now
    assert previous == set(range(2000))


def test_testers_only_from_the_first_canary_stage() -> None:
    """The testers header with its exact value picks new when the stage is above 0."""
    c = canary(testers=("x-tester", "yes"))
    tester = [(b"X-Tester", b"yes")]
    assert not c.serves_new(0, tester, [], b"127.0.0.1", 0)
    assert c.serves_new(1, tester, [], b"127.0.0.1", 0)
    near_all = [ip for ip in range(200) if c.serves_new(1, [(b"X-Tester", b"no")], [], b"10.0.0.%d" % ip, 0)]
    assert len(near_all) <= 2
