"""Turn routes.yaml text into validated value objects, reporting every error with file, line and key.

The file is composed (not loaded) with PyYAML's SafeLoader so each node keeps its line; values are
read through ``routes_fields.Reader``, which records errors and carries on. Cross-route checks (ties,
unreachable routes) run in ``proxy.routing.table`` over the routes that validated.
"""

from __future__ import annotations

import math
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import yaml

from proxy.routing import jsonpath, paths
from proxy.routing.fields import Fields, Reader
from proxy.routing.model import (
    AUTO,
    BreakerSpec,
    CompareRules,
    ConfigError,
    FallbackSpec,
    RolloutPlan,
    Route,
    ShadowSettings,
    ShadowSpec,
    UpstreamSpec,
)
from proxy.routing.plan import PlanParts, merge, read_plan
from proxy.routing.resilience import read_breaker, read_fallback, resolve
from proxy.routing.template import Template, TemplateError, parse_template

__all__ = ["UPSTREAM_NAMES", "Document", "read_document"]

# Shadowing compares control (legacy) with candidate (new), so exactly these two backends exist.
UPSTREAM_NAMES = ("legacy", "new")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_METHOD = re.compile(r"[A-Z][A-Z_-]*")
_HOST = re.compile(r"[A-Za-z0-9._-]+")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOP = {
    "upstreams": True,
    "default": False,
    "shadow": False,
    "rollout": False,
    "fallback": False,
    "circuit_breaker": False,
    "routes": False,
}
_UPSTREAM = {
    "url": True,
    "connect_timeout": False,
    "timeout": False,
    "pool_size": False,
    "host": False,
    "ca_file": False,
}
_HOST_MODES = ("client", "upstream")
_SHADOW = {
    "queue": False,
    "concurrency": False,
    "timeout": False,
    "body_cap": False,
    "aa_sample": False,
    "redact": False,
    "personal": False,
    "min_compared": False,
    "match_threshold": False,
    "latency_ratio": False,
    "ready_min_count": False,
    "ready_min_s": False,
    "ready_margin": False,
}
_ROUTE = {
    "name": True,
    "match": True,
    "target": True,
    "shadow": False,
    "compare": False,
    "limits": False,
    "fallback": False,
    "circuit_breaker": False,
    "rollout": False,
}
_LIMITS = {"max_body": False}
MAX_BODY_LIMIT = 1 << 40  # 1 TiB: above any sane request body; 0 means no limit
_MATCH = {"methods": False, "path": True}
_ROUTE_SHADOW = {"sample": False, "writes": False, "timeout": False}
_COMPARE = {
    "ignore": False,
    "sets": False,
    "tolerance": False,
    "null_equals_missing": False,
    "headers": False,
    "generated": False,
}


@dataclass
class Document:
    """What a routes file says, before the routes are compiled; ``reader.errors`` non-empty: invalid."""

    reader: Reader
    upstreams: dict[str, UpstreamSpec] = field(default_factory=dict)
    default: str = "legacy"
    default_line: int = 0
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    # The top-level ``fallback:`` / ``circuit_breaker:`` defaults (None: off) for routes sending to new.
    fallback: FallbackSpec | None = None
    breaker: BreakerSpec | None = None
    # (route, template, index in the file); only routes that validated completely.
    routes: list[tuple[Route, Template, int]] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)  # route name -> line, for duplicate checks
    # The top-level ``rollout:`` defaults (None: not given, or invalid: then ``rollout_given`` is True).
    rollout: PlanParts | None = None
    rollout_given: bool = False


def read_document(text: str, filename: str) -> Document:
    """Parse and validate everything that can be checked one key at a time."""
    doc = Document(Reader(filename))
    reader = doc.reader
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        source = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
        reader.errors.append(_yaml_error(filename, line, exc, source))
        return doc
    if root is None:
        reader.errors.append(_yaml_error(filename, 1, None, ""))
        return doc
    top = reader.mapping(root, "", _TOP)
    if top is None:
        return doc
    if "upstreams" in top.nodes:
        _upstreams(doc, top.nodes["upstreams"])
    if "default" in top.nodes:
        doc.default_line = top.line("default")
        doc.default = top.get("default", lambda n, k: reader.string(n, k, _known_upstream), "legacy")
    doc.shadow = _shadow_settings(reader, top.nodes["shadow"]) if "shadow" in top.nodes else ShadowSettings()
    new_spec = doc.upstreams.get("new")
    doc_new_timeout = new_spec.total_timeout if new_spec is not None else None
    if "fallback" in top.nodes:
        doc.fallback, _ = read_fallback(reader, top.nodes["fallback"], "fallback", None, doc_new_timeout)
    if "circuit_breaker" in top.nodes:
        doc.breaker, _ = read_breaker(reader, top.nodes["circuit_breaker"], "circuit_breaker", None)
    if "rollout" in top.nodes:  # before the routes, which merge their own over it
        doc.rollout_given = True
        doc.rollout = read_plan(reader, top.nodes["rollout"], "rollout")
    if "routes" in top.nodes:
        node = top.nodes["routes"]
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                _route(doc, item, index)
        elif not (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            reader.error(node, "routes", "must be a list of routes (each with name, match and target)")
    return doc


def _yaml_error(filename: str, line: int, exc: yaml.MarkedYAMLError | None, source: str) -> ConfigError:
    if exc is None:
        return ConfigError(
            filename, line, "yaml", "the file is empty: it needs at least 'upstreams:' (legacy, new)"
        )
    what = " ".join(part for part in (exc.context, exc.problem) if part)
    hint = "fix the syntax on or just before this line"
    if re.search(r"\{[^{}]*\bpath:\s*[^\s\"'][^,}]*\{", source):
        # A classic: in a flow mapping, the braces of /users/{id} open a nested mapping.
        hint = 'inside { ... } quote a path template that has braces: path: "/users/{id}"'
    return ConfigError(filename, line, "yaml", f"not valid YAML: {what}; {hint}")


def _known_upstream(name: str) -> str | None:
    if name in UPSTREAM_NAMES:
        return None
    return f"unknown upstream {name!r} (known: {', '.join(UPSTREAM_NAMES)})"


def _upstreams(doc: Document, node: yaml.Node) -> None:
    reader = doc.reader
    fields = reader.mapping(node, "upstreams", {name: True for name in UPSTREAM_NAMES})
    if fields is None:
        return
    for name, value in fields.nodes.items():
        spec = reader.mapping(value, f"upstreams.{name}", _UPSTREAM)
        if spec is None:
            continue
        parsed = spec.get("url", lambda n, k: _url(reader, n, k), None)
        connect = spec.get("connect_timeout", lambda n, k: reader.number(n, k, 0, 3600, True), 1.0)
        total = spec.get("timeout", lambda n, k: reader.number(n, k, 0, 86400, True), 30.0)
        pool = spec.get("pool_size", lambda n, k: reader.integer(n, k, 1, 10000), 64)
        host_mode = spec.get("host", lambda n, k: reader.string(n, k, _host_mode), "client")
        ca_file = spec.get("ca_file", lambda n, k: reader.string(n, k, _ca_file), None)
        if ca_file is not None and parsed is not None and parsed[0] != "https":
            problem = "applies to https upstreams only; remove it"
            reader.error(spec.nodes["ca_file"], spec.sub("ca_file"), problem)
        if parsed is not None and spec.ok:
            scheme, url, host, port, base = parsed
            doc.upstreams[name] = UpstreamSpec(
                name, url, scheme, host, port, base, connect, total, pool, host_mode, ca_file
            )


def _host_mode(value: str) -> str | None:
    if value in _HOST_MODES:
        return None
    return f"must be 'client' (send the client's Host) or 'upstream' (the upstream's host); got {value!r}"


def _ca_file(path: str) -> str | None:
    # Loaded here, once, so that a missing or malformed bundle is a load error naming the key, not a
    # 502 on the first request.
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        return f"no such file: {path!r} (a PEM bundle of the CA certificates that sign the upstream's)"
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load {path!r} as a PEM CA bundle: {exc}"
    return None


def _url(reader: Reader, node: yaml.Node, key: str) -> tuple[str, str, str, int, str] | None:
    text = reader.string(node, key)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        problem = f"must be an http:// URL (or https://) such as http://127.0.0.1:3000; got {text!r}"
    elif not parts.hostname:
        problem = f"has no host: write {parts.scheme}://HOST[:PORT][/base]; got {text!r}"
    elif parts.username is not None or parts.password is not None:
        problem = "must not carry credentials (user:password@)"
    elif parts.query or parts.fragment or text.endswith(("?", "#")):
        problem = "must not have a query or fragment; only an optional base path"
    elif _HOST.fullmatch(parts.hostname) is None and not parts.netloc.startswith("["):
        problem = f"has an invalid host {parts.hostname!r}: use a DNS name or an IP address"
    elif not text.isascii():
        problem = "must be ASCII: percent-encode other characters in the base path"
    else:
        problem = None
    if problem is not None:
        reader.error(node, key, problem)
        return None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        reader.error(node, key, f"has an invalid port (1-65535 expected); got {text!r}")
        return None
    base = parts.path.rstrip("/")
    if base:
        try:
            canonical, _ = paths.canonicalise(base.encode("ascii"))
        except paths.BadPath as exc:
            reader.error(node, key, f"base path {base!r} is refused: {exc.reason}")
            return None
        base = canonical
    return parts.scheme, text, parts.hostname or "", port or (443 if parts.scheme == "https" else 80), base


def _shadow_settings(reader: Reader, node: yaml.Node) -> ShadowSettings:
    fields = reader.mapping(node, "shadow", _SHADOW)
    base = ShadowSettings()
    if fields is None:
        return base
    threshold = fields.get("match_threshold", lambda n, k: reader.number(n, k, 0, 1), base.match_threshold)
    margin = fields.get("ready_margin", lambda n, k: reader.number(n, k, 0, 1), base.ready_margin)
    if margin > 0 and margin >= threshold and "ready_margin" in fields.nodes:
        reader.error(
            fields.nodes["ready_margin"], fields.sub("ready_margin"),
            f"must be below match_threshold ({threshold:g}): a READY route is kept down to match_threshold "
            "- ready_margin",
        )  # fmt: skip
    return ShadowSettings(
        queue=fields.get("queue", lambda n, k: reader.integer(n, k, 1, 10_000_000), base.queue),
        concurrency=fields.get(
            "concurrency", lambda n, k: reader.integer(n, k, 1, 100_000), base.concurrency
        ),
        timeout=fields.get("timeout", lambda n, k: reader.number(n, k, 0, 3600, True), base.timeout),
        body_cap=fields.get("body_cap", lambda n, k: reader.integer(n, k, 0, 1 << 30), base.body_cap),
        aa_sample=fields.get("aa_sample", lambda n, k: reader.number(n, k, 0, 1), base.aa_sample),
        redact=fields.get("redact", lambda n, k: reader.strings(n, k), base.redact),
        personal=fields.get("personal", lambda n, k: reader.strings(n, k), base.personal),
        min_compared=fields.get(
            "min_compared", lambda n, k: reader.integer(n, k, 1, 1 << 31), base.min_compared
        ),
        match_threshold=threshold,
        latency_ratio=fields.get(
            "latency_ratio", lambda n, k: reader.number(n, k, 0, 1000), base.latency_ratio
        ),
        ready_min_count=fields.get(
            "ready_min_count", lambda n, k: reader.integer(n, k, 0, 1 << 31), base.ready_min_count
        ),
        ready_min_s=fields.get("ready_min_s", lambda n, k: reader.number(n, k, 0, 86400), base.ready_min_s),
        ready_margin=margin,
    )


def _route(doc: Document, node: yaml.Node, index: int) -> None:
    reader = doc.reader
    key = f"routes[{index}]"
    fields = reader.mapping(node, key, _ROUTE)
    if fields is None:
        return
    name = fields.get("name", lambda n, k: reader.string(n, k, _route_name), "")
    target = fields.get("target", lambda n, k: reader.string(n, k, _route_target), "")
    template, methods = _match(reader, fields)
    shadow = None
    if "shadow" in fields.nodes:
        shadow = _route_shadow(reader, fields, target, doc.shadow.timeout)
        fields.ok = fields.ok and shadow is not None
    compare: CompareRules | None = CompareRules()
    if "compare" in fields.nodes:
        compare = _compare(reader, fields.nodes["compare"], fields.sub("compare"))
    max_body = None
    if "limits" in fields.nodes:
        limits = reader.mapping(fields.nodes["limits"], fields.sub("limits"), _LIMITS)
        if limits is None:
            fields.ok = False
        else:
            max_body = limits.get("max_body", lambda n, k: reader.integer(n, k, 0, MAX_BODY_LIMIT), None)
            fields.ok = fields.ok and limits.ok
    fallback, breaker = _resilience(doc, fields, target)
    rollout = _route_rollout(doc, fields, target)
    if "rollout" in fields.nodes or target == AUTO:
        fields.ok = fields.ok and rollout is not None
    if name in doc.names:
        message = f"duplicate route name {name!r} (first on line {doc.names[name]})"
        reader.error(fields.nodes["name"], fields.sub("name"), message)
        return
    if name:
        doc.names[name] = node.start_mark.line + 1
    if fields.ok and template is not None and compare is not None:
        line = node.start_mark.line + 1
        route = Route(
            name, methods, template.text, target, shadow, compare, line, max_body, rollout,
            fallback=fallback, breaker=breaker,
        )  # fmt: skip
        doc.routes.append((route, template, index))


def _resilience(
    doc: Document, fields: Fields, target: str
) -> tuple[FallbackSpec | None, BreakerSpec | None]:
    """A route's fallback and breaker: its own keys over the top-level defaults (`routing.resilience`)."""
    reader = doc.reader
    own_fallback: FallbackSpec | None = None
    own_breaker: BreakerSpec | None = None
    if "fallback" in fields.nodes:
        new_spec = doc.upstreams.get("new")
        new_timeout = new_spec.total_timeout if new_spec is not None else None
        own_fallback, ok = read_fallback(
            reader, fields.nodes["fallback"], fields.sub("fallback"), doc.fallback, new_timeout
        )
        fields.ok = fields.ok and ok
    if "circuit_breaker" in fields.nodes:
        node = fields.nodes["circuit_breaker"]
        own_breaker, ok = read_breaker(reader, node, fields.sub("circuit_breaker"), doc.breaker)
        fields.ok = fields.ok and ok
    return (
        resolve("fallback" in fields.nodes, own_fallback, doc.fallback, target),
        resolve("circuit_breaker" in fields.nodes, own_breaker, doc.breaker, target),
    )


def _route_target(name: str) -> str | None:
    if name == AUTO:
        return None
    problem = _known_upstream(name)
    return f"{problem[:-1]}; or auto, for the autopilot's rollout plan)" if problem else None


def _route_rollout(doc: Document, route: Fields, target: str) -> RolloutPlan | None:
    """The route's plan: its own ``rollout:`` over the top-level defaults. Kept (validated, inactive) on
    a route whose target is set by hand: ``legacy`` or ``new`` overrides any plan."""
    reader = doc.reader
    defaults = doc.rollout
    if "rollout" in route.nodes:
        own = read_plan(reader, route.nodes["rollout"], route.sub("rollout"))
        if own is None:
            return None
        return (merge(defaults, own) if defaults is not None else own).plan()
    if target != AUTO:
        return None  # no plan of its own: the defaults apply to auto routes only
    if defaults is None:
        if not doc.rollout_given:  # an invalid top-level rollout: was reported there
            reader.error(
                route.nodes["target"], route.sub("target"),
                "'auto' needs a rollout plan: add a top-level 'rollout:' (the defaults, e.g. "
                "{stages: [0, 1, 10, 50, 100], sticky: ip}) or a 'rollout:' on this route",
            )  # fmt: skip
        return None
    return defaults.plan()


def _route_name(name: str) -> str | None:
    if name == "default":
        return "the name 'default' is reserved for the built-in catch-all route; pick another"
    if _NAME.fullmatch(name) is None:
        return (
            f"route name {name!r} must be letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return None


def _match(reader: Reader, route: Fields) -> tuple[Template | None, frozenset[str] | None]:
    node = route.nodes.get("match")
    fields = reader.mapping(node, route.sub("match"), _MATCH) if node is not None else None
    if fields is None:
        route.ok = False
        return None, None
    methods = fields.get("methods", lambda n, k: reader.strings(n, k, _method, empty_ok=False), None)
    template = None
    path_node = fields.nodes.get("path")
    if path_node is not None:
        text = reader.string(path_node, fields.sub("path"))
        if text is not None:
            try:
                template = parse_template(text)
            except TemplateError as exc:
                reader.error(path_node, fields.sub("path"), str(exc))
    route.ok = route.ok and fields.ok and template is not None
    if methods is None:
        return template, None
    effective = set(methods) | ({"HEAD"} if "GET" in methods else set())
    return template, frozenset(effective)


def _method(method: str) -> str | None:
    if _METHOD.fullmatch(method) is None:
        hint = f"; write {method.upper()!r}" if _METHOD.fullmatch(method.upper()) else ""
        return f"method {method!r} must be an upper-case token such as GET or POST{hint}"
    return None


def _route_shadow(reader: Reader, route: Fields, target: str, default_timeout: float) -> ShadowSpec | None:
    node = route.nodes["shadow"]
    fields = reader.mapping(node, route.sub("shadow"), _ROUTE_SHADOW)
    if fields is None:
        return None
    sample = fields.get("sample", lambda n, k: reader.number(n, k, 0, 1), 1.0)
    writes = fields.get("writes", reader.boolean, False)
    timeout = fields.get("timeout", lambda n, k: reader.number(n, k, 0, 3600, True), default_timeout)
    if writes and target == "new":
        # The shadow copy goes to the other side; legacy has no dry run, so a write there would be real.
        reader.error(
            fields.nodes["writes"],
            fields.sub("writes"),
            "writes cannot be shadowed for a route served by 'new': the copy would go to legacy, which has "
            "no dry run; set writes: false (reads are still shadowed)",
        )
        return None
    return ShadowSpec(sample, writes, timeout) if fields.ok else None


def _json_path(path: str) -> str | None:
    try:
        jsonpath.parse_path(path)
    except jsonpath.JsonPathError as exc:
        return str(exc)
    return None


def _header(name: str) -> str | None:
    return None if _HEADER.fullmatch(name) else f"{name!r} is not a valid header name"


def _compare(reader: Reader, node: yaml.Node, key: str) -> CompareRules | None:
    fields = reader.mapping(node, key, _COMPARE)
    if fields is None:
        return None
    base = CompareRules()
    rules = CompareRules(
        ignore=fields.get("ignore", lambda n, k: reader.strings(n, k, _json_path), base.ignore),
        sets=fields.get("sets", lambda n, k: reader.strings(n, k, _json_path), base.sets),
        tolerance=fields.get("tolerance", lambda n, k: reader.number(n, k, 0, math.inf), base.tolerance),
        null_equals_missing=fields.get("null_equals_missing", reader.boolean, base.null_equals_missing),
        generated=fields.get("generated", lambda n, k: reader.strings(n, k, _json_path), base.generated),
        headers=tuple(
            h.lower() for h in fields.get("headers", lambda n, k: reader.strings(n, k, _header), base.headers)
        ),
    )
    if len(set(rules.headers)) != len(rules.headers):
        reader.error(
            fields.nodes["headers"], fields.sub("headers"), "lists a header twice (names ignore case)"
        )
        return None
    return rules if fields.ok else None
