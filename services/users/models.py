"""User representation and the request bodies users endpoints accept."""

from __future__ import annotations

from typing import Any

from services import validation as v
from services.db import iso

CREATE: v.Spec = (("email", v.email), ("password", v.password), ("name", v.name))
PATCH: v.Spec = (("name", v.name), ("email", v.email), ("password", v.password))
COLUMNS = f"id, email, name, {iso('created_at')}, {iso('updated_at')}"


def user_json(row: Any, name_suffix: str = "") -> dict[str, Any]:
    """``{"id","email","name","created_at","updated_at"}`` in the contract's key order.

    `name_suffix` is the test-only SERVICES_TEST_DIFF switch ("!"), empty otherwise.
    """
    return {
        "id": row["id"],
        "email": row["email"],
        "name": row["name"] + name_suffix,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
