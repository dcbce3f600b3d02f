"""Memoised routing (proxy.server.routecache), without sockets: what a request target becomes upstream."""

from __future__ import annotations

import pytest

from proxy.routing.table import RouteTable, parse_routes
from proxy.server.request import Refusal
from proxy.server.routecache import ROUTE_CACHE_SIZE, RouteCache
from proxy.upstream.pool import UpstreamPool

ROUTES = (
    "upstreams:\n"
    '  legacy: {url: "http://127.0.0.1:3000/base", host: upstream}\n'
    '  new: {url: "http://127.0.0.1:8000", host: upstream}\n'
    "default: legacy\n"
    "routes:\n"
    '  - {name: users, match: {path: "/users/{id}"}, target: new}\n'
)


def _table_and_pools(routes: str = ROUTES) -> tuple[RouteTable, dict[str, UpstreamPool]]:
    table = parse_routes(routes, "test.yaml")
    return table, {name: UpstreamPool(spec) for name, spec in table.upstreams.items()}


def test_lookup_gives_route_pool_and_upstream_request_line() -> None:
    """A target maps to its route, the pool of its upstream and the request line with Host."""
    table, pools = _table_and_pools()
    query, match, pool, prefix, method, _, target = RouteCache().lookup(table, pools, b"GET", b"/users/7?a=1")
    assert (query, match.route.name, pool is pools["new"], method) == ("a=1", "users", True, "GET")
    assert prefix == b"GET /users/7?a=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    assert target == b"/users/7?a=1"  # the forwarded target, without any upstream's base path
    _, match, pool, prefix, _, _, target = RouteCache().lookup(table, pools, b"POST", b"/other")
    assert match.route.target == "legacy" and pool is pools["legacy"]
    assert prefix == b"POST /base/other HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
    assert target == b"/other"


def test_lookup_leaves_host_to_the_connection_for_a_client_host_upstream() -> None:
    """With the default ``host: client`` the prefix is the request line alone: the client's Host follows."""
    table, pools = _table_and_pools(ROUTES.replace(", host: upstream", ""))
    _, _, pool, prefix, _, _, _ = RouteCache().lookup(table, pools, b"GET", b"/users/7?a=1")
    assert pool.client_host
    assert prefix == b"GET /users/7?a=1 HTTP/1.1\r\n"


def test_lookup_is_memoised_per_table_and_pools() -> None:
    """The same target is answered from memory until the table or the pools change."""
    table, pools = _table_and_pools()
    cache = RouteCache()
    first = cache.lookup(table, pools, b"GET", b"/users/7")
    # Compared by their Match: matching makes a new one each time. (Not the tuple itself: compiled with
    # mypyc, a tuple handed to Python code is boxed anew on each return.)
    second = cache.lookup(table, pools, b"GET", b"/users/7")
    assert second[1] is first[1] and second == first
    new_pools = dict(pools)
    again = cache.lookup(table, new_pools, b"GET", b"/users/7")
    assert again[1] is not first[1] and again == first


def test_lookup_refuses_a_bad_path_without_remembering_it() -> None:
    """A path canonicalise refuses is a 400 Refusal each time."""
    table, pools = _table_and_pools()
    cache = RouteCache()
    for _ in range(2):
        with pytest.raises(Refusal) as refused:
            cache.lookup(table, pools, b"GET", b"http://elsewhere/x")
        assert refused.value.status == 400
        assert "bad request path" in refused.value.message


def test_lookup_stays_bounded() -> None:
    """Past ROUTE_CACHE_SIZE distinct targets the memory is emptied, then refills."""
    table, pools = _table_and_pools()
    cache = RouteCache()
    for i in range(ROUTE_CACHE_SIZE + 10):
        cache.lookup(table, pools, b"GET", b"/users/%d" % i)
    assert len(cache._hits) <= ROUTE_CACHE_SIZE
