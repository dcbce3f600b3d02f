"""Users and posts: CRUD, pagination, ownership, existence and cascades."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from svc_kit import MakeClient, bearer, register, unique_email


async def create_post(
    client: TestClient[Any, Any], tokens: dict[str, Any], title: str = "t"
) -> dict[str, Any]:
    """Create a post through the API (asserts 201)."""
    response = await client.post("/api/v1/posts", json={"title": title, "body": "b"}, headers=bearer(tokens))
    assert response.status == 201, await response.text()
    post: dict[str, Any] = await response.json()
    return post


async def test_create_get_and_list_users(client: TestClient[Any, Any]) -> None:
    """POST /users is 201 (no tokens), GET by id returns it, and it appears in the id-ascending list."""
    response = await client.post(
        "/api/v1/users", json={"email": unique_email(), "password": "password1", "name": "U"}
    )
    assert response.status == 201
    user = await response.json()
    assert list(user) == ["id", "email", "name", "created_at", "updated_at"]
    assert await (await client.get(f"/api/v1/users/{user['id']}")).json() == user
    page = await (await client.get("/api/v1/users?limit=100")).json()
    ids = [item["id"] for item in page["items"]]
    assert ids == sorted(ids)
    assert list(page) == ["items", "limit", "offset", "next_offset"]


async def test_pagination_next_offset(client: TestClient[Any, Any]) -> None:
    """next_offset is offset+limit while more rows exist and null on the last page."""
    author = await register(client)
    for i in range(3):
        await create_post(client, author["tokens"], title=f"p{i}")
    url = f"/api/v1/users/{author['user']['id']}/posts"
    first = await (await client.get(f"{url}?limit=2")).json()
    assert [p["title"] for p in first["items"]] == ["p2", "p1"]
    assert (first["limit"], first["offset"], first["next_offset"]) == (2, 0, 2)
    last = await (await client.get(f"{url}?limit=2&offset=2")).json()
    assert [p["title"] for p in last["items"]] == ["p0"]
    assert last["next_offset"] is None
    beyond = await (await client.get(f"{url}?offset=50")).json()
    assert beyond == {"items": [], "limit": 20, "offset": 50, "next_offset": None}


async def test_post_representation_and_author_filter(client: TestClient[Any, Any]) -> None:
    """A post carries its author summary; ?author_id= filters; posts come newest first."""
    alice, bob = await register(client, name="Alice"), await register(client, name="Bob")
    post = await create_post(client, alice["tokens"])
    assert list(post) == ["id", "author_id", "title", "body", "created_at", "updated_at", "author"]
    assert post["author"] == {"id": alice["user"]["id"], "name": "Alice"}
    await create_post(client, bob["tokens"])
    only_alice = await (await client.get(f"/api/v1/posts?author_id={alice['user']['id']}")).json()
    assert [p["id"] for p in only_alice["items"]] == [post["id"]]
    assert await (await client.get(f"/api/v1/posts/{post['id']}")).json() == post
    recent = await (await client.get("/api/v1/posts?limit=2")).json()
    assert recent["items"][0]["id"] > recent["items"][1]["id"]
    nobody = await (await client.get("/api/v1/posts?author_id=999999999999")).json()
    assert nobody["items"] == []


async def test_user_posts_of_unknown_user_is_404(client: TestClient[Any, Any]) -> None:
    """GET /users/{id}/posts answers 404 user not found for a user that does not exist."""
    response = await client.get("/api/v1/users/999999999999/posts")
    assert response.status == 404
    assert await response.read() == b'{"error":{"code":"not_found","message":"user not found"}}'


async def test_patch_and_delete_own_post_only(client: TestClient[Any, Any]) -> None:
    """Only the author may PATCH/DELETE a post (403 otherwise); PATCH bumps updated_at; DELETE is 204."""
    alice, bob = await register(client), await register(client)
    post = await create_post(client, alice["tokens"])
    url = f"/api/v1/posts/{post['id']}"
    forbidden = await client.patch(url, json={"title": "x"}, headers=bearer(bob["tokens"]))
    assert forbidden.status == 403
    assert await forbidden.read() == (
        b'{"error":{"code":"forbidden","message":"you may only change your own posts"}}'
    )
    assert (await client.delete(url, headers=bearer(bob["tokens"]))).status == 403
    patched = await (await client.patch(url, json={"body": "new"}, headers=bearer(alice["tokens"]))).json()
    assert (patched["title"], patched["body"]) == ("t", "new")
    # Strictly later even within the same millisecond (GREATEST(clock_timestamp(), updated_at + 1 ms)).
    assert patched["updated_at"] > post["updated_at"] and patched["created_at"] == post["created_at"]
    again = await (await client.patch(url, json={"body": "newer"}, headers=bearer(alice["tokens"]))).json()
    assert again["updated_at"] > patched["updated_at"]
    deleted = await client.delete(url, headers=bearer(alice["tokens"]))
    assert deleted.status == 204
    assert (await client.get(url)).status == 404
    assert (await client.delete(url, headers=bearer(alice["tokens"]))).status == 404


async def test_patch_self_email_conflict_and_password_change(client: TestClient[Any, Any]) -> None:
    """PATCH /users/{me}: a taken email is 409; a new password works for login; the old one does not."""
    me, other = await register(client), await register(client)
    url, headers = f"/api/v1/users/{me['user']['id']}", bearer(me["tokens"])
    taken = await client.patch(url, json={"email": other["user"]["email"].upper()}, headers=headers)
    assert taken.status == 409
    changed = await client.patch(url, json={"name": "New", "password": "another password"}, headers=headers)
    body = await changed.json()
    assert body["name"] == "New" and body["email"] == me["user"]["email"]
    email = me["user"]["email"]
    old = await client.post("/api/v1/auth/login", json={"email": email, "password": "correct horse battery"})
    assert old.status == 401
    new = await client.post("/api/v1/auth/login", json={"email": email, "password": "another password"})
    assert new.status == 200


async def test_delete_self_cascades_posts(client: TestClient[Any, Any], db: Any) -> None:
    """DELETE /users/{me} is 204; the user's posts and refresh tokens go with it; others' ids are 403/404."""
    me, other = await register(client), await register(client)
    post = await create_post(client, me["tokens"])
    headers = bearer(me["tokens"])
    assert (await client.delete(f"/api/v1/users/{other['user']['id']}", headers=headers)).status == 403
    assert (await client.delete("/api/v1/users/999999999999", headers=headers)).status == 404
    assert (await client.delete(f"/api/v1/users/{me['user']['id']}", headers=headers)).status == 204
    assert (await client.get(f"/api/v1/posts/{post['id']}")).status == 404
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE user_id = $1", me["user"]["id"]) == 0


async def test_test_diff_switch_marks_user_names(make_client: MakeClient) -> None:
    """SERVICES_TEST_DIFF=user.name renders every user's name with a "!" appended."""
    client = await make_client(test_diff="user.name")
    body = await register(client, name="Ann")
    assert body["user"]["name"] == "Ann!"
    fetched = await (await client.get(f"/api/v1/users/{body['user']['id']}")).json()
    assert fetched["name"] == "Ann!"


NEW_POST = {"title": "t", "body": "b"}


async def test_test_diff_switch_plants_post_differences(make_client: MakeClient) -> None:
    """The post plants: one read's title, a create answered 200, a create without updated_at, a patch
    in whole seconds; each changes only its own endpoint."""
    title = await make_client(test_diff="post.get.title")
    post = await create_post(title, (await register(title))["tokens"], title="t")
    assert (await (await title.get(f"/api/v1/posts/{post['id']}")).json())["title"] == "t!"
    assert post["title"] == "t"
    status = await make_client(test_diff="post.create.status")
    user = await register(status)
    made = await status.post("/api/v1/posts", json=NEW_POST, headers=bearer(user["tokens"]))
    assert made.status == 200
    missing = await make_client(test_diff="post.create.missing")
    user = await register(missing)
    made = await missing.post("/api/v1/posts", json=NEW_POST, headers=bearer(user["tokens"]))
    post = await made.json()
    assert made.status == 201 and "updated_at" not in post and "created_at" in post
    assert "updated_at" in await (await missing.get(f"/api/v1/posts/{post['id']}")).json()
    precision = await make_client(test_diff="post.patch.precision")
    user = await register(precision)
    post = await create_post(precision, user["tokens"])
    assert post["created_at"].count(".") == 1  # the create is untouched: milliseconds
    patched = await precision.patch(f"/api/v1/posts/{post['id']}", json={"title": "u"},
                                    headers=bearer(user["tokens"]))  # fmt: skip
    body = await patched.json()
    assert patched.status == 200
    assert "." not in body["created_at"] and body["created_at"].endswith("Z")
    assert body["created_at"] == post["created_at"].rpartition(".")[0] + "Z"
