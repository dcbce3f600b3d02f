"""HTTP conformance of the gateway's own answers: 505 for other versions, 400 for a bad Host, a Date on
every gateway-made response, real bytes_out in the access log, and a client's dry-run header stripped."""

from __future__ import annotations

import email.utils
import socket

import pytest
from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, RawClient

from proxy.server.gateway import AccessRecord


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/3.0"])
async def test_other_http_versions_get_505(gw: RunningGateway, echo: EchoUpstream, version: bytes) -> None:
    """A request line declaring a version other than 1.0/1.1 is answered 505 JSON and not forwarded."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /x " + version + b"\r\nHost: gateway.test\r\n\r\n")
    response = await client.response()
    assert response.status == 505
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "http_version_not_supported"
    assert response.header("Date") is not None
    assert echo.seen.requests == []
    client.close()


@pytest.mark.parametrize(
    "host", [b"a b/c", b"user@evil.example", b"evil.example/path", b"a\x01b", b"ex.com?x", b""]
)
async def test_invalid_host_gets_400(gw: RunningGateway, echo: EchoUpstream, host: bytes) -> None:
    """An invalid (or, in HTTP/1.1, empty) Host is answered 400 and never reaches X-Forwarded-Host."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    response = await client.response()
    assert response.status == 400
    assert response.header("Date") is not None
    assert echo.seen.requests == []
    client.close()


@pytest.mark.parametrize(
    "host", ["example.com", "example.com:8080", "[::1]:80", "10.0.0.1", "xn--bcher-kva.de"]
)
async def test_valid_hosts_forwarded(gw: RunningGateway, echo: EchoUpstream, host: str) -> None:
    """Ordinary Host values still pass, into X-Forwarded-Host (also on a second, memoised request)."""
    client = await RawClient.open(gw.port)
    for _ in range(2):
        await client.send(f"GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        response = await client.response()
        assert response.status == 200
        assert dict((k.lower(), v) for k, v in response.json()["headers"])["x-forwarded-host"] == host  # type: ignore[union-attr]
    client.close()


async def test_gateway_errors_carry_date_and_logged_bytes(make_gateway: GatewayFactory) -> None:
    """A gateway-made 502 carries a valid Date and is logged with the bytes of the body it sent."""
    records: list[AccessRecord] = []
    port = _dead_port()
    handle = await make_gateway(routes_yaml(port, port), access_log=records.append)
    client = await RawClient.open(handle.port)
    response = await client.request("GET", "/x")
    assert response.status == 502
    date = response.header("Date")
    assert date is not None and email.utils.parsedate_to_datetime(date).tzinfo is not None
    assert len(records) == 1 and records[0].status == 502
    assert records[0].bytes_out == len(response.body) > 0
    client.close()


async def test_client_dry_run_header_stripped(gw: RunningGateway, echo: EchoUpstream) -> None:
    """A client's own X-Strangler-Dry-Run never reaches an upstream: only the gateway signs dry runs."""
    client = await RawClient.open(gw.port)
    response = await client.request("POST", "/x", {"X-Strangler-Dry-Run": "t=1,n=a,sig=00"}, b"{}")
    assert response.status == 200
    names = {str(k).lower() for k, _ in response.json()["headers"]}  # type: ignore[union-attr]
    assert "x-strangler-dry-run" not in names and "x-forwarded-host" in names
    client.close()


def test_dry_run_header_name_matches_shadow() -> None:
    """The data path strips the very header the shadow layer signs (it cannot import it: layers)."""
    from proxy.server.forwarding import DRY_RUN_HEADER
    from proxy.shadow.dryrun import HEADER

    assert HEADER.lower().encode() == DRY_RUN_HEADER
