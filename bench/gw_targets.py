"""Start the gateway benchmark's processes: upstreams, nginx, node http-proxy, strangler (+shadow)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import svc_setup
from bench.harness import BenchError, Fleet, Variant, ensure_npm_ci, find_binary, free_port, log, tail

BENCH = Path(__file__).resolve().parent
STRANGLER = Path(sys.executable).parent / "strangler"

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

# Both upstreams answer identically, so shadow comparison finds matches (the realistic, common case).
ROUTES = """\
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}", pool_size: 64}}
  new: {{url: "http://127.0.0.1:{new}", pool_size: 64}}
default: legacy
routes:
  - name: users-get
    match: {{methods: [GET], path: "/api/v1/users/{{id}}"}}
    target: legacy
{shadow}"""


def start_upstream(fleet: Fleet, name: str, express: bool = False) -> tuple[int, int]:
    """Start one bench/upstream.py (``express``: answering with an Express app's head); return (port, pid)."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "upstream.py"), str(port), *(["express"] if express else [])]
    pid = fleet.start(name, argv, port=port)
    return port, pid


def start_upstreams(fleet: Fleet, shadow: bool, express: bool = False) -> tuple[str, int]:
    """The upstream (and, with `shadow`, a second one every GET is copied to) of a one-gateway run: the
    routes.yaml text and the port whose answers count the copies (the only upstream without `shadow`)."""
    up, _ = start_upstream(fleet, "upstream", express)
    other, _ = start_upstream(fleet, "upstream-shadow", express) if shadow else (up, 0)
    return ROUTES.format(legacy=up, new=other, shadow="    shadow: {sample: 1.0}\n" if shadow else ""), other


def upstream_count(port: int) -> int:
    """Requests the upstream on `port` has answered so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__bench/count", timeout=5) as resp:
        count: int = json.loads(resp.read())["served"]
        return count


def start_nginx(fleet: Fleet, tmp: Path, upstream: int) -> tuple[int, int]:
    """nginx, one worker, keepalive pool to `upstream`; return (port, master pid; CPU counts its workers)."""
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, upstream=upstream, port=port))
    nginx = find_binary("nginx")
    if nginx is None:
        raise BenchError("nginx is not installed: apt-get install -y nginx-light")
    pid = fleet.start("nginx", [nginx, "-e", "stderr", "-p", str(tmp), "-c", str(conf)], port=port)
    return port, pid


def start_node(fleet: Fleet, upstream: int) -> tuple[int, int]:
    """node http-proxy, one process, keepAlive agent; return (port, pid)."""
    ensure_npm_ci(BENCH / "node")
    port = free_port()
    pid = fleet.start("node-http-proxy", ["node", str(BENCH / "node" / "proxy.js"), str(port), str(upstream)],
                      port=port)
    return port, pid


def strangler_missing() -> str | None:
    """Why `strangler proxy` cannot run here, or None if its CLI answers."""
    if not STRANGLER.exists():
        return f"{STRANGLER} is missing: run `make install`"
    done = subprocess.run([str(STRANGLER), "proxy", "--help"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"`strangler proxy --help` failed ({done.returncode}): {(done.stderr or done.stdout)[-300:]}"
    return None


def start_strangler(fleet: Fleet, tmp: Path, name: str, routes: str, env: dict[str, str]) -> tuple[int, int]:
    """`strangler proxy --workers 1` with `routes`; return (port, pid)."""
    path = tmp / f"{name}-routes.yaml"
    path.write_text(routes)
    port, admin = free_port(), free_port()
    cmd = [str(STRANGLER), "proxy", "--routes", str(path), "--listen", f"127.0.0.1:{port}",
           "--admin", f"127.0.0.1:{admin}", "--workers", "1",
           # nginx runs with access_log off and node logs nothing: compare data paths, not loggers.
           "--access-log", "off", "--log-level", "warning"]
    pid = fleet.start(name, cmd, env={**os.environ, **env}, port=port, timeout=60)
    return port, pid


class ShadowProbe:
    """Counts what reached the shadow upstream during the measured rounds (only shadow copies go there)."""

    def __init__(self, name: str, shadow_port: int) -> None:
        self.name = name
        self.shadow_port = shadow_port
        self.start = 0
        self.copies = 0

    def begin(self) -> None:
        """Called once warm-up traffic has settled, before the first measured round."""
        self.start = upstream_count(self.shadow_port)

    def end(self) -> None:
        """Called after the last round, once queued copies have had a moment to go out."""
        self.copies = upstream_count(self.shadow_port) - self.start

    def notes(self, primary: int) -> list[str]:
        """What share of the `primary` requests served during the rounds got a shadow copy."""
        share = self.copies / primary if primary else 0.0
        return [f"shadow: {self.copies} of {primary} primary requests ({share:.1%}) were copied to the "
                "shadow upstream during the measured rounds (the gateway drops copies its queue cannot hold)"]


def start_all(fleet: Fleet, tmp: Path, args: argparse.Namespace, wanted: set[str], notes: list[str],
              stack: contextlib.ExitStack) -> tuple[list[Variant], ShadowProbe | None]:
    """Start every wanted variant; strangler variants that cannot start become notes, not failures."""
    def want(name: str) -> bool:
        return not wanted or name in wanted

    up_port, up_pid = start_upstream(fleet, "upstream", args.express_head)
    variants: list[Variant] = []
    if want("direct"):
        variants.append(Variant("direct", up_port, up_pid))
    if want("nginx"):
        variants.append(Variant("nginx", *start_nginx(fleet, tmp, up_port)))
    if want("node http-proxy"):
        variants.append(Variant("node http-proxy", *start_node(fleet, up_port)))
    probe: ShadowProbe | None = None
    if not (want("strangler") or want("strangler+shadow")):
        return variants, probe
    if (why := strangler_missing()) is not None:
        notes.append(f"strangler: not measured: {why}")
        notes.append("shadow: not measured: strangler is not available")
        return variants, probe
    shadow_port, _ = start_upstream(fleet, "upstream-shadow", args.express_head)
    plain = ROUTES.format(legacy=up_port, new=shadow_port, shadow="")
    if want("strangler"):
        try:
            variants.append(Variant("strangler", *start_strangler(fleet, tmp, "strangler", plain, {})))
        except BenchError as exc:
            notes.append(f"strangler: did not start: {exc}")
    if want("strangler+shadow") and not args.no_shadow:
        env = shadow_storage(stack, tmp)
        probe = _start_shadowed(fleet, tmp, up_port, shadow_port, variants, notes, env)
    return variants, probe


def shadow_storage(stack: contextlib.ExitStack, tmp: Path) -> dict[str, str]:
    """Env for the shadow diff store: Redis (counters) and a migrated scratch database (samples), both
    from REDIS_URL/DATABASE_URL or embedded, under a scratch key prefix; all removed when `stack` closes."""
    pg_url, redis_url = stack.enter_context(svc_setup.servers(tmp))
    database_url = stack.enter_context(svc_setup.scratch_database(pg_url))
    prefix = stack.enter_context(svc_setup.scratch_prefix(redis_url, "shadow"))
    return {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "STRANGLER_SHADOW_PREFIX": prefix}


def _start_shadowed(fleet: Fleet, tmp: Path, up_port: int, shadow_port: int, variants: list[Variant],
                    notes: list[str], env: dict[str, str]) -> ShadowProbe | None:
    routes = ROUTES.format(legacy=up_port, new=shadow_port, shadow="    shadow: {sample: 1.0}\n")
    try:
        port, pid = start_strangler(fleet, tmp, "strangler-shadow", routes, env)
    except BenchError as exc:
        notes.append(f"shadow: not measured: strangler refused shadow routes: {exc}")
        return None
    # A shadowing gateway must deliver copies: send a few requests and look for them at the shadow upstream.
    before = upstream_count(shadow_port)
    try:
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/users/1", timeout=5) as resp:
                resp.read()
    except OSError as exc:  # urllib's HTTPError and URLError are OSErrors
        notes.append(f"shadow: not measured: the shadowing gateway failed a plain GET ({exc}); log: "
                     f"{tail(tmp / 'strangler-shadow.log', 5)!r}")
        fleet.stop(pid)
        return None
    for _ in range(30):
        if upstream_count(shadow_port) > before:
            break
        time.sleep(0.1)
    else:
        notes.append("shadow: not measured: shadowing isn't available yet (strangler accepted `shadow: "
                     "{sample: 1.0}` but no copy reached the shadow upstream; log: "
                     f"{tail(tmp / 'strangler-shadow.log', 5)!r})")
        fleet.stop(pid)
        return None
    log("shadowing works: copies reach the shadow upstream")
    variants.append(Variant("strangler+shadow", port, pid))
    return ShadowProbe("strangler+shadow", shadow_port)

