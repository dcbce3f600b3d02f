"""Opening a connection to an upstream: the one connect of the pooled and the pipelined clients.

Failures become `UpstreamError` ``connect`` (refused, unreachable, DNS, a TLS handshake or certificate
that fails verification) or ``timeout``, with a message that names the upstream and its address.
https upstreams are verified (certificate chain and hostname, sent as SNI) against the system's trust
store or the upstream's ``ca_file``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from proxy.http1.errors import UpstreamError
from proxy.routing.table import UpstreamSpec

__all__ = ["authority", "open_connection", "tls_context"]


def tls_context(spec: UpstreamSpec) -> ssl.SSLContext | None:
    """The TLS context for an ``https`` upstream (``ca_file`` or the system's trust store, hostname
    checked), else None. The bundle was loaded once already when the routes were validated."""
    if spec.scheme != "https":
        return None
    return ssl.create_default_context(cafile=spec.ca_file)


def authority(spec: UpstreamSpec) -> bytes:
    """The Host header value for the upstream: its host, with the port when not the scheme's default."""
    default_port = 443 if spec.scheme == "https" else 80
    hostport = spec.host if spec.port == default_port else f"{spec.host}:{spec.port}"
    if ":" in spec.host and not spec.host.startswith("["):
        hostport = f"[{spec.host}]:{spec.port}"
    return hostport.encode("idna")


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    protocol: Callable[[], asyncio.Protocol],
    spec: UpstreamSpec,
    tls: ssl.SSLContext | None,
    limit: float,
) -> None:
    """Connect ``protocol()`` to the upstream within ``limit`` seconds; raise `UpstreamError`."""
    try:
        async with asyncio.timeout(limit):
            await loop.create_connection(
                protocol, spec.host, spec.port, ssl=tls, server_hostname=spec.host if tls else None
            )
    except TimeoutError:
        raise UpstreamError(
            "timeout",
            f"connecting to upstream {spec.name} ({spec.host}:{spec.port}) took longer than {limit:g}s",
        ) from None
    except ssl.SSLCertVerificationError as e:
        trust = f"the CA bundle {spec.ca_file}" if spec.ca_file else "the system's trust store"
        raise UpstreamError(
            "connect",
            f"the TLS certificate of upstream {spec.name} ({spec.host}:{spec.port}) failed verification "
            f"against {trust}: {e.verify_message or e.reason}; set ca_file: in routes.yaml to the CA that "
            "signed it, or fix the certificate (its names must include the URL's host)",
        ) from None
    except ssl.SSLError as e:
        raise UpstreamError(
            "connect",
            f"the TLS handshake with upstream {spec.name} ({spec.host}:{spec.port}) failed: {e.reason or e}; "
            "does it serve https on that port?",
        ) from None
    except OSError as e:
        raise UpstreamError(
            "connect",
            f"cannot connect to upstream {spec.name} ({spec.host}:{spec.port}): {e.strerror or e}; "
            "is it running?",
        ) from None
