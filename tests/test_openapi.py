"""services/openapi.json: a valid OpenAPI 3.1 document that describes exactly the API of docs/API.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "services" / "openapi.json"
API_MD = ROOT / "docs" / "API.md"

# A row of the endpoint table: "| GET /api/v1/users/{id} | bearer, self | name, email, password ... |"
ROW = re.compile(r"^\|\s*(GET|POST|PATCH|PUT|DELETE)\s+(/\S*)\s*\|\s*([^|]*)\|\s*([^|]*)\|")
FIELD = re.compile(r"^[a-z_]+$")


def endpoint_table() -> list[tuple[str, str, str, list[str]]]:
    """(method, path, auth, declared body fields) for every row of docs/API.md's endpoint table."""
    rows = []
    for line in API_MD.read_text(encoding="utf-8").splitlines():
        if m := ROW.match(line):
            method, path, auth, body = m.group(1), m.group(2), m.group(3).strip(), m.group(4)
            if body.strip().startswith("query") or "ignored" in body:
                fields = []
            else:
                words = [w.strip() for w in re.sub(r"\(.*?\)", "", body).split(",")]
                fields = [w for w in words if FIELD.match(w)]
            rows.append((method.lower(), path, auth, fields))
    return rows


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOC.read_text(encoding="utf-8"))
    return loaded


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow one local $ref."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_document_is_valid_openapi_31(spec: dict[str, Any]) -> None:
    """The document passes the OpenAPI 3.1 validator."""
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


def test_document_is_ascii_json() -> None:
    """The file is ASCII, so both services serve it compact with identical bytes."""
    DOC.read_bytes().decode("ascii")


def test_table_parses_every_endpoint() -> None:
    """The docs table yields the 22 endpoints, so the comparisons below cannot pass vacuously."""
    rows = endpoint_table()
    assert len(rows) == 22
    assert ("post", "/api/v1/auth/register", "-", ["email", "password", "name"]) in rows


def test_paths_match_the_endpoint_table(spec: dict[str, Any]) -> None:
    """Every route of docs/API.md is in the document, and the document has no route the docs lack."""
    documented = {(method, path) for method, path, _, _ in endpoint_table()}
    described = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert documented == described


def test_bearer_endpoints_declare_security(spec: dict[str, Any]) -> None:
    """Exactly the endpoints marked bearer in the docs require the bearer scheme and document 401."""
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for method, path, auth, _ in endpoint_table():
        op = spec["paths"][path][method]
        if auth.startswith("bearer"):
            assert op.get("security") == [{"bearerAuth": []}], (method, path)
            assert "401" in op["responses"], (method, path)
        else:
            assert "security" not in op, (method, path)


def test_request_bodies_list_the_declared_fields_in_order(spec: dict[str, Any]) -> None:
    """Each body schema has the docs' fields in the docs' order and refuses unknown fields."""
    for method, path, _, fields in endpoint_table():
        op = spec["paths"][path][method]
        if not fields:
            assert "requestBody" not in op, (method, path)
            continue
        schema = resolve(spec, op["requestBody"]["content"]["application/json"]["schema"])
        assert list(schema["properties"]) == fields, (method, path)
        assert schema["additionalProperties"] is False
        for code in ("400", "413", "415", "422"):
            assert code in op["responses"], (method, path, code)


def test_error_schema_has_the_contract_shape(spec: dict[str, Any]) -> None:
    """The error schema is {"error":{code,message[,fields]}} with every code of the docs' table."""
    error = spec["components"]["schemas"]["Error"]["properties"]["error"]
    assert list(error["properties"]) == ["code", "message", "fields"]
    table_codes = set(re.findall(r"^\| \d{3} \| `([a-z_]+)` \|", API_MD.read_text(encoding="utf-8"), re.M))
    assert set(error["properties"]["code"]["enum"]) == table_codes


def test_constraints_match_the_validation_rules(spec: dict[str, Any]) -> None:
    """Length limits and patterns in the document are the ones docs/API.md validates."""
    schemas = spec["components"]["schemas"]
    new_user = schemas["NewUser"]["properties"]
    assert (new_user["password"]["minLength"], new_user["password"]["maxLength"]) == (8, 128)
    assert (new_user["name"]["minLength"], new_user["name"]["maxLength"]) == (1, 100)
    assert new_user["email"]["maxLength"] == 254
    assert new_user["email"]["pattern"] == r"^[!-?A-~]+@[!-?A-~]+\.[!-?A-~]+$"
    new_post = schemas["NewPost"]["properties"]
    assert (new_post["title"]["minLength"], new_post["title"]["maxLength"]) == (1, 200)
    assert (new_post["body"]["minLength"], new_post["body"]["maxLength"]) == (1, 10000)
    limit = spec["components"]["parameters"]["Limit"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 100, 20)
    assert spec["components"]["parameters"]["UserId"]["schema"]["pattern"] == "^[1-9][0-9]{0,17}$"
