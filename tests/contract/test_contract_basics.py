"""Health, the OpenAPI document, routing rules and the headers every response carries (both services)."""

from __future__ import annotations

import re

import pytest
from contract_kit import JSON_CT, NOT_FOUND_ROUTE, UUID4, Account, Api, assert_json


def test_health_reports_ok_version_and_uptime(api: Api) -> None:
    """GET /health answers status ok, version 1.0.0 and a numeric uptime, compact and in key order."""
    r = api.get("/health")
    assert_json(r, 200)
    shape = rb'\{"status":"ok","version":"1\.0\.0","uptime_s":\d+(\.\d{1,3})?\}'
    assert re.fullmatch(shape, r.content), r.content


def test_ready_checks_database_and_redis(api: Api) -> None:
    """GET /health/ready pings both dependencies and reports each as ok."""
    r = api.get("/health/ready")
    assert_json(r, 200, b'{"status":"ok","checks":{"database":"ok","redis":"ok"}}')


def test_openapi_document_is_served(api: Api) -> None:
    """GET /openapi.json serves the OpenAPI document describing the documented endpoints."""
    doc = assert_json(api.get("/openapi.json"), 200)
    assert str(doc.get("openapi", "")).startswith("3.")
    for path in ("/api/v1/auth/register", "/api/v1/users/{id}", "/api/v1/posts/{id}"):
        assert path in doc["paths"], path


def test_request_id_is_echoed(api: Api) -> None:
    """A request's X-Request-Id comes back unchanged, on success and on errors."""
    for path in ("/health", "/api/v1/users/0", "/no/such/route"):
        r = api.get(path, headers={"X-Request-Id": "req-abc-123"})
        assert r.headers.get("x-request-id") == "req-abc-123", (path, r.headers)


def test_request_id_is_generated_when_absent(api: Api) -> None:
    """Without X-Request-Id (or with an empty one) each response carries a fresh UUID4."""
    first = api.get("/health").headers.get("x-request-id", "")
    second = api.get("/health", headers={"X-Request-Id": ""}).headers.get("x-request-id", "")
    assert UUID4.match(first) and UUID4.match(second), (first, second)
    assert first != second


def test_no_etag_and_no_powered_by(api: Api) -> None:
    """Responses carry neither ETag nor X-Powered-By, and JSON is served as utf-8 JSON."""
    r = api.get("/api/v1/users?limit=1")
    assert "etag" not in r.headers and "x-powered-by" not in r.headers, r.headers
    assert r.headers["content-type"] == JSON_CT


@pytest.mark.parametrize("path", ["/API/V1/USERS", "/Api/v1/Users/", "/api/v1/users/", "/HEALTH"])
def test_routing_is_case_insensitive_and_ignores_one_trailing_slash(api: Api, path: str) -> None:
    """Path matching ignores case and one trailing slash, as Express does."""
    assert api.get(path).status_code == 200


def test_case_insensitive_path_with_id(api: Api, reader: Account) -> None:
    """A mixed-case path with an id and a trailing slash reaches the same resource."""
    uid = reader.id
    plain = api.get(f"/api/v1/users/{uid}")
    odd = api.get(f"/API/v1/USERS/{uid}/")
    assert plain.status_code == odd.status_code == 200
    assert plain.content == odd.content


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/no/such/route"),
    ("PUT", "/api/v1/users"),
    ("DELETE", "/api/v1/users"),
    ("PUT", "/api/v1/posts/1"),
    ("POST", "/health"),
    ("GET", "/api/v1/auth/login"),
    ("GET", "/api/v1/users/1/posts/1"),
    ("GET", "/api/v1/users//"),
    ("GET", "/api/v1/%75sers"),
    ("OPTIONS", "/api/v1/users"),
    ("OPTIONS", "/health"),
])
def test_unknown_route_or_method_is_404_never_405(api: Api, method: str, path: str) -> None:
    """An unknown path or a method not served on a path answers 404 route not found."""
    r = api.request(method, path)
    assert_json(r, 404, NOT_FOUND_ROUTE)
    assert "allow" not in r.headers


def test_head_is_served_wherever_get_is(api: Api, reader: Account) -> None:
    """HEAD answers like GET (status and headers) without a body; HEAD on a POST-only path is 404."""
    for path in ("/health/ready", f"/api/v1/users/{reader.id}", "/api/v1/posts?limit=1"):
        get, head = api.get(path), api.request("HEAD", path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert api.request("HEAD", "/api/v1/auth/login").status_code == 404


def test_percent_encoded_id_is_decoded(api: Api, reader: Account) -> None:
    """Only the {id} segment is percent-decoded: %31 reaches user 1's route like a plain digit would."""
    digits = str(reader.id)
    encoded = "".join(f"%{ord(ch):02X}" for ch in digits)
    plain = api.get(f"/api/v1/users/{digits}")
    assert_json(api.get(f"/api/v1/users/{encoded}"), 200, plain.content)
