"""Differential: the identical request sent to both services must get the identical answer.

Status, content type, the headers that carry meaning and the body byte for byte, after the normaliser
(contract_kit.normalise) has replaced what legitimately differs: ids, timestamps, tokens, uptime and the
per-service emails. No expectations are written here; legacy is the reference and new must match it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx
import pytest
from contract_kit import Account, Api, access_claims, compact, make_jwt, normalise, strong_etag
from contract_stack import MUTANT, Stack

HEADERS = ("content-type", "www-authenticate", "retry-after", "x-request-id", "etag", "x-powered-by", "allow",
           "cache-control", "last-modified", "vary", "content-encoding", "access-control-allow-origin",
           "access-control-allow-credentials", "access-control-allow-methods", "access-control-allow-headers",
           "access-control-max-age", "access-control-expose-headers")
JSON = {"Content-Type": "application/json"}


@dataclass
class Ctx:
    """What a case needs on one service: its client, an owner account, someone else's account and post."""

    api: Api
    owner: Account
    other: Account
    other_post: int
    secret: str
    subs: dict[str, str] = field(default_factory=dict)

    def email(self, tag: str) -> str:
        """A fresh email that the normaliser maps to the same placeholder on both services."""
        value = f"diff-{secrets.token_hex(5)}@example.com"
        self.subs[value] = f"<{tag}>"
        return value


_OWNERS: dict[str, tuple[Account, Account, int]] = {}


@pytest.fixture
def ctx(stack: Stack) -> Iterator[Callable[[str], Ctx]]:
    """Build the context of one service; accounts are registered once per session per service."""
    made: list[Api] = []

    def build(name: str) -> Ctx:
        api = stack.api(name)
        made.append(api)
        if name not in _OWNERS:
            owner = api.register(name="Diff Owner")
            other = api.register(name="Diff Other")
            post = api.create_post(other, title="theirs", body="not yours")
            _OWNERS[name] = (owner, other, post["id"])
        owner, other, post_id = _OWNERS[name]
        c = Ctx(api, owner, other, post_id, stack.jwt_secret)
        c.subs.update({owner.email: "<owner>", other.email: "<other>"})
        return c

    yield build
    for api in made:
        api.close()


def token(c: Ctx) -> str:
    """A fresh access token for the owner (forged with the session secret, so no login is spent)."""
    return make_jwt(access_claims(c.owner.id), c.secret)


CASES: dict[str, Callable[[Ctx], httpx.Response]] = {
    "health": lambda c: c.api.get("/health"),
    "ready": lambda c: c.api.get("/health/ready"),
    "openapi": lambda c: c.api.get("/openapi.json"),
    "request_id_echo": lambda c: c.api.get("/api/v1/users/0", headers={"X-Request-Id": "diff-1"}),
    "users_page": lambda c: c.api.get("/api/v1/users?limit=3&offset=1"),
    "users_page_past_end": lambda c: c.api.get("/api/v1/users?offset=999999999"),
    "users_bad_query": lambda c: c.api.get("/api/v1/users?limit=abc&offset=-1&author_id=0"),
    "posts_page": lambda c: c.api.get("/api/v1/posts?limit=2"),
    "posts_bad_query": lambda c: c.api.get("/api/v1/posts?limit=101&offset=x&author_id=0"),
    "posts_limit_0": lambda c: c.api.get("/api/v1/posts?limit=0"),
    "posts_of_other": lambda c: c.api.get(f"/api/v1/users/{c.other.id}/posts"),
    "user_by_id": lambda c: c.api.get(f"/api/v1/users/{c.owner.id}"),
    "user_bad_id": lambda c: c.api.get("/api/v1/users/01"),
    "user_unknown_id": lambda c: c.api.get("/api/v1/users/999999999999"),
    "post_unknown_id": lambda c: c.api.get("/api/v1/posts/abc"),
    "route_unknown": lambda c: c.api.get("/api/v2/users"),
    "method_unknown": lambda c: c.api.request("PUT", "/api/v1/users/1"),
    "route_case_slash": lambda c: c.api.get(f"/API/V1/Users/{c.owner.id}/"),
    "register_ok": lambda c: c.api.post("/api/v1/auth/register", json_body={
        "email": c.email("new"), "password": "password123", "name": "Dïff"}),
    "register_conflict": lambda c: c.api.post("/api/v1/auth/register", json_body={
        "email": c.owner.email.upper(), "password": "password123", "name": "Dup"}),
    "register_empty": lambda c: c.api.post("/api/v1/auth/register", json_body={}),
    "register_types": lambda c: c.api.post("/api/v1/auth/register", json_body={
        "email": [], "password": 12345678, "name": {}, "b": 1, "a": 2}),
    "register_array": lambda c: c.api.post("/api/v1/auth/register", json_body=[1, 2]),
    "register_empty_body": lambda c: c.api.post("/api/v1/auth/register", content=b"", headers=JSON),
    "register_malformed": lambda c: c.api.post("/api/v1/auth/register", content=b'{"a":', headers=JSON),
    "register_text_plain": lambda c: c.api.post("/api/v1/auth/register", content=b"{}",
                                                headers={"Content-Type": "text/plain"}),
    "register_too_large": lambda c: c.api.post("/api/v1/auth/register", content=b" " * 102401, headers=JSON),
    "register_bom": lambda c: c.api.post("/api/v1/auth/register", content=b"\xef\xbb\xbf{}", headers=JSON),
    "login_wrong_password": lambda c: c.api.login(c.owner.email, "wrong password!"),
    "login_unknown": lambda c: c.api.login(c.email("ghost")),
    "login_invalid": lambda c: c.api.post("/api/v1/auth/login", json_body={"email": None, "extra": 1}),
    "me_no_token": lambda c: c.api.get("/api/v1/auth/me"),
    "me_garbage": lambda c: c.api.get("/api/v1/auth/me", headers={"Authorization": "Bearer x.y.z"}),
    "me_ok": lambda c: c.api.get("/api/v1/auth/me", token=token(c)),
    "me_sub_not_id": lambda c: c.api.get("/api/v1/auth/me", token=make_jwt(
        access_claims(c.owner.id, sub="1 OR 1=1"), c.secret)),
    "me_sub_number": lambda c: c.api.get("/api/v1/auth/me", token=make_jwt(
        access_claims(c.owner.id, sub=c.owner.id), c.secret)),
    "me_iat_missing": lambda c: c.api.get("/api/v1/auth/me", token=make_jwt(
        access_claims(c.owner.id, iat=None), c.secret)),
    "me_exp_string": lambda c: c.api.get("/api/v1/auth/me", token=make_jwt(
        access_claims(c.owner.id, exp="9999999999"), c.secret)),
    "me_two_spaces": lambda c: c.api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer  {token(c)}"}),
    "head_user": lambda c: c.api.request("HEAD", f"/api/v1/users/{c.owner.id}"),
    "options": lambda c: c.api.request("OPTIONS", "/api/v1/posts"),
    "duplicate_query": lambda c: c.api.get("/api/v1/users?limit=1&limit=2&offset=0&offset=0"),
    "encoded_literal": lambda c: c.api.get("/api/v1/u%73ers"),
    "encoded_id": lambda c: c.api.get("/api/v1/users/%31"),
    "bad_escape_id": lambda c: c.api.get("/api/v1/users/%zz"),
    "unicode_field_order": lambda c: c.api.post("/api/v1/users", json_body={
        "é": 1, "Z": 2, "a": 3, "email": "x@example.com", "password": "password123", "name": "n"}),
    "me_sub_unknown_user": lambda c: c.api.get("/api/v1/auth/me", token=make_jwt(
        access_claims(999999999999), c.secret)),
    "refresh_garbage": lambda c: c.api.post("/api/v1/auth/refresh", json_body={"refresh_token": "nope"}),
    "refresh_ok": lambda c: c.api.post("/api/v1/auth/refresh",
                                       json_body={"refresh_token": c.owner.refresh_token}),
    "post_create": lambda c: c.api.post("/api/v1/posts", json_body={"title": "T", "body": "B"},
                                        token=token(c)),
    "post_create_invalid": lambda c: c.api.post("/api/v1/posts", json_body={"title": "", "x": 1},
                                                token=token(c)),
    "post_create_no_token_bad_body": lambda c: c.api.post("/api/v1/posts", content=b"{"),
    "post_patch_other": lambda c: c.api.patch(f"/api/v1/posts/{c.other_post}", json_body={"title": "x"},
                                              token=token(c)),
    "post_delete_other": lambda c: c.api.delete(f"/api/v1/posts/{c.other_post}", token=token(c)),
    "user_patch_other": lambda c: c.api.patch(f"/api/v1/users/{c.other.id}", json_body={"name": "x"},
                                              token=token(c)),
    "user_patch_self_empty": lambda c: c.api.patch(f"/api/v1/users/{c.owner.id}", json_body={},
                                                   token=token(c)),
    "user_patch_self": lambda c: c.api.patch(f"/api/v1/users/{c.owner.id}", json_body={"name": "Diff Owner"},
                                             token=token(c)),
    "user_delete_unknown": lambda c: c.api.delete("/api/v1/users/999999999999", token=token(c)),
    "logout": lambda c: c.api.post("/api/v1/auth/logout", token=token(c)),
    "logout_no_token": lambda c: c.api.post("/api/v1/auth/logout", content=compact({"a": 1}), headers=JSON),
    "user_inm_star": lambda c: c.api.get(f"/api/v1/users/{c.owner.id}", headers={"If-None-Match": "*"}),
    "page_inm_star": lambda c: c.api.get("/api/v1/users?limit=1", headers={"If-None-Match": "*"}),
    "user_ims_iso": lambda c: c.api.get(f"/api/v1/users/{c.owner.id}",
                                        headers={"If-Modified-Since": "2099-01-01T00:00:00Z"}),
    "user_ims_asctime": lambda c: c.api.get(f"/api/v1/users/{c.owner.id}",
                                            headers={"If-Modified-Since": "Thu Jan  1 00:00:00 2099"}),
    "user_ims_bad": lambda c: c.api.get(f"/api/v1/users/{c.owner.id}", headers={"If-Modified-Since": "x"}),
    "user_ims_future": lambda c: c.api.get(f"/api/v1/users/{c.owner.id}",
                                           headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}),
    "user_inm_no_cache": lambda c: c.api.get(f"/api/v1/users/{c.owner.id}",
                                             headers={"If-None-Match": "*", "Cache-Control": "no-cache"}),
    "me_inm_star": lambda c: c.api.get("/api/v1/auth/me", token=token(c), headers={"If-None-Match": "*"}),
    "openapi_gzip": lambda c: c.api.get("/openapi.json", headers={"Accept-Encoding": "gzip"}),
    "openapi_head_br": lambda c: c.api.request("HEAD", "/openapi.json", headers={"Accept-Encoding": "br"}),
    "preflight": lambda c: c.api.request("OPTIONS", "/api/v1/users/1", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "DELETE"}),
    "cors_two_origins": lambda c: c.api.http.get("/health", headers=[
        ("Origin", "https://app.example.com"), ("Origin", "http://localhost:5173")]),
    "cors_error": lambda c: c.api.get("/api/v1/users/abc", headers={"Origin": "http://localhost:5173"}),
}


def signature(r: httpx.Response, subs: dict[str, str]) -> tuple[int, dict[str, str | None], bytes]:
    headers = {h: r.headers.get(h) for h in HEADERS}
    if headers["x-request-id"] and headers["x-request-id"] != "diff-1":
        headers["x-request-id"] = "<generated>"
    if headers["retry-after"]:
        headers["retry-after"] = "<seconds>"
    # Validators depend on ids and timestamps like the body does: check how they are made, then hide them.
    if headers["etag"]:
        bodiless = r.request.method == "HEAD" or r.status_code == 304
        assert bodiless or headers["etag"] == strong_etag(r.content), (headers, r.content)
        headers["etag"] = "<etag>"
    if headers["last-modified"]:
        assert parsedate_to_datetime(headers["last-modified"]).tzinfo is not None, headers
        headers["last-modified"] = "<http-date>"
    return r.status_code, headers, normalise(r.content, subs)


@pytest.mark.parametrize("case", list(CASES))
def test_identical_request_identical_response(ctx: Callable[[str], Ctx], case: str) -> None:
    """The same request answers the same status, headers and normalised body on legacy and new."""
    contexts = [ctx("legacy"), ctx("new")]  # both first: building one may write rows the other would read
    responses = [CASES[case](c) for c in contexts]
    # One substitution table for both sides: a shared read (a page of users) shows both sides' emails.
    subs = {**contexts[0].subs, **contexts[1].subs}
    legacy, new = (signature(r, subs) for r in responses)
    assert new == legacy


def test_the_differential_sees_a_known_difference(stack: Stack, ctx: Callable[[str], Ctx]) -> None:
    """Control: against a new service that renders names with a '!' appended, the comparison differs."""
    legacy = ctx("legacy")
    mutant = Ctx(stack.api(MUTANT), legacy.owner, legacy.other, legacy.other_post, stack.jwt_secret,
                 dict(legacy.subs))
    try:
        for case in ("user_by_id", "me_ok"):
            a, b = (signature(CASES[case](c), c.subs) for c in (legacy, mutant))
            assert a[:2] == b[:2] and a[2] != b[2], case
            assert a[2].replace(b'"name":"Diff Owner"', b'"name":"Diff Owner!"') == b[2]
        # Everything the normaliser does not touch still has to match: an error body is identical.
        a, b = (signature(CASES["user_bad_id"](c), c.subs) for c in (legacy, mutant))
        assert a == b
    finally:
        mutant.api.close()
