"""Post representation and the request bodies posts endpoints accept."""

from __future__ import annotations

from typing import Any

from services import validation as v
from services.db import iso

CREATE: v.Spec = (("title", v.title), ("body", v.text_body))
PATCH: v.Spec = CREATE
COLUMNS = f"id, author_id, title, body, {iso('created_at')}, {iso('updated_at')}"


def post_json(row: Any, author_name: str | None) -> dict[str, Any]:
    """The contract's Post, with its author summary (null if the author vanished meanwhile)."""
    author_id = row["author_id"]
    return {
        "id": row["id"],
        "author_id": author_id,
        "title": row["title"],
        "body": row["body"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "author": None if author_name is None else {"id": author_id, "name": author_name},
    }
