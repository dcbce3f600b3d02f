"""`strangler routes discover --express`: real Node processes loading real Express 4 and 5 apps."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.routing.cli import check
from proxy.routing.discover import DiscoverError, discover_express
from proxy.routing.draft import build_draft
from proxy.routing.table import RouteTable, load_routes, parse_routes

ROOT = Path(__file__).resolve().parents[2]
LEGACY_APP = ROOT / "legacy" / "src" / "app.js"
ORDERS = Path(__file__).resolve().parent / "orders_app"
LEGACY_MODULES = ROOT / "legacy" / "node_modules"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs node (the repository's Node 20)")


def _routes(table: RouteTable) -> set[tuple[str, str]]:
    """(methods, path) of every route, methods as written ('*' for any), GET routes without HEAD."""
    out = set()
    for route in table.routes:
        methods = "*" if route.methods is None else ",".join(sorted(route.methods - {"HEAD"}) or ["HEAD"])
        out.add((methods, route.path))
    return out


def _api_md_endpoints() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "API.md").read_text()
    return re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) (/\S*) \|", text, flags=re.M)


def test_legacy_app_draft_holds_every_endpoint_of_api_md() -> None:
    """The example's Express 5 app, built by its factory around stubs, yields every documented endpoint."""
    app = discover_express(LEGACY_APP)
    draft = build_draft(app.endpoints, app.skipped)
    table = parse_routes(draft.render(), "draft.yaml")  # the round trip: the draft loads as it is
    documented = _api_md_endpoints()
    assert len(documented) >= 19
    assert _routes(table) == set(documented)
    for method, path in documented:
        concrete = path.replace("{id}", "7")
        match = table.match(method, concrete)
        assert match.route is not table.default and match.route.target == "legacy", (method, path)
    assert app.version.startswith("5.") and app.skipped == ()
    sources = {e.template: e.source for e in app.endpoints}
    assert re.fullmatch(r"src/routes/users\.js:\d+", sources["/api/v1/users/{id}/posts"] or "")


def test_orders_app_express4_nested_routers_optional_regex_wildcard_route_all() -> None:
    """Another team's Express 4 app: every form is translated or listed with the reason it is not."""
    app = discover_express(ORDERS / "src" / "app.js")
    assert app.version.startswith("4.")
    draft = build_draft(app.endpoints, app.skipped)
    table = parse_routes(draft.render(), "orders.yaml")
    assert _routes(table) == {
        ("GET", "/api/v2/orders"),
        ("POST", "/api/v2/orders"),
        ("GET", "/api/v2/orders/{orderId}"),  # :orderId(\d+): the constraint is noted, not checked
        ("PUT", "/api/v2/orders/{orderId}"),
        ("DELETE", "/api/v2/orders/{orderId}"),
        ("GET", "/api/v2/orders/search"),  # :status? is two routes
        ("GET", "/api/v2/orders/search/{status}"),
        ("GET", "/api/v2/orders/{orderId}/lines"),  # a router nested in a router
        ("PATCH", "/api/v2/orders/{orderId}/lines/{lineId}"),
        ("GET", "/api/v2/invoices/{invoiceId}"),  # router.route().get().patch()
        ("PATCH", "/api/v2/invoices/{invoiceId}"),
        ("GET", "/api/v2/invoices/{invoiceId}/pdf"),
        ("POST", "/api/v2/invoices/{invoiceId}/send"),  # a path array
        ("POST", "/api/v2/invoices/{invoiceId}/resend"),
        ("GET", "/admin/health"),  # a mounted sub-app
        ("POST", "/admin/reindex"),
        ("*", "/static/{rest*}"),  # express.static mounted at /static
        ("GET", "/status"),  # app.route() with get and head: one GET route (HEAD goes with it)
        ("*", "/webhooks/{provider}"),  # app.all
        ("GET", "/docs/{rest*}"),  # '*'
    }
    skipped = {s.express: s.reason for s in app.skipped}
    assert "regular-expression path" in skipped["/^\\/legacy-report-(\\d{4})$/"]
    assert "mixes text with a parameter" in skipped["/exports/:from-:to"]
    text = draft.render()
    assert "# GET /api/v2/orders/:orderId(\\d+) (src/routes/orders.js:8)" in text
    assert "note: the constraint (\\d+) on :orderId is not checked by the gateway" in text
    assert "# PATCH /api/v2/orders/:orderId/lines/:lineId (src/routes/orders.js:16)" in text
    assert "#   GET /exports/:from-:to (src/app.js:28): segment" in text


EXPRESS5_APP = """\
const fs = require('fs');
const http = require('http');
const express = require('express');
const app = express();
const products = express.Router();
products.get('/', (req, res) => res.json([]));
products.get('/:sku/reviews{/:page}', (req, res) => res.json(req.params));
products.get('/:sku{.:format}', (req, res) => res.json(req.params));
app.use('/catalog/products', products);
app.get('/assets/*path', (req, res) => res.end());
app.get('/files{/*rest}', (req, res) => res.end());
app.all('/hooks/:name', (req, res) => res.end());
app.route('/cart').get((req, res) => res.end()).delete((req, res) => res.end());
// Started at import, as many main files do: discovery must not serve.
app.listen(0, () => fs.writeFileSync(process.env.MARKER, 'listened'));
http.createServer(app).listen(0, () => fs.writeFileSync(process.env.MARKER, 'listened'));
"""


def test_express5_syntax_and_no_server_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Express 5 optional groups and named wildcards translate; the app's listen() binds nothing."""
    entry = tmp_path / "catalog.js"
    entry.write_text(EXPRESS5_APP)
    marker = tmp_path / "listened"
    monkeypatch.setenv("NODE_PATH", str(LEGACY_MODULES))
    monkeypatch.setenv("MARKER", str(marker))
    app = discover_express(entry)
    table = parse_routes(build_draft(app.endpoints, app.skipped).render(), "catalog.yaml")
    assert _routes(table) == {
        ("GET", "/catalog/products"),
        ("GET", "/catalog/products/{sku}/reviews"),
        ("GET", "/catalog/products/{sku}/reviews/{page}"),
        ("GET", "/assets/{path*}"),
        ("GET", "/files"),
        ("GET", "/files/{rest*}"),
        ("*", "/hooks/{name}"),
        ("GET", "/cart"),
        ("DELETE", "/cart"),
    }
    assert [s.express for s in app.skipped] == ["/catalog/products/:sku{.:format}"]
    assert not marker.exists()


def test_load_failures_say_what_happened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing file, a missing express, an app that exits and one that hangs are clear errors."""
    with pytest.raises(DiscoverError, match="no such file"):
        discover_express(tmp_path / "nope.js")
    bare = tmp_path / "bare.js"
    bare.write_text("require('express');\n")
    with pytest.raises(DiscoverError, match="cannot load express"):
        discover_express(bare)
    monkeypatch.setenv("NODE_PATH", str(LEGACY_MODULES))
    exits = tmp_path / "exits.js"
    exits.write_text("require('express');\nprocess.exit(2);\n")
    with pytest.raises(DiscoverError, match=r"the app called process\.exit\(2\) while loading"):
        discover_express(exits)
    late = tmp_path / "late.js"
    late.write_text("const app = require('express')();\napp.get('/a', () => {});\nprocess.exit(3);\n")
    found = discover_express(late)  # an app was made before the exit: it is read, with a warning
    assert [e.template for e in found.endpoints] == ["/a"]
    assert "process.exit(3)" in found.warnings[0]
    hangs = tmp_path / "hangs.js"
    hangs.write_text("require('express');\nfor (;;) {}\n")
    with pytest.raises(DiscoverError, match="longer than 2s"):
        discover_express(hangs, timeout=2)


def test_cli_writes_a_draft_that_routes_check_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`strangler routes discover --express ... --out` then `strangler routes check` on the result."""
    out = tmp_path / "routes.draft.yaml"
    code = main(["routes", "discover", "--express", str(ORDERS / "src" / "app.js"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0
    assert f"wrote {out}: 20 routes, all on legacy" in err
    assert "not expressible: /exports/:from-:to (src/app.js:28)" in err
    assert all(route.target == "legacy" for route in load_routes(out).routes)
    assert check(str(out)) == 0
    assert main(["routes", "discover"]) == 2
    assert "give --express" in capsys.readouterr().err


def test_template_errors_say_exactly_what_to_write() -> None:
    """Express-style paths in routes.yaml are refused with the path (or routes) to write instead."""
    base = 'upstreams: {legacy: {url: "http://a"}, new: {url: "http://b"}}\nroutes:\n'
    cases = {
        "/a/:id": "write parameters as {id}, not :id: the path is '/a/{id}'",
        "/a/:id/b/{x}": "the path is '/a/{id}/b/{x}'",
        "/a/:id?": "write 2 routes, with paths '/a' and '/a/{id}'",
        "/a/{id?}": "write 2 routes, with paths '/a' and '/a/{id}'",
        "/a/*rest": "write a final wildcard as {rest*}, not *rest: the path is '/a/{rest*}'",
        "/files*": "segment 'files*' mixes text with a parameter",
    }
    for path, want in cases.items():
        text = base + textwrap.indent(f'- {{name: r, match: {{path: "{path}"}}, target: new}}\n', "  ")
        with pytest.raises(Exception) as caught:
            parse_routes(text, "r.yaml")
        [error] = caught.value.errors  # type: ignore[attr-defined]
        assert (error.line, error.key) == (3, "routes[0].match.path")
        assert want in error.message, (path, error.message)


def test_an_es_module_app_is_imported(tmp_path: Path) -> None:
    """An app written as an ES module ("type": "module") is loaded with import() and read the same way."""
    (tmp_path / "node_modules").symlink_to(LEGACY_MODULES)
    (tmp_path / "package.json").write_text('{"type": "module"}\n')
    (tmp_path / "app.js").write_text(
        "import express from 'express';\n"
        "export const app = express();\n"
        "app.get('/shop/items/:id', (req, res) => res.end());\n"
    )
    app = discover_express(tmp_path / "app.js")
    assert [(e.template, e.source) for e in app.endpoints] == [("/shop/items/{id}", "app.js:3")]
