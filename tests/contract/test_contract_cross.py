"""Cross-system behaviour: one database, one Redis, one secret, so either service honours the other's work."""

from __future__ import annotations

from contract_kit import INVALID_TOKEN, UNAUTHORIZED, Api, assert_json, assert_no_content
from contract_stack import Stack


def test_register_on_one_login_on_the_other(legacy: Api, new: Api) -> None:
    """A user registered on either service logs in on the other."""
    for first, second in ((legacy, new), (new, legacy)):
        acct = first.register()
        r = second.login(acct.email)
        assert_json(r, 200)
        assert second.get("/api/v1/auth/me", token=r.json()["access_token"]).json()["id"] == acct.id


def test_tokens_work_across_services(legacy: Api, new: Api) -> None:
    """Access and refresh tokens issued by one service are accepted by the other; /me is byte-identical."""
    for first, second in ((legacy, new), (new, legacy)):
        acct = first.register()
        mine = first.get("/api/v1/auth/me", token=acct.access_token)
        theirs = second.get("/api/v1/auth/me", token=acct.access_token)
        assert_json(theirs, 200, mine.content)
        rotated = second.post("/api/v1/auth/refresh", json_body={"refresh_token": acct.refresh_token})
        assert_json(rotated, 200)
        # Rotation on one side revokes the token on the other side too.
        r = first.post("/api/v1/auth/refresh", json_body={"refresh_token": acct.refresh_token})
        assert_json(r, 401, INVALID_TOKEN)
        r = first.post("/api/v1/auth/refresh", json_body={"refresh_token": rotated.json()["refresh_token"]})
        assert_json(r, 200)


def test_logout_on_one_revokes_on_the_other(legacy: Api, new: Api) -> None:
    """Logging out on one service revokes that access token and the refresh tokens on the other."""
    for first, second in ((legacy, new), (new, legacy)):
        acct = first.register()
        assert second.get("/api/v1/auth/me", token=acct.access_token).status_code == 200
        assert_no_content(first.post("/api/v1/auth/logout", token=acct.access_token))
        assert_json(second.get("/api/v1/auth/me", token=acct.access_token), 401, UNAUTHORIZED)
        r = second.post("/api/v1/auth/refresh", json_body={"refresh_token": acct.refresh_token})
        assert_json(r, 401, INVALID_TOKEN)


def test_writes_on_one_read_identically_on_the_other(legacy: Api, new: Api) -> None:
    """Users and posts written by one service read byte for byte the same through both."""
    for first, second in ((legacy, new), (new, legacy)):
        acct = first.register(name="Crossé 🚀")
        post = first.create_post(acct, title="Über \"quotes\" </script>", body="line1\nline2\t\u2028 end")
        patched = first.patch(f"/api/v1/posts/{post['id']}", json_body={"body": "edited ✓"},
                              token=acct.access_token)
        assert_json(patched, 200)
        for path in (f"/api/v1/posts/{post['id']}", f"/api/v1/users/{acct.id}",
                     f"/api/v1/users/{acct.id}/posts", f"/api/v1/posts?author_id={acct.id}&limit=5"):
            a, b = first.get(path), second.get(path)
            assert_json(a, 200)
            assert_json(b, 200, a.content)
        assert second.get(f"/api/v1/posts/{post['id']}").content == patched.content
        # And a post changed by the second service is seen by the first.
        r = second.delete(f"/api/v1/posts/{post['id']}", token=acct.access_token)
        assert_no_content(r)
        assert first.get(f"/api/v1/posts/{post['id']}").status_code == 404


def test_bcrypt_user_is_upgraded_to_argon2id_on_new(legacy: Api, new: Api, stack: Stack) -> None:
    """A bcrypt user from legacy logs in on new, the row becomes argon2id, and legacy still accepts it."""
    acct = legacy.register()

    def hash_of() -> str:
        value: str = stack.query("SELECT password_hash FROM users WHERE id = $1", acct.id)[0][0]
        return value

    assert hash_of().startswith("$2b$12$")
    assert_json(new.login(acct.email), 200)
    upgraded = hash_of()
    assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), upgraded
    assert_json(legacy.login(acct.email), 200)
    assert_json(new.login(acct.email), 200)
    assert hash_of() == upgraded  # an argon2id hash at the right parameters is not rehashed again
    assert_json(legacy.login(acct.email, "not the password"), 401)


def test_argon2_user_from_new_logs_in_on_legacy(legacy: Api, new: Api, stack: Stack) -> None:
    """A user created on new has an argon2id hash and legacy verifies it."""
    acct = new.register()
    row = stack.query("SELECT password_hash FROM users WHERE id = $1", acct.id)[0]
    assert row[0].startswith("$argon2id$")
    assert_json(legacy.login(acct.email), 200)
    assert legacy.login(acct.email, "nope nope nope").status_code == 401


def test_legacy_bcrypt_cost_setting(stack: Stack) -> None:
    """BCRYPT_COST sets the cost of legacy's new hashes; such a user logs in on both, and new still
    upgrades the hash to argon2id."""
    with stack.variant("legacy", BCRYPT_COST="4") as run:
        cheap = Api("legacy", run.base_url)
        try:
            acct = cheap.register()
            (stored,) = stack.query("SELECT password_hash FROM users WHERE id = $1", acct.id)[0]
            assert stored.startswith("$2b$04$")
            assert_json(cheap.login(acct.email), 200)
            assert_json(cheap.login("nobody-" + acct.email), 401)  # the unknown-email path, at that cost
        finally:
            cheap.close()
    new = Api("new", stack.running["new"].base_url)
    try:
        assert_json(new.login(acct.email), 200)
    finally:
        new.close()
    (upgraded,) = stack.query("SELECT password_hash FROM users WHERE id = $1", acct.id)[0]
    assert upgraded.startswith("$argon2id$")
