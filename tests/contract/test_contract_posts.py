"""Posts: create, read, list (with pagination edges), update, delete, and their errors (both services)."""

from __future__ import annotations

import pytest
from contract_kit import (
    TIMESTAMP,
    Account,
    Api,
    assert_error,
    assert_json,
    assert_no_content,
    compact,
    validation,
)

TITLE_LEN = "must be between 1 and 200 characters"
BODY_LEN = "must be between 1 and 10000 characters"
LIMIT = ("limit", "must be an integer between 1 and 100")
OFFSET = ("offset", "must be a non-negative integer")
AUTHOR = ("author_id", "must be a positive integer")


@pytest.fixture
def author(api: Api) -> Account:
    """A fresh user with no posts, so page contents are exactly known."""
    return api.register(name="Author")


def test_create_post_returns_post_with_author(api: Api, author: Account) -> None:
    """POST /posts answers 201 with the post, its author embedded, in documented key order."""
    post = api.create_post(author, title="Hello", body="World")
    assert list(post) == ["id", "author_id", "title", "body", "created_at", "updated_at", "author"]
    assert post["author_id"] == author.id and post["author"] == {"id": author.id, "name": "Author"}
    assert post["title"] == "Hello" and post["body"] == "World" and TIMESTAMP.match(post["created_at"])
    r = api.get(f"/api/v1/posts/{post['id']}")
    assert_json(r, 200, compact(post))


@pytest.mark.parametrize(("body", "fields"), [
    ({}, [("title", "is required"), ("body", "is required")]),
    ({"title": "", "body": "x" * 10001}, [("title", TITLE_LEN), ("body", BODY_LEN)]),
    ({"title": "t" * 201, "body": ""}, [("title", TITLE_LEN), ("body", BODY_LEN)]),
    ({"title": 1, "body": ["b"]}, [("title", "must be a string"), ("body", "must be a string")]),
    ({"title": "t", "body": "b", "author_id": 1}, [("author_id", "unknown field")]),
    ([], [("body", "must be a JSON object")]),
])
def test_create_post_validation(api: Api, reader: Account, body: object,
                                fields: list[tuple[str, str]]) -> None:
    """Invalid post bodies answer 422 with the exact fields list."""
    r = api.post("/api/v1/posts", content=compact(body), headers={"Content-Type": "application/json"},
                 token=reader.access_token)
    assert_json(r, 422, validation(*fields))


def test_post_length_limits_are_inclusive_in_code_points(api: Api, reader: Account) -> None:
    """A 200-code-point title and a 10000-code-point body (astral characters) are accepted."""
    post = api.create_post(reader, title="\U0001f4a9" * 200, body="\U0001f4a9" * 10000)
    assert len(post["title"]) == 200 and len(post["body"]) == 10000


def test_create_post_requires_token(api: Api) -> None:
    """POST /posts without a token is 401."""
    r = api.post("/api/v1/posts", json_body={"title": "t", "body": "b"})
    assert_error(r, 401, "unauthorized", "missing or invalid access token")


@pytest.mark.parametrize("pid", ["0", "abc", "-3", "1234567890123456789", "99999999999999999"])
def test_get_post_bad_or_unknown_id_is_404(api: Api, pid: str) -> None:
    """Unknown or malformed post ids answer 404 post not found."""
    assert_error(api.get(f"/api/v1/posts/{pid}"), 404, "not_found", "post not found")


def test_patch_post(api: Api, author: Account, reader: Account) -> None:
    """PATCH by the author changes fields and updated_at; others get 403, unknown posts 404."""
    post = api.create_post(author)  # no pause needed: updated_at grows by 1 ms at least (docs/API.md)
    r = api.patch(f"/api/v1/posts/{post['id']}", json_body={"title": "New"}, token=author.access_token)
    patched = assert_json(r, 200)
    assert patched["title"] == "New" and patched["body"] == post["body"]
    assert patched["updated_at"] > post["updated_at"] and patched["created_at"] == post["created_at"]
    path = f"/api/v1/posts/{post['id']}"
    r = api.patch(path, json_body={"title": "x"}, token=reader.access_token)
    assert_error(r, 403, "forbidden", "you may only change your own posts")
    assert_error(api.patch("/api/v1/posts/99999999999", json_body={"title": "x"}, token=reader.access_token),
                 404, "not_found", "post not found")
    assert_json(api.patch(f"/api/v1/posts/{post['id']}", json_body={}, token=author.access_token), 422,
                validation(("body", "must contain at least one field")))
    # Validation (422) is checked before existence (404) and ownership (403).
    assert_json(api.patch("/api/v1/posts/99999999999", json_body={"title": ""}, token=reader.access_token),
                422, validation(("title", TITLE_LEN)))


def test_delete_post(api: Api, author: Account, reader: Account) -> None:
    """DELETE by the author answers 204; others 403; afterwards 404."""
    post = api.create_post(author)
    path = f"/api/v1/posts/{post['id']}"
    r = api.delete(path, token=reader.access_token)
    assert_error(r, 403, "forbidden", "you may only change your own posts")
    assert_error(api.delete(path), 401, "unauthorized", "missing or invalid access token")
    assert_no_content(api.delete(path, token=author.access_token))
    assert_error(api.get(path), 404, "not_found", "post not found")
    assert_error(api.delete(path, token=author.access_token), 404, "not_found", "post not found")


def test_pagination_edges(api: Api, author: Account) -> None:
    """Posts page newest first; next_offset is null exactly on the last page, also when it is full."""
    ids = [api.create_post(author, title=f"p{i}")["id"] for i in range(3)]
    base = f"/api/v1/posts?author_id={author.id}"
    page = assert_json(api.get(f"{base}&limit=2"), 200)
    assert [p["id"] for p in page["items"]] == ids[::-1][:2]
    assert (page["limit"], page["offset"], page["next_offset"]) == (2, 0, 2)
    last = assert_json(api.get(f"{base}&limit=2&offset=2"), 200)
    assert [p["id"] for p in last["items"]] == [ids[0]] and last["next_offset"] is None
    full = assert_json(api.get(f"{base}&limit=3"), 200)
    assert len(full["items"]) == 3 and full["next_offset"] is None
    one = assert_json(api.get(f"{base}&limit=1&offset=1"), 200)
    assert [p["id"] for p in one["items"]] == [ids[1]] and one["next_offset"] == 2
    past = api.get(f"{base}&offset=999999999")
    assert_json(past, 200, b'{"items":[],"limit":20,"offset":999999999,"next_offset":null}')
    default = assert_json(api.get(base), 200)
    assert (default["limit"], default["offset"], default["next_offset"]) == (20, 0, None)
    hundred = assert_json(api.get(f"{base}&limit=100"), 200)
    assert hundred["limit"] == 100 and len(hundred["items"]) == 3
    # The user's own listing is the same page.
    mine = api.get(f"/api/v1/users/{author.id}/posts?limit=2")
    assert mine.content == api.get(f"{base}&limit=2").content


@pytest.mark.parametrize(("query", "fields"), [
    ("limit=0", [LIMIT]),
    ("limit=101", [LIMIT]),
    ("limit=abc", [LIMIT]),
    ("limit=", [LIMIT]),
    ("limit=-1", [LIMIT]),
    ("limit=1.0", [LIMIT]),
    ("limit=+5", [LIMIT]),
    ("limit=0000000001", [LIMIT]),
    ("offset=-1", [OFFSET]),
    ("offset=1e3", [OFFSET]),
    ("offset=1234567890", [OFFSET]),
    ("author_id=0", [AUTHOR]),
    ("author_id=abc", [AUTHOR]),
    ("author_id=1234567890123456789", [AUTHOR]),
    ("author_id=x&offset=y&limit=z", [LIMIT, OFFSET, AUTHOR]),
    ("limit=5&limit=6", [LIMIT]),
    ("offset=1&offset=1", [OFFSET]),
    ("author_id=1&author_id=1&limit=2", [AUTHOR]),
])
def test_post_list_query_validation(api: Api, query: str, fields: list[tuple[str, str]]) -> None:
    """Bad limit/offset/author_id answer 422 with fields in the order limit, offset, author_id."""
    assert_json(api.get(f"/api/v1/posts?{query}"), 422, validation(*fields))


def test_user_list_query_validation_and_unknown_params(api: Api) -> None:
    """User listing validates limit/offset the same way, ignores unknown parameters and author_id."""
    assert_json(api.get("/api/v1/users?limit=0&offset=-1"), 422, validation(LIMIT, OFFSET))
    assert_json(api.get("/api/v1/users?limit=1&foo=bar&author_id=zzz"), 200)
    page = assert_json(api.get("/api/v1/users?limit=1"), 200)
    assert len(page["items"]) == 1 and page["next_offset"] == 1


def test_user_posts_of_unknown_user_is_404(api: Api) -> None:
    """GET /users/{id}/posts answers 404 user not found when the user does not exist."""
    assert_error(api.get("/api/v1/users/99999999999/posts"), 404, "not_found", "user not found")
    assert_error(api.get("/api/v1/users/abc/posts"), 404, "not_found", "user not found")


def test_user_posts_validates_query(api: Api, author: Account) -> None:
    """GET /users/{id}/posts validates limit and offset."""
    assert_json(api.get(f"/api/v1/users/{author.id}/posts?limit=101"), 422, validation(LIMIT))
    empty = api.get(f"/api/v1/users/{author.id}/posts")
    assert_json(empty, 200, b'{"items":[],"limit":20,"offset":0,"next_offset":null}')


def test_unknown_author_filter_is_an_empty_page(api: Api) -> None:
    """GET /posts?author_id=<no such user> is 200 with an empty page, not 404."""
    r = api.get("/api/v1/posts?author_id=999999999999")
    assert_json(r, 200, b'{"items":[],"limit":20,"offset":0,"next_offset":null}')


def test_malformed_user_id_with_bad_query_is_422(api: Api) -> None:
    """A malformed path id fails at the existence step, after query validation: 422 before 404."""
    assert_json(api.get("/api/v1/users/abc/posts?limit=0"), 422, validation(LIMIT))


def test_created_post_has_no_location_header(api: Api, reader: Account) -> None:
    """201 responses carry no Location header."""
    r = api.post("/api/v1/posts", json_body={"title": "t", "body": "b"}, token=reader.access_token)
    assert r.status_code == 201 and "location" not in r.headers
