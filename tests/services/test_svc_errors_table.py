"""Every domain error maps to a row of docs/API.md's error table (none left unmapped or invented)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from services import errors

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def table() -> tuple[set[tuple[int, str]], set[str]]:
    """(status, code) pairs and messages of the contract's error table."""
    pairs, messages = set(), set()
    for line in API_MD.read_text().splitlines():
        match = re.fullmatch(r"\| (\d{3}) \| `(\w+)` \| (.*) \|", line)
        if match:
            pairs.add((int(match[1]), match[2]))
            messages.update(re.findall(r"`([^`]+)`", match[3]))
    return pairs, messages


def test_every_error_class_is_a_documented_status_and_code() -> None:
    """Each ApiError subclass has the status and code of a row in the table, and a documented message."""
    pairs, messages = table()
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ApiError)]
    assert len(classes) >= 13
    for cls in classes:
        if cls is errors.ApiError:
            continue
        assert (cls.status, cls.code) in pairs, cls.__name__
        # Forbidden is always raised with one of the module's message constants (checked below).
        if cls is not errors.Forbidden:
            assert cls.default_message in messages, cls.__name__


def test_every_message_constant_is_documented() -> None:
    """The messages handlers pass explicitly (not found / forbidden variants) are all in the table."""
    _, messages = table()
    constants = [
        v for k, v in vars(errors).items() if k.isupper() and k != "JSON_TYPE" and isinstance(v, str)
    ]
    assert len(constants) == 7
    assert set(constants) <= messages


def test_error_body_shape() -> None:
    """The body is {"error":{"code","message"}}, with fields only for 422, and headers where documented."""
    assert orjson.loads(errors.NotFound(errors.USER_NOT_FOUND).body()) == {
        "error": {"code": "not_found", "message": "user not found"}
    }
    failed = errors.ValidationFailed([errors.FieldError("a", "is required")])
    assert failed.body() == (
        b'{"error":{"code":"validation_failed","message":"request validation failed",'
        b'"fields":[{"field":"a","message":"is required"}]}}'
    )
    assert errors.Unauthorized().headers() == {"WWW-Authenticate": "Bearer"}
    assert errors.RateLimited(7).headers() == {"Retry-After": "7"}
