"""Login rate limiting (per account, per client IP, shared by both services) and user enumeration.

The services run with LOGIN_RATE_LIMIT_ACCOUNT=5 and LOGIN_RATE_LIMIT_IP=8 (see contract_stack.LIMITS)
and TRUSTED_HOPS=1, so each test picks its own client address through X-Forwarded-For.
"""

from __future__ import annotations

import hashlib

from contract_kit import INVALID_CREDENTIALS, Api, assert_json, error_body, random_ip, unique_email
from contract_stack import LIMITS, Stack

RATE_LIMITED = error_body("rate_limited", "too many login attempts, try again later")
WINDOW = LIMITS["LOGIN_RATE_WINDOW"]


def assert_limited(r: object, window: int = WINDOW) -> None:
    assert_json(r, 429, RATE_LIMITED)  # type: ignore[arg-type]
    retry = r.headers.get("retry-after", "")  # type: ignore[attr-defined]
    assert retry.isdigit() and 0 < int(retry) <= window, retry


def test_account_limit_is_shared_by_both_services(legacy: Api, new: Api, stack: Stack) -> None:
    """Five attempts on one account across both services, then 429 (Retry-After), right password or not."""
    acct = legacy.register()
    for i in range(LIMITS["LOGIN_RATE_LIMIT_ACCOUNT"]):
        svc = (legacy, new)[i % 2]
        svc.ip = random_ip()  # a fresh address each time: only the account counter may trip
        assert_json(svc.login(acct.email, "wrong password!"), 401, INVALID_CREDENTIALS)
    for svc in (legacy, new):
        svc.ip = random_ip()
        assert_limited(svc.login(acct.email))
        assert_limited(svc.login(acct.email.upper()), WINDOW)
    key = f"{stack.redis_prefix}rl:login:acct:{hashlib.sha256(acct.email.encode()).hexdigest()}"
    client = stack.redis()
    try:
        assert int(client.get(key) or 0) >= LIMITS["LOGIN_RATE_LIMIT_ACCOUNT"] + 1
        assert 0 < client.ttl(key) <= WINDOW
    finally:
        client.close()


def test_ip_limit(api: Api, stack: Stack) -> None:
    """Eight attempts from one address (distinct emails), then 429 from that address only."""
    for _ in range(LIMITS["LOGIN_RATE_LIMIT_IP"]):
        assert_json(api.login(unique_email("ip")), 401, INVALID_CREDENTIALS)
    assert_limited(api.login(unique_email("ip")))
    key = f"{stack.redis_prefix}rl:login:ip:{api.ip}"
    client = stack.redis()
    try:
        assert 0 < client.ttl(key) <= WINDOW
    finally:
        client.close()
    api.ip = random_ip()
    assert_json(api.login(unique_email("ip")), 401, INVALID_CREDENTIALS)


def test_ip_is_taken_from_x_forwarded_for_per_trusted_hops(api: Api, stack: Stack) -> None:
    """With TRUSTED_HOPS=1 the client address is the rightmost X-Forwarded-For entry, not a spoofed one."""
    victim = random_ip()
    api.ip = f"{victim}, {random_ip()}"
    api.login(unique_email("xff"))
    client = stack.redis()
    try:
        assert client.get(f"{stack.redis_prefix}rl:login:ip:{victim}") is None
        assert client.get(f"{stack.redis_prefix}rl:login:ip:{api.ip.split(', ')[1]}") == b"1"
    finally:
        client.close()


def test_invalid_login_bodies_are_not_counted(api: Api) -> None:
    """Attempts that fail validation (422) do not count towards any limit."""
    for _ in range(LIMITS["LOGIN_RATE_LIMIT_IP"] + 2):
        assert api.post("/api/v1/auth/login", json_body={"email": "x@example.com"}).status_code == 422
    assert_json(api.login(unique_email("v")), 401, INVALID_CREDENTIALS)


def test_unknown_email_and_wrong_password_are_indistinguishable(api: Api, stack: Stack) -> None:
    """Unknown email and wrong password answer the same status, bytes and content type.

    Their timings (median ratio 0.5x..2x) are compared by bench/timing.py: a loaded machine decides
    wall time, so it is not asserted here.
    """
    acct = api.register()
    acct_key = f"{stack.redis_prefix}rl:login:acct:{hashlib.sha256(acct.email.encode()).hexdigest()}"
    client = stack.redis()
    bodies: set[tuple[int, bytes, str]] = set()
    try:
        for _ in range(3):  # interleaved, as the benchmark does
            for email in (unique_email("ghost"), acct.email):
                client.delete(acct_key)  # keep the account under its limit: both must be plain 401s
                api.ip = random_ip()
                r = api.login(email, "wrong password!")
                bodies.add((r.status_code, r.content, r.headers.get("content-type", "")))
    finally:
        client.close()
    assert bodies == {(401, INVALID_CREDENTIALS, "application/json; charset=utf-8")}, bodies
