"""Canary routing of ``target: auto`` routes: per request, legacy or new, sticky per client. No I/O.

The stage a route is in (basis points of requests new serves, 0..10000) is the controller's
(``proxy.rollout``), written into `proxy.server.gateway.Gateway.stages`; routes.yaml holds the plan. A
cached route hit (`proxy.server.routecache`) of an auto route carries a `Canary`: both sides' pool and
request-line prefix and the route's sticky rule, so the choice is made per request against the stage
current at that request (a stage change never needs the cache cleared) and costs a dict lookup and,
between 0 and 10000, one hash of the client's key.

Stickiness: a client's bucket is a stable hash of the route name and its key, mod 10000 (`bucket`), and
new serves it while ``bucket < stage``. The same key lands in the same bucket in every process and
replica, and raising the stage only adds buckets: a client once on new stays there as the canary grows.
The key is a header, a cookie, the bearer token's ``sub`` claim (decoded, never verified: it only picks
a bucket) or the client address from the trusted hop; a request without its key uses the address.
"""

from __future__ import annotations

import binascii
import json
from hashlib import blake2b

from proxy.http1.headers import Headers
from proxy.routing.model import RolloutPlan
from proxy.upstream.pool import UpstreamPool

__all__ = ["FULL", "SERVED_BY", "Canary", "bucket", "jwt_sub"]

FULL = 10000  # a stage in basis points: 10000 is every request
SERVED_BY = b"X-Strangler-Served-By: "
_MAX_TOKEN = 4096  # a longer bearer token is not decoded (its sub would be just as good, but bounded work)


def bucket(route: str, key: bytes) -> int:
    """The client's bucket on ``route``, 0..9999: the same in every process, replica and release."""
    return _bucket(route.encode("utf-8") + b"\x00", key)


def _bucket(seed: bytes, key: bytes) -> int:
    return int.from_bytes(blake2b(seed + key, digest_size=8).digest(), "big") % FULL


def jwt_sub(authorization: bytes) -> bytes | None:
    """The ``sub`` claim of ``Bearer <jwt>``, unverified; None when absent or malformed. Never raises."""
    if len(authorization) > _MAX_TOKEN + 7 or authorization[:7].lower() != b"bearer ":
        return None
    parts = authorization[7:].strip().split(b".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(binascii.a2b_base64(_standard_b64(payload), strict_mode=True))
    except Exception:  # binascii.Error, ValueError (JSON, UTF-8), RecursionError: not a JWT we can read
        return None
    if not isinstance(claims, dict):
        return None
    sub = claims.get("sub")
    if isinstance(sub, str) and sub:
        return sub.encode("utf-8", "surrogatepass")
    if isinstance(sub, int) and not isinstance(sub, bool):
        return str(sub).encode("ascii")
    return None


def _standard_b64(data: bytes) -> bytes:
    """base64url without padding (as in a JWT) to standard base64 with its padding."""
    return data.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(data) % 4)


def _cookie(headers: Headers, name: bytes) -> bytes | None:
    for hname, value in headers:
        if len(hname) == 6 and hname.lower() == b"cookie":
            for pair in value.split(b";"):
                cname, eq, cvalue = pair.strip().partition(b"=")
                if eq and cname == name and cvalue:
                    return cvalue.strip(b'"')
    return None


def _header(headers: Headers, lname: bytes) -> bytes | None:
    size = len(lname)
    for hname, value in headers:
        if len(hname) == size and hname.lower() == lname:
            return value
    return None


def client_ip(lines: list[bytes], peer: bytes, trusted_hops: int) -> bytes:
    """The client's address as the trusted hop saw it: the first entry of the forwarded X-Forwarded-For
    (`proxy.server.forwarding` keeps the last ``trusted_hops`` entries and appends the peer), else the
    peer's."""
    if trusted_hops:
        for line in reversed(lines):  # the forwarder appends its own near the end
            if line[:17].lower() == b"x-forwarded-for: ":
                return line[17:].split(b",", 1)[0].strip() or peer
    return peer


class Canary:
    """Both sides of one auto route's cached hit, and the choice between them for one request."""

    __slots__ = (
        "cookie", "header", "kind", "legacy_line", "legacy_pool", "legacy_prefix", "new_line", "new_pool",
        "new_prefix", "seed", "testers_name", "testers_value",
    )  # fmt: skip

    def __init__(
        self,
        route: str,
        plan: RolloutPlan | None,
        legacy: tuple[UpstreamPool, bytes],
        new: tuple[UpstreamPool, bytes],
    ) -> None:
        plan = plan if plan is not None else RolloutPlan()  # a route built by hand without one
        self.legacy_pool, self.legacy_prefix = legacy
        self.new_pool, self.new_prefix = new
        # The response header line saying which side answered, made once per cached hit.
        self.legacy_line = SERVED_BY + self.legacy_pool.name.encode("ascii")
        self.new_line = SERVED_BY + self.new_pool.name.encode("ascii")
        self.seed = route.encode("utf-8") + b"\x00"
        sticky = plan.sticky
        self.kind = sticky.kind
        self.header = sticky.name.lower().encode("latin-1")  # header:NAME (validated: a token)
        self.cookie = sticky.name.encode("latin-1")  # cookie:NAME (case-sensitive, as cookies are)
        testers = plan.testers
        self.testers_name = testers[0].lower().encode("latin-1") if testers is not None else b""
        self.testers_value = testers[1].encode("latin-1") if testers is not None else b""

    def serves_new(
        self, stage: int, headers: Headers, lines: list[bytes], peer: bytes, trusted_hops: int
    ) -> bool:
        """Whether new serves this request at ``stage`` (basis points): at 10000 always; from the first
        canary stage on, a tester's request; else when the client's bucket is below the stage."""
        if stage <= 0:
            return False
        if stage >= FULL:
            return True
        if self.testers_name and _header(headers, self.testers_name) == self.testers_value:
            return True
        return _bucket(self.seed, self.key(headers, lines, peer, trusted_hops)) < stage

    def key(self, headers: Headers, lines: list[bytes], peer: bytes, trusted_hops: int) -> bytes:
        """The request's sticky key, or the client address when it carries none."""
        kind = self.kind
        value: bytes | None = None
        if kind == "header":
            value = _header(headers, self.header)
        elif kind == "cookie":
            value = _cookie(headers, self.cookie)
        elif kind == "jwt_sub":
            auth = _header(headers, b"authorization")
            value = jwt_sub(auth) if auth is not None else None
        if value:
            return b"k" + value  # keys and addresses never collide
        return b"i" + client_ip(lines, peer, trusted_hops)
