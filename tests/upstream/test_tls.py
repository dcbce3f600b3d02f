"""https upstreams (issue 10): certificate and hostname verified, SNI sent, ``ca_file`` trusted.

A real TLS server on loopback with a certificate from a CA made in the test (trustme); the gateway
connects through it and answers 502 with a message saying what to do when the certificate does not verify.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from support.gwkit import GatewayFactory
from support.upstreams import RawClient

from proxy.routing.table import RoutesError, parse_routes


@dataclass
class TlsUpstream:
    """An aiohttp app served over TLS for ``localhost``; ``names`` are the SNI names clients sent."""

    port: int
    ca_pem: Path
    names: list[str | None] = field(default_factory=list)


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[TlsUpstream]:
    """A TLS upstream whose certificate (for localhost) is signed by a CA of this test."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    names: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"host": request.headers.get("Host"), "path": request.path_qs})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # the port 0 chose
    try:
        yield TlsUpstream(port, ca_pem, names)
    finally:
        await runner.cleanup()


def _routes(port: int, opts: str) -> str:
    return (
        "upstreams:\n"
        f'  legacy: {{url: "https://localhost:{port}/api"{opts}}}\n'
        '  new: {url: "http://127.0.0.1:9"}\n'
        "default: legacy\n"
    )


async def test_an_https_upstream_verified_with_its_ca_file(
    make_gateway: GatewayFactory, tls_upstream: TlsUpstream
) -> None:
    """With ``ca_file`` the gateway verifies the certificate, sends SNI and forwards over TLS."""
    gw = await make_gateway(_routes(tls_upstream.port, f', ca_file: "{tls_upstream.ca_pem}"'))
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/orders?x=1")
    assert response.status == 200
    assert json.loads(response.body) == {"host": "gateway.test", "path": "/api/orders?x=1"}
    assert tls_upstream.names == ["localhost"]
    client.close()


async def test_host_upstream_over_tls_sends_the_upstreams_name(
    make_gateway: GatewayFactory, tls_upstream: TlsUpstream
) -> None:
    """``host: upstream`` on an https upstream: Host is its name and port, as its certificate says."""
    opts = f', ca_file: "{tls_upstream.ca_pem}", host: upstream'
    gw = await make_gateway(_routes(tls_upstream.port, opts))
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/x")
    assert json.loads(response.body)["host"] == f"localhost:{tls_upstream.port}"
    client.close()


async def test_a_certificate_from_another_ca_is_a_clear_502(
    make_gateway: GatewayFactory, tls_upstream: TlsUpstream, tmp_path: Path
) -> None:
    """A certificate the trust store does not vouch for: 502 naming the upstream, the CA and the fix."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    gw = await make_gateway(_routes(tls_upstream.port, f', ca_file: "{other}"'))
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/x")
    assert response.status == 502
    message = json.loads(response.body)["error"]["message"]
    assert "TLS certificate of upstream legacy" in message
    assert str(other) in message and "ca_file" in message
    client.close()


async def test_without_ca_file_the_system_store_is_used(
    make_gateway: GatewayFactory, tls_upstream: TlsUpstream
) -> None:
    """No ``ca_file``: the system's trust store, which does not know the test's CA: a clear 502."""
    gw = await make_gateway(_routes(tls_upstream.port, ""))
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/x")
    assert response.status == 502
    assert "system's trust store" in json.loads(response.body)["error"]["message"]
    client.close()


async def test_a_certificate_for_another_name_is_refused(
    make_gateway: GatewayFactory, tls_upstream: TlsUpstream
) -> None:
    """The hostname is checked: the certificate is for localhost, the URL says 127.0.0.1."""
    routes = _routes(tls_upstream.port, f', ca_file: "{tls_upstream.ca_pem}"')
    routes = routes.replace("localhost", "127.0.0.1")
    gw = await make_gateway(routes)
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/x")
    assert response.status == 502
    assert "failed verification" in json.loads(response.body)["error"]["message"]
    client.close()


def test_a_ca_file_that_is_not_a_pem_bundle_is_a_load_error(tmp_path: Path) -> None:
    """A bad ``ca_file`` fails at load, with the file, line and key, not on the first request."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(RoutesError) as caught:
        parse_routes(_routes(443, f', ca_file: "{bad}"'), "t.yaml")
    assert str(caught.value).startswith("t.yaml:2: upstreams.legacy.ca_file: cannot load")
