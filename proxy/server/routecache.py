"""Memoised routing for the data path: a request's method and target to its route, pool and request line.

`RouteCache.lookup` runs once per request. Canonicalising the path, matching the table and encoding the
upstream's request line cost more than one dict lookup, and hot paths repeat, so results are kept per
(table, pools) pair, which `proxy.server.gateway.Gateway.set_table` swaps together. No I/O.

A hit of a ``target: auto`` route carries a `proxy.server.canary.Canary` holding both sides' pool and
prefix (the hit's own are legacy's); the data path picks one per request against the current stage, so
the cache never holds a stale choice. Every other hit carries None there: one None check per request.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.routing.model import AUTO
from proxy.routing.paths import BadPath, canonicalise
from proxy.routing.table import Match, RouteTable
from proxy.server.canary import Canary
from proxy.server.request import Refusal
from proxy.upstream.pool import UpstreamPool

__all__ = ["ROUTE_CACHE_SIZE", "RouteCache", "RouteHit"]

# (query, match, pool, upstream request line (+ Host for a `host: upstream` pool), method as str, for
# a `target: auto` route both sides (else None), the forwarded path and query as the request line carries
# them without the upstream's base path)
RouteHit = tuple[str, Match, UpstreamPool, bytes, str, Canary | None, bytes]
ROUTE_CACHE_SIZE = 4096


class RouteCache:
    """Routes request targets against a table, remembering up to `ROUTE_CACHE_SIZE` answers."""

    def __init__(self) -> None:
        # Keyed by b"METHOD target": one bytes object made and hashed, where a (method, target) tuple's
        # hash and comparison went item by item (callgrind: ~650 instructions a request more).
        self._hits: dict[bytes, RouteHit] = {}
        self._table: RouteTable | None = None
        self._pools: Mapping[str, UpstreamPool] | None = None

    def lookup(
        self, table: RouteTable, pools: Mapping[str, UpstreamPool], method: bytes, url: bytes
    ) -> RouteHit:
        """Route a request target: (query, match, pool, request line prefix, method str, canary, target).

        The prefix ends with the upstream's Host for a ``host: upstream`` pool; for the default
        ``host: client`` the caller adds the client's (``pool.client_host``).

        Raises `Refusal` (400) for a path `canonicalise` refuses; refusals are not memoised.
        """
        cache = self._hits
        if self._table is not table or self._pools is not pools:
            cache.clear()  # a reload: the old answers name the old routes and pools
            self._table = table
            self._pools = pools
        key = b"%b %b" % (method, url)  # a method has no space: the key is unambiguous
        hit = cache.get(key)
        if hit is None:
            try:
                path, query = canonicalise(url)
            except BadPath as e:
                raise Refusal(400, f"bad request path: {e}") from None
            method_str = method.decode("ascii")  # llhttp accepts only known (ASCII) method names
            match = table.match(method_str, path)
            route = match.route
            target = route.target
            canary: Canary | None = None
            forward = match.forward_path.encode("utf-8")  # the target as forwarded, base path aside
            if query:
                forward += b"?" + query.encode("utf-8")
            if target == AUTO:
                legacy = _side(pools, "legacy", route.name, method, forward)
                new = _side(pools, "new", route.name, method, forward)
                canary = Canary(route.name, route.rollout, legacy, new)
                pool, prefix = legacy
            else:
                pool, prefix = _side(pools, target, route.name, method, forward)
            hit = (query, match, pool, prefix, method_str, canary, forward)
            if len(cache) >= ROUTE_CACHE_SIZE:
                cache.clear()  # crude but bounded; refills with what is hot now
            cache[key] = hit
        return hit


def _side(
    pools: Mapping[str, UpstreamPool], target: str, route: str, method: bytes, forward: bytes
) -> tuple[UpstreamPool, bytes]:
    """One upstream's pool and request line prefix for a routed request (``forward``: path and query)."""
    pool = pools.get(target)
    if pool is None:  # pragma: no cover - the table validates its targets
        raise Refusal(502, f"route {route} names an unknown upstream {target}")
    upstream_target = pool.base_path + forward
    if pool.client_host:  # the connection adds the client's Host
        return pool, b"%s %s HTTP/1.1\r\n" % (method, upstream_target)
    return pool, b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, upstream_target, pool.hostport)
