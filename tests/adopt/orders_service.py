"""Another team's new Python service: the orders endpoints of tests/routing/orders_app, in Starlette.

Written the way docs/ADOPTING.md tells a team to: the ASGI dry-run middleware verifies the gateway's
signed copies of writes, and a dry run's work is done in a transaction that is rolled back. The
"database" is in memory (a dict seeded like the Express app's store), its transaction a snapshot restored
on rollback. Run it with ``python -m uvicorn orders_service:app --port N`` from this folder, with
STRANGLER_DRY_RUN_SECRET set as for the gateway.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.dryrun import MemoryNonceStore, Verifier
from proxy.dryrun.asgi import DryRunMiddleware, is_dry_run

SEED: list[dict[str, Any]] = [
    {"id": 1, "item": "book", "qty": 2, "status": "shipped"},
    {"id": 2, "item": "lamp", "qty": 1, "status": "open"},
    {"id": 3, "item": "desk", "qty": 1, "status": "open"},
]
# Express's res.json() says charset=utf-8; answering alike keeps the comparison about the data.
JSON = "application/json; charset=utf-8"


class Database:
    """Orders by id and the next id; `begin` / `rollback` stand in for a real database's transaction."""

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {o["id"]: dict(o) for o in SEED}
        self.next_id = len(SEED) + 1
        self.committed = 0  # writes that were kept (a dry run's are not)

    def begin(self) -> tuple[dict[int, dict[str, Any]], int, int]:
        return copy.deepcopy(self.orders), self.next_id, self.committed

    def rollback(self, snapshot: tuple[dict[int, dict[str, Any]], int, int]) -> None:
        self.orders, self.next_id, self.committed = snapshot


db = Database()


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers, media_type=JSON)


async def list_orders(request: Request) -> Response:
    return json({"items": list(db.orders.values())})


async def get_order(request: Request) -> Response:
    order = db.orders.get(request.path_params["orderId"])
    return json(order) if order else json({"error": "order not found"}, 404)


async def create_order(request: Request) -> Response:
    data = await request.json()
    snapshot = db.begin()
    order_id = db.next_id
    item, qty = str(data.get("item")), int(data.get("qty") or 1)
    order = {"id": order_id, "item": item, "qty": qty, "status": "open"}
    db.orders[order_id] = order
    db.next_id += 1
    db.committed += 1
    if is_dry_run(request.scope):
        db.rollback(snapshot)  # the answer is real; the order never existed
    # Absolute URLs from the Host the gateway forwards (the client's), as the Express app does.
    location = f"http://{request.headers['host']}/api/v2/orders/{order_id}"
    return json(order, 201, {"Location": location})


async def healthz(request: Request) -> Response:
    return json({"ok": True, "committed": db.committed, "orders": len(db.orders)})


verifier = Verifier(os.environ.get("STRANGLER_DRY_RUN_SECRET"), MemoryNonceStore())
app = Starlette(
    routes=[
        Route("/api/v2/orders", list_orders, methods=["GET"]),
        Route("/api/v2/orders", create_order, methods=["POST"]),
        Route("/api/v2/orders/{orderId:int}", get_order, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ],
    middleware=[Middleware(DryRunMiddleware, verifier=verifier)],
)
