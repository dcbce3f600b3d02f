"""Auth request bodies and the Tokens representation."""

from __future__ import annotations

from typing import Any

from services import validation as v
from services.users.models import CREATE as USER_CREATE

REGISTER: v.Spec = USER_CREATE
LOGIN: v.Spec = (("email", v.any_string), ("password", v.any_string))
REFRESH: v.Spec = (("refresh_token", v.any_string),)


def tokens_json(access_token: str, expires_in: int, refresh_token: str) -> dict[str, Any]:
    """``{"access_token","token_type","expires_in","refresh_token"}``."""
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": refresh_token,
    }
