"""services/openapi.json says what both services do: property-based, against each service.

Hypothesis generates request bodies (valid and invalid emails, lengths around every bound, U+0000, wrong
types, unknown keys). For each, the request-body schema predicts which fields the 422 names (a declared
field whose value fails its property schema or is missing, then every unknown key), and a body the schema
accepts must be created; the created resource must match its response schema. Deterministic
(`derandomize`) and bounded.

JSON Schema patterns are ECMA-262 regexes: ``$`` matches only at the very end. Python's ``re`` also
matches ``$`` before a final newline, so the validator here applies patterns with ECMA's ``$``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contract_kit import Account, Api, compact
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC = Path(__file__).resolve().parents[2] / "services" / "openapi.json"
SPEC: dict[str, Any] = json.loads(DOC.read_text(encoding="utf-8"))
BASE = "urn:strangler:openapi"
EXAMPLES = settings(max_examples=25, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # ECMA-262 `$` (no multiline flag) is the end of input; Python's `\Z` is that.
    if isinstance(instance, str) and not re.search(re.sub(r"(?<!\\)\$$", r"\\Z", pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})
REGISTRY: Registry[Any] = Registry().with_resource(BASE, Resource.from_contents(SPEC, DRAFT202012))


def is_valid(pointer: str, value: Any) -> bool:
    """Does `value` satisfy the schema at `pointer` (e.g. components/schemas/NewUser/properties/email)?"""
    validator = EcmaValidator({"$ref": f"{BASE}#/{pointer}"}, registry=REGISTRY,
                              format_checker=Draft202012Validator.FORMAT_CHECKER)
    return bool(validator.is_valid(value))


def expected_fields(schema_name: str, body: dict[str, Any], *, partial: bool) -> list[str]:
    """The fields a 422 must name, as the schema sees them: declared order, then unknown keys sorted."""
    schema = SPEC["components"]["schemas"][schema_name]
    required = set(schema.get("required", ()))
    bad = []
    for field in schema["properties"]:
        if field not in body:
            if field in required and not partial:
                bad.append(field)
        elif not is_valid(f"components/schemas/{schema_name}/properties/{field}", body[field]):
            bad.append(field)
    return bad + sorted(k for k in body if k not in schema["properties"])


# --- strategies: values near every rule of the contract ---

NUL_TEXT = st.builds(lambda a, b: a + "\x00" + b, st.text(max_size=5), st.text(max_size=5))
WRONG_TYPE = st.one_of(st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))
EMAIL_CHAR = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="@")


def _email(local: str, domain: str, tld: str) -> str:
    return f"{local}@{domain}.{tld}"


EMAILS = st.one_of(
    st.builds(_email, *(st.text(EMAIL_CHAR, min_size=1, max_size=n) for n in (8, 8, 4))),
    st.builds(lambda e: e + "\n", st.just("nl@example.com")),  # ECMA `$`: a final newline is not allowed
    st.just("a" * 243 + "@example.com"), st.just("a" * 242 + "@example.com"),  # 255 and 254 characters
    st.text(max_size=12), NUL_TEXT,
    st.just("ü@example.com"), st.just("a b@example.com"), st.just("a@b"),
)


def _sized(low: int, high: int) -> st.SearchStrategy[str]:
    """Strings of lengths around the bounds [low, high], in code points, some beyond the BMP."""
    sizes = st.sampled_from(sorted({max(0, low - 1), low, high, high + 1}))
    chars = st.sampled_from(["x", "é", "\U0001f600", " ", "\n"])
    return st.builds(lambda n, c: c * n, sizes, chars)


def _text(low: int, high: int) -> st.SearchStrategy[Any]:
    return st.one_of(_sized(low, high), st.text(max_size=12), NUL_TEXT, WRONG_TYPE)


UNKNOWN = st.dictionaries(st.sampled_from(["extra", "Z", "é", "id", "email2"]), st.integers(), max_size=2)


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A body holding any subset of `fields` (each with a generated value) and maybe unknown keys."""
    parts = [st.one_of(st.just({}), value.map(lambda v, f=field: {f: v})) for field, value in fields.items()]
    return st.tuples(*parts, UNKNOWN).map(lambda ds: {k: v for d in ds for k, v in d.items()})


NEW_USER = bodies({"email": st.one_of(EMAILS, WRONG_TYPE), "password": _text(8, 128), "name": _text(1, 100)})
NEW_POST = bodies({"title": _text(1, 200), "body": _text(1, 10000)})


def check(r: Any, schema_name: str, body: dict[str, Any], response_schema: str, *,
          partial: bool = False) -> None:
    """The answer is what the schema predicts: 422 naming exactly the bad fields, else created (or 409)."""
    fields = expected_fields(schema_name, body, partial=partial)
    if fields:
        assert r.status_code == 422, (body, fields, r.status_code, r.text)
        assert [f["field"] for f in r.json()["error"]["fields"]] == fields, (body, r.text)
    elif partial and not body:
        assert r.status_code == 422, (body, r.text)
    else:
        assert r.status_code in (200, 201, 409), (body, r.status_code, r.text)
        if r.status_code != 409:
            assert is_valid(f"components/schemas/{response_schema}", r.json()), r.text


def _formats(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            yield node["format"]
        for child in node.values():
            yield from _formats(child)
    elif isinstance(node, list):
        for child in node:
            yield from _formats(child)


def test_no_format_contradicts_the_contract() -> None:
    """No `format: email` (the services check the contract's pattern, which RFC 5322 does not match)."""
    assert "email" not in set(_formats(SPEC))


def test_schema_patterns_use_ecma_end_of_input() -> None:
    """The validator's `$` is ECMA's: the contract's email pattern refuses a trailing newline."""
    email = "components/schemas/NewUser/properties/email"
    assert is_valid(email, "a@example.com") and not is_valid(email, "a@example.com\n")
    assert not is_valid("components/schemas/NewPost/properties/title", "a\x00b")


@EXAMPLES
@given(body=NEW_USER)
def test_create_user_answers_as_the_schema_says(api: Api, body: dict[str, Any]) -> None:
    """POST /api/v1/users: 422 fields == the fields NewUser rejects; a NewUser-valid body is a User (201)."""
    r = api.post("/api/v1/users", content=compact(body), headers={"Content-Type": "application/json"})
    check(r, "NewUser", body, "User")


@EXAMPLES
@given(body=NEW_POST)
def test_create_post_answers_as_the_schema_says(api: Api, reader: Account, body: dict[str, Any]) -> None:
    """POST /api/v1/posts: 422 fields == the fields NewPost rejects; a NewPost-valid body is a Post (201)."""
    r = api.post("/api/v1/posts", content=compact(body), headers={"Content-Type": "application/json"},
                 token=reader.access_token)
    check(r, "NewPost", body, "Post")


@EXAMPLES
@given(body=bodies({"name": _text(1, 100), "password": _text(8, 128)}))
def test_patch_user_answers_as_the_schema_says(api: Api, body: dict[str, Any]) -> None:
    """PATCH /api/v1/users/{id} (own user): 422 fields == the fields UserPatch rejects; else a User."""
    me = _patcher(api)
    r = api.patch(f"/api/v1/users/{me.id}", content=compact(body),
                  headers={"Content-Type": "application/json"}, token=me.access_token)
    check(r, "UserPatch", body, "User", partial=True)


_PATCHERS: dict[str, Account] = {}


def _patcher(api: Api) -> Account:
    # One account per service for the whole property (a PATCH may change its name and password only).
    if api.name not in _PATCHERS:
        _PATCHERS[api.name] = api.register(name="Patcher")
    return _PATCHERS[api.name]
