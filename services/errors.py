"""Domain errors and the one table that maps them to HTTP responses (docs/API.md, Errors).

Handlers and repos raise these; :func:`error_middleware` in ``services/http.py`` is the only place that
turns them into responses. Every body has the same shape: ``{"error":{"code":..,"message":..}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422 ``fields`` list."""

    field: str
    message: str


class ApiError(Exception):
    """Base of every error a client may see; subclasses fix status and code."""

    status = 500
    code = "internal"
    default_message = "internal server error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message

    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (WWW-Authenticate, Retry-After)."""
        return {}

    def body(self) -> bytes:
        """The compact JSON error document."""
        return orjson.dumps({"error": {"code": self.code, "message": self.message}})


class BadRequest(ApiError):
    """A request the HTTP parser refuses (see services/wire.py)."""

    status, code, default_message = 400, "bad_request", "malformed HTTP request"


class InvalidJson(ApiError):
    status, code, default_message = 400, "invalid_json", "request body is not valid JSON"


class UpgradeRequired(ApiError):
    status, code, default_message = 426, "upgrade_required", "this endpoint only speaks WebSocket"

    def headers(self) -> dict[str, str]:
        return {"Upgrade": "websocket"}


class Unauthorized(ApiError):
    status, code, default_message = 401, "unauthorized", "missing or invalid access token"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class InvalidCredentials(ApiError):
    status, code, default_message = 401, "invalid_credentials", "invalid email or password"


class InvalidRefreshToken(ApiError):
    status, code, default_message = 401, "invalid_token", "refresh token is invalid or expired"


class Forbidden(ApiError):
    status, code, default_message = 403, "forbidden", "forbidden"


class NotFound(ApiError):
    status, code, default_message = 404, "not_found", "route not found"


class Conflict(ApiError):
    status, code, default_message = 409, "conflict", "email already registered"


class PayloadTooLarge(ApiError):
    status, code, default_message = 413, "payload_too_large", "request body exceeds 102400 bytes"


class UnsupportedMediaType(ApiError):
    status, code, default_message = 415, "unsupported_media_type", "Content-Type must be application/json"


class HeadersTooLarge(ApiError):
    status, code, default_message = 431, "header_too_large", "request headers exceed 65535 bytes"


class ValidationFailed(ApiError):
    status, code, default_message = 422, "validation_failed", "request validation failed"

    def __init__(self, fields: list[FieldError]) -> None:
        super().__init__()
        self.fields = fields

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "code": self.code,
                    "message": self.message,
                    "fields": [{"field": f.field, "message": f.message} for f in self.fields],
                }
            }
        )


class RateLimited(ApiError):
    status, code, default_message = 429, "rate_limited", "too many login attempts, try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Internal(ApiError):
    status, code, default_message = 500, "internal", "internal server error"


ROUTE_NOT_FOUND = "route not found"
USER_NOT_FOUND = "user not found"
POST_NOT_FOUND = "post not found"
NOT_YOUR_USER = "you may only change your own user"
NOT_YOUR_POST = "you may only change your own posts"
BAD_DRY_RUN = "invalid dry-run signature"
NO_CONTENT_ENCODING = "Content-Encoding is not supported; send the body uncompressed"
