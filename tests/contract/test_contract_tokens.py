"""Access-token verification: forged, expired, tampered and wrong-algorithm tokens are all refused (both)."""

from __future__ import annotations

import time

import pytest
from contract_kit import UNAUTHORIZED, Account, Api, access_claims, assert_json, b64url, compact, make_jwt
from contract_stack import Stack


def me(api: Api, token: str) -> int:
    r = api.get("/api/v1/auth/me", token=token)
    if r.status_code == 401:
        assert_json(r, 401, UNAUTHORIZED)
        assert r.headers.get("www-authenticate") == "Bearer"
    return r.status_code


def test_token_forged_with_the_secret_is_accepted(api: Api, reader: Account, stack: Stack) -> None:
    """Control: a token signed with the session secret and valid claims is accepted (so refusals mean it)."""
    assert me(api, make_jwt(access_claims(reader.id), stack.jwt_secret)) == 200


@pytest.mark.parametrize("case", [
    "expired", "expires_now", "tampered_payload", "tampered_signature", "alg_none", "alg_none_signed",
    "hs512", "wrong_secret", "missing_jti", "refresh_typ", "missing_typ", "missing_exp", "alg_header_hs512",
    "truncated", "jti_uppercase", "jti_short", "trailing_garbage",
])
def test_bad_tokens_are_401(api: Api, reader: Account, stack: Stack, case: str) -> None:
    """Every verification failure answers the same 401 unauthorized with WWW-Authenticate: Bearer."""
    secret, uid, now = stack.jwt_secret, reader.id, int(time.time())
    good = make_jwt(access_claims(uid), secret)
    token = {
        "expired": lambda: make_jwt(access_claims(uid, iat=now - 1000, exp=now - 100), secret),
        "expires_now": lambda: make_jwt(access_claims(uid, iat=now - 900, exp=now), secret),
        "tampered_payload": lambda: ".".join([good.split(".")[0],
                                              b64url(compact(access_claims(uid + 1))), good.split(".")[2]]),
        "tampered_signature": lambda: good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "alg_none": lambda: make_jwt(access_claims(uid), secret, alg="none",
                                     header={"alg": "none", "typ": "JWT"}),
        "alg_none_signed": lambda: make_jwt(access_claims(uid), secret, header={"alg": "none", "typ": "JWT"}),
        "hs512": lambda: make_jwt(access_claims(uid), secret, alg="HS512"),
        "wrong_secret": lambda: make_jwt(access_claims(uid), secret[::-1]),
        "missing_jti": lambda: make_jwt(access_claims(uid, jti=None), secret),
        "refresh_typ": lambda: make_jwt(access_claims(uid, typ="refresh"), secret),
        "missing_typ": lambda: make_jwt(access_claims(uid, typ=None), secret),
        "missing_exp": lambda: make_jwt(access_claims(uid, exp=None), secret),
        # HS256 signature but a header claiming HS512: the header must be exactly HS256.
        "alg_header_hs512": lambda: make_jwt(access_claims(uid), secret,
                                             header={"alg": "HS512", "typ": "JWT"}),
        "truncated": lambda: ".".join(good.split(".")[:2]),
        "jti_uppercase": lambda: make_jwt(access_claims(uid, jti="A" * 32), secret),
        "jti_short": lambda: make_jwt(access_claims(uid, jti="a" * 31), secret),
        "trailing_garbage": lambda: good + " extra",
    }[case]()
    assert me(api, token) == 401


def test_revoked_jti_is_refused(api: Api, stack: Stack) -> None:
    """A token whose jti is in Redis at <prefix>revoked:<jti> is refused; the key has a TTL until exp."""
    acct = api.register()
    claims = access_claims(acct.id)
    token = make_jwt(claims, stack.jwt_secret)
    assert me(api, token) == 200
    assert api.post("/api/v1/auth/logout", token=token).status_code == 204
    assert me(api, token) == 401
    client = stack.redis()
    try:
        ttl = client.ttl(f"{stack.redis_prefix}revoked:{claims['jti']}")
    finally:
        client.close()
    assert 0 < ttl <= 900, ttl


def test_token_of_a_deleted_user_is_401(api: Api) -> None:
    """A valid token whose user no longer exists is 401 unauthorized."""
    acct = api.register()
    assert api.delete(f"/api/v1/users/{acct.id}", token=acct.access_token).status_code == 204
    assert me(api, acct.access_token) == 401


def test_header_typ_is_not_checked(api: Api, reader: Account, stack: Stack) -> None:
    """Only alg is fixed in the header: a token with a different header typ still verifies."""
    token = make_jwt(access_claims(reader.id), stack.jwt_secret, header={"alg": "HS256", "typ": "at+jwt"})
    assert me(api, token) == 200
