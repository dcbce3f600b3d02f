"""Shapes of JSON values (proxy.shadow.shapes): JSON type plus format class, as a table."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from proxy.routing.table import CompareRules
from proxy.shadow.compare import Diff, Difference
from proxy.shadow.shapes import generated_shape, on_generated, same_shapes, shape_of, without


def _jwt(header: dict[str, Any], payload: dict[str, Any]) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}.c2lnbmF0dXJl"


JWT_A = _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "1", "exp": 1700000000, "iat": 1699990000})
JWT_B = _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "42", "exp": 1800000000, "iat": 1799990000})
JWT_OTHER_CLAIMS = _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "1", "exp": 1700000000, "jti": "x"})


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (7, "integer"),
        (0, "integer"),
        (7.5, "number"),
        (True, "boolean"),
        (None, "null"),
        ([1], "array"),
        ({"a": 1}, "object"),
        ("Alice", "string"),
        ("hello world, this is a title 123", "string"),  # spaces: not a token
        ("0b5f8a0e-7c1d-4b7e-9a31-2f0f1c7d9e11", "uuid"),
        ("2026-12-06T18:14:14.123Z", "timestamp(s,3,Z)"),
        ("2026-12-06T18:14:14Z", "timestamp(s,0,Z)"),
        ("2026-12-06T18:14:14.123456+00:00", "timestamp(s,6,+hh:mm)"),
        ("2026-12-06 18:14:14.123", "timestamp(s,3,none)"),
        ("2026-12-06T18:14+0100", "timestamp(min,0,+hhmm)"),
        ("2026-12-06", "date"),
        (JWT_A, "jwt(alg,typ;exp,iat,sub)"),
        (JWT_OTHER_CLAIMS, "jwt(alg,typ;exp,jti,sub)"),
        ("a.b.c", "string"),  # three dots-separated parts that are not JSON: not a JWT
        ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "token(hex,8)"),
        ("q3J8sd_-x0Kd93nPq3J8sd_-x0Kd93nPq3J8sd_-x0K", "token(b64url,5)"),
        ("q3J8sd+/x0Kd93nPq3J8sd+/x0Kd93nP==", "token(b64,4)"),
        ("abcdefghijklmnopqrstuvwxyz", "string"),  # no digit: a word, not a token
        ("qJsd_xKdnPqJsdxKdnPqJsd-xKdnPqJsdxKdnPqJsdx", "token(b64url,5)"),  # random, no digit: both cases
        ("Hello_World_Greeting", "token(b64url,2)"),  # 20+ characters, both cases: taken for a token
        ("abcdefghijklmnopqrstuvwxyzAb", "token(b64url,3)"),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "string"),  # one case, no digit
        ("short1", "string"),
    ],
)
def test_shape_of(value: Any, shape: str) -> None:
    """Each value gets its JSON type and format class."""
    assert shape_of(value) == shape


def test_same_shape_pairs() -> None:
    """Two generated values of the same shape compare equal by shape; a shape change does not."""
    assert shape_of(JWT_A) == shape_of(JWT_B)
    assert shape_of(JWT_A) != shape_of(JWT_OTHER_CLAIMS)
    assert shape_of("2026-12-06T18:14:14.123Z") == shape_of("2027-01-01T00:00:00.999Z")
    assert shape_of("2026-12-06T18:14:14.123Z") != shape_of("2026-12-06T18:14:14Z")
    assert shape_of(17) != shape_of("17")


@pytest.mark.parametrize(
    ("shape", "generated"),
    [("integer", True), ("uuid", True), ("timestamp(s,3,Z)", True), ("jwt(alg;sub)", True),
     ("token(hex,8)", True), ("string", False), ("number", False), ("boolean", False), ("date", False),
     ("object", False)],
)  # fmt: skip
def test_generated_shapes(shape: str, generated: bool) -> None:
    """Only ids, UUIDs, timestamps, JWTs and tokens can be learned as generated."""
    assert generated_shape(shape) is generated


def test_same_shapes_of_a_diff() -> None:
    """Per normalised path: all same-shape value changes, and which of them have a generated shape."""
    diff = Diff((
        Difference("$.items[0].id", "changed", 1, 2),
        Difference("$.items[1].id", "changed", 3, 4),
        Difference("$.title", "changed", "a", "b"),
        Difference("$.at", "changed", "2026-12-06T18:14:14.123Z", "2026-12-06T18:14:14Z"),
        Difference("$.n", "type", 1, "1"),
        Difference("$.x[0].id", "changed", 1, 2),
        Difference("$.x[1].id", "type", 1, "2"),
        Difference("status", "status", 200, 201),
    ))  # fmt: skip
    same, generated = same_shapes(diff)
    assert same == {"$.items[*].id", "$.title"}
    assert generated == {"$.items[*].id"}


def test_without_and_configured_generated() -> None:
    """without() drops paths (None when nothing is left); on_generated matches compare.generated."""
    diff = Diff((Difference("$.id", "changed", 1, 2), Difference("$.items[3].at", "changed", "a", "b")))
    assert without(diff, frozenset({"$.nothing"})) is diff
    rest = without(diff, frozenset({"$.id"}))
    assert rest is not None and rest.paths == ("$.items[*].at",)
    assert without(diff, frozenset({"$.id", "$.items[*].at"})) is None
    rules = CompareRules(generated=("$.id", "$.items[*].at"))
    assert on_generated("$.id", rules) and on_generated("$.items[*].at", rules)
    assert not on_generated("$.name", rules) and not on_generated("status", rules)
    assert not on_generated('$["odd key"]', rules) and not on_generated("$.id", CompareRules())
