"""Header rewriting (pure): hop-by-hop removal, X-Forwarded-*, Via loops, request ids, framing checks."""

from __future__ import annotations

import pytest

from proxy.server.forwarding import Forwarder, FramingError, PlainMemo, valid_request_id
from proxy.server.gateway import GatewaySettings


def forward(
    headers: list[tuple[bytes, bytes]], hops: int = 0, peer: bytes = b"10.0.0.9"
) -> dict[bytes, bytes]:
    """Rewrite ``headers`` and return the result as a lower-cased dict (last value wins)."""
    prepared = Forwarder(GatewaySettings(trusted_hops=hops)).request(headers, peer, True)
    return {k.lower(): v for k, v in prepared.pairs()}


def test_no_trusted_hops_discards_client_forwarding_headers() -> None:
    """trusted_hops=0: X-Forwarded-* and Forwarded from the client are replaced by socket facts."""
    out = forward(
        [
            (b"Host", b"site.test"),
            (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"evil"),
            (b"Forwarded", b"for=x"),
        ]
    )
    assert out[b"x-forwarded-for"] == b"10.0.0.9"
    assert out[b"x-forwarded-proto"] == b"http"
    assert out[b"x-forwarded-host"] == b"site.test"
    assert b"forwarded" not in out and b"host" not in out


def test_trusted_hops_keep_last_entries_and_append_peer() -> None:
    """trusted_hops=N keeps the last N X-Forwarded-For entries (across headers) and appends the peer."""
    headers = [(b"Host", b"h"), (b"X-Forwarded-For", b"6.6.6.6, 1.1.1.1"), (b"X-Forwarded-For", b"2.2.2.2"),
               (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"public.test")]  # fmt: skip
    out = forward(headers, hops=2)
    assert out[b"x-forwarded-for"] == b"1.1.1.1, 2.2.2.2, 10.0.0.9"
    assert out[b"x-forwarded-proto"] == b"https"
    assert out[b"x-forwarded-host"] == b"public.test"
    assert forward(headers, hops=1)[b"x-forwarded-for"] == b"2.2.2.2, 10.0.0.9"


def test_connection_named_headers_dropped_but_framing_kept() -> None:
    """Headers named in Connection are dropped; naming Content-Length cannot remove the framing."""
    prepared = Forwarder(GatewaySettings()).request(
        [
            (b"Host", b"h"),
            (b"Connection", b"X-A, content-length"),
            (b"X-A", b"1"),
            (b"X-B", b"2"),
            (b"Content-Length", b"3"),
        ],
        b"1.2.3.4",
        True,
    )
    names = [k.lower() for k, _ in prepared.pairs()]
    assert b"x-a" not in names and b"x-b" in names and b"connection" not in names
    assert prepared.content_length == 3


def test_via_appended_and_loop_detected() -> None:
    """Via gets our entry appended; a request already listing our token is flagged as a loop."""
    forwarder = Forwarder(GatewaySettings(via_token="gw1"))
    prepared = forwarder.request([(b"Host", b"h"), (b"Via", b"1.0 cdn")], b"1.2.3.4", True)
    assert dict(prepared.pairs())[b"Via"] == b"1.0 cdn, 1.1 gw1"
    assert not prepared.loop
    assert forwarder.request([(b"Host", b"h"), (b"Via", b"1.0 cdn, 1.1 GW1")], b"1.2.3.4", True).loop


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"abc-123_X.y", True),
        (b"a" * 128, True),
        (b"a" * 129, False),
        (b"", False),
        (b"a b", False),
        (b"a\xff", False),
        (b"a/b", False),
    ],
)
def test_request_id_sanity(value: bytes, ok: bool) -> None:
    """Request ids are kept only when 1-128 characters of [A-Za-z0-9._-]."""
    assert valid_request_id(value) is ok


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")],
        [(b"Content-Length", b"1"), (b"Content-Length", b"1")],
        [(b"Content-Length", b"+1")],
        [(b"Transfer-Encoding", b"gzip, chunked")],
        [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
    ],
)
def test_ambiguous_framing_raises(headers: list[tuple[bytes, bytes]]) -> None:
    """Ambiguous framing is refused even if the parser let it through."""
    with pytest.raises(FramingError):
        Forwarder(GatewaySettings()).request([(b"Host", b"h"), *headers], b"1.2.3.4", True)


def test_response_headers_filtered() -> None:
    """Hop-by-hop response headers and the upstream's request id are dropped; framing is reported."""
    prepared = Forwarder(GatewaySettings()).response(
        [
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Request-Id", b"up"),
            (b"Content-Type", b"text/plain"),
            (b"Set-Cookie", b"a=1"),
        ]
    )
    assert prepared.headers == [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1")]
    assert prepared.chunked and prepared.content_length is None


@pytest.mark.parametrize(
    "connection",
    [b"keep-alive", b"Keep-Alive", b"keep-alive, Upgrade", b"close", b"keep-alive, x-hop", b"X-HOP"],
)
def test_response_connection_values_as_servers_send_them(connection: bytes) -> None:
    """Express's head (Connection: keep-alive and Keep-Alive) keeps every end-to-end header in order; a
    header a Connection token names goes, whatever the spelling; framing is reported either way."""
    prepared = Forwarder(GatewaySettings()).response(
        [
            (b"X-Powered-By", b"Express"),
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"70"),
            (b"X-Hop", b"1"),
            (b"Connection", connection),
            (b"Keep-Alive", b"timeout=5"),
            (b"ETag", b'W/"46-x"'),
        ]
    )
    kept = [(b"X-Powered-By", b"Express"), (b"Content-Type", b"application/json"), (b"X-Hop", b"1")]
    kept.append((b"ETag", b'W/"46-x"'))
    if b"x-hop" in connection.lower():
        kept.remove((b"X-Hop", b"1"))
    assert prepared.headers == kept
    assert prepared.content_length == b"70" and not prepared.chunked


@pytest.mark.parametrize("second", [b"close", b"keep-alive", b"X-Other"])
def test_response_headers_named_by_any_connection_header_go(second: bytes) -> None:
    """Two Connection headers name the union of their tokens (RFC 9110 7.6.1), whichever comes last."""
    prepared = Forwarder(GatewaySettings()).response(
        [(b"Connection", b"X-Secret"), (b"X-Secret", b"s"), (b"Connection", second), (b"X-Other", b"o")]
    )
    assert prepared.headers == ([] if second == b"X-Other" else [(b"X-Other", b"o")])


def test_settings_validated() -> None:
    """Bad settings fail fast naming the setting."""
    with pytest.raises(ValueError, match="trusted_hops"):
        GatewaySettings(trusted_hops=-1)
    with pytest.raises(ValueError, match="via_token"):
        GatewaySettings(via_token="a b")


def test_new_request_ids_are_dashed_uuid4() -> None:
    """Made request ids are distinct version-4 UUIDs in their dashed form (what the services make)."""
    import uuid

    from proxy.server.forwarding import new_request_id

    made = {new_request_id() for _ in range(1000)}
    assert len(made) == 1000
    for rid in made:
        parsed = uuid.UUID(rid.decode())
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == rid.decode()


def test_request_ids_are_not_sequential() -> None:
    """Consecutive ids share no long prefix and no counter: the next one cannot be told from the last."""
    import itertools

    from proxy.server.forwarding import new_request_id

    ids = [new_request_id().replace(b"-", b"") for _ in range(200)]
    prefixes = {rid[:12] for rid in ids}
    assert len(prefixes) == len(ids)  # 48 random bits each: a shared prefix means a counter
    tails = [int(rid[-12:], 16) for rid in ids]
    assert sum(1 for a, b in itertools.pairwise(tails) if abs(a - b) < 1 << 16) < 3


def test_request_ids_differ_in_forked_workers() -> None:
    """A forked worker draws its own request-id prefix, so workers never hand out the same ids."""
    import os

    from proxy.server.forwarding import new_request_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report a few ids and leave without running pytest's teardown
        os.write(write, b",".join(new_request_id() for _ in range(3)))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).split(b",")
    os.close(read)
    parent = [new_request_id() for _ in range(3)]
    assert len(child) == 3
    assert {rid[:16] for rid in child}.isdisjoint({rid[:16] for rid in parent})
    assert set(child).isdisjoint(parent)


def test_request_plain_matches_request_or_declines() -> None:
    """request_plain forwards a plain request exactly as request does, and declines anything else."""
    fwd = Forwarder(GatewaySettings())
    plain = [(b"Host", b"h"), (b"Accept", b"*/*"), (b"User-Agent", b"t")]
    fast = fwd.request_plain(plain, b"10.0.0.1")
    full = fwd.request(plain, b"10.0.0.1", True)
    assert fast is not None
    assert fast.lines[:-1] == full.lines[:-1]  # all but the request id line, which is fresh each time
    assert fast.lines[-1].startswith(b"X-Request-Id: ") and fast.content_length is None
    # the id's line, which the response carries back, is the one forwarded
    assert fast.id_line == b"X-Request-Id: " + fast.request_id and full.id_line == full.lines[-1]
    assert full.id_line == b"X-Request-Id: " + full.request_id
    for extra in [(b"Connection", b"keep-alive"), (b"Content-Length", b"0"), (b"X-Request-Id", b"r")]:
        assert fwd.request_plain([*plain, extra], b"10.0.0.1") is None
    assert fwd.request_plain(plain[1:], b"10.0.0.1") is None  # no Host
    assert Forwarder(GatewaySettings(trusted_hops=1)).request_plain(plain, b"10.0.0.1") is None


def test_request_plain_memo_reuses_the_last_requests_lines() -> None:
    """With a connection's memo, headers that came twice in a row are kept: the next request with them
    gets their lines again, with a new id; headers that change per request are only compared."""
    fwd = Forwarder(GatewaySettings())
    memo = PlainMemo()
    plain = [(b"Host", b"h"), (b"Accept", b"*/*"), (b"User-Agent", b"t")]
    full = fwd.request(plain, b"10.0.0.1", True)
    first = fwd.request_plain(plain, b"10.0.0.1", memo)
    assert first is not None and memo.raw is plain and memo.block == b""  # seen once: not kept
    assert first.lines[:-1] == full.lines[:-1] and first.block == b""  # joined by the caller, as before
    second = fwd.request_plain(list(plain), b"10.0.0.1", memo)  # equal headers, a new list (as parsed)
    assert second is not None and memo.raw is plain and memo.block  # twice in a row: kept
    assert second.lines[:-1] == first.lines[:-1] and second.block == b"\r\n".join(second.lines)
    again = fwd.request_plain(list(plain), b"10.0.0.1", memo)
    assert again is not None and memo.raw is plain  # served by what was kept
    assert again.lines[:-1] == first.lines[:-1]
    assert again.request_id not in (first.request_id, second.request_id)
    assert again.id_line == again.lines[-1] == b"X-Request-Id: " + again.request_id
    assert again.block == b"\r\n".join(again.lines) and again.host == b"h"
    again.lines.append(b"X-Extra: 1")  # a request's list is its own: the memo's stays as it was
    after = fwd.request_plain(list(plain), b"10.0.0.1", memo)
    assert after is not None and after.lines[:-1] == first.lines[:-1]
    other = [(b"Host", b"h2"), (b"Accept", b"*/*"), (b"User-Agent", b"t")]  # one value differs
    third = fwd.request_plain(other, b"10.0.0.1", memo)
    assert third is not None and memo.raw is other and memo.block == b""
    assert b"X-Forwarded-Host: h2" in third.lines and third.host == b"h2"
    fourth = fwd.request_plain(list(other), b"10.0.0.1", memo)
    assert fourth is not None and b"X-Forwarded-Host: h2" in fourth.lines and memo.block
    assert fourth.block == b"\r\n".join(fourth.lines)
    # Not plain: declined whatever the memo holds, and the memo keeps the last plain request's.
    assert fwd.request_plain([*other, (b"Connection", b"close")], b"10.0.0.1", memo) is None
    assert memo.raw is other and b"X-Forwarded-Host: h2" in memo.lines
