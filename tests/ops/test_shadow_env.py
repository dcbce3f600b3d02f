"""Where shadow results go and the dry-run secret, read from the environment by proxy.ops.settings."""

from __future__ import annotations

from proxy.ops.settings import ShadowEnv, dry_run_secret, shadow_env
from proxy.shadow.store import DEFAULT_PREFIX


def test_dry_run_secret_from_env() -> None:
    """The secret comes from STRANGLER_DRY_RUN_SECRET, else DRY_RUN_SECRET, else dry run is off."""
    assert dry_run_secret({"DRY_RUN_SECRET": "b"}) == b"b"
    assert dry_run_secret({"STRANGLER_DRY_RUN_SECRET": "a", "DRY_RUN_SECRET": "b"}) == b"a"
    assert dry_run_secret({}) is None


def test_shadow_env_reads_stores_prefix_and_secret() -> None:
    """REDIS_URL, DATABASE_URL, STRANGLER_SHADOW_PREFIX and the dry-run secret land in ShadowEnv."""
    env = {"REDIS_URL": "redis://r/0", "DATABASE_URL": "postgresql://d/x", "STRANGLER_SHADOW_PREFIX": "p:",
           "DRY_RUN_SECRET": "s"}  # fmt: skip
    assert shadow_env(env) == ShadowEnv("redis://r/0", "postgresql://d/x", "p:", b"s")


def test_shadow_env_defaults_and_empty_values() -> None:
    """Unset or empty URLs mean off (None); the prefix defaults to the stores' own."""
    assert shadow_env({}) == ShadowEnv(None, None, DEFAULT_PREFIX, None)
    assert shadow_env({"REDIS_URL": "", "DATABASE_URL": ""}) == ShadowEnv(None, None, DEFAULT_PREFIX, None)


def test_shadow_env_repr_hides_urls_and_secret() -> None:
    """The URLs (which may hold passwords) and the secret never show in a repr (logs, tracebacks)."""
    text = repr(shadow_env({"REDIS_URL": "redis://:pw@r/0", "DRY_RUN_SECRET": "s3cret"}))
    assert "pw" not in text and "s3cret" not in text


async def test_open_shadow_passes_the_environment_down(redis_url: str, redis_prefix: str) -> None:
    """open_shadow configures the sink from the environment: no REDIS_URL is no sink; else its prefix and
    dry-run secret are the environment's."""
    from proxy.ops.serve import open_shadow
    from proxy.routing.table import parse_routes

    up = '{url: "http://127.0.0.1:1"}'
    table = parse_routes(f"upstreams:\n  legacy: {up}\n  new: {up}\ndefault: legacy\n", "t.yaml")
    async with open_shadow(table, {"DRY_RUN_SECRET": "s"}) as sink:
        assert sink is None
    env = {"REDIS_URL": redis_url, "STRANGLER_SHADOW_PREFIX": redis_prefix, "DRY_RUN_SECRET": "s"}
    async with open_shadow(table, env) as sink:
        assert sink is not None and sink.secret == b"s"
        assert getattr(sink.store, "prefix", None) == redis_prefix
        assert set(sink.pools) == {"legacy", "new"}
