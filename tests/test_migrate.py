"""`strangler migrate`: ordered, transactional, locked, checksummed forward-only migrations."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from services.migrate import MigrationError, main, migrate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A copy of the repository's migrations that a test may change."""
    target = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", target)
    return target


@pytest.fixture
def fresh_url(make_database: Callable[..., str]) -> str:
    """An empty database (not migrated), made outside the test's event loop."""
    return make_database(migrated=False)


def sql_files(directory: Path) -> list[Path]:
    """The directory's .sql files, sorted by name."""
    return sorted(directory.glob("*.sql"))


def sql_names(directory: Path) -> list[str]:
    """The names of the directory's .sql files, sorted."""
    return [p.name for p in sql_files(directory)]


async def versions(url: str) -> list[tuple[int, str, str]]:
    """The rows of schema_migrations (version, name, checksum) in order."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"], r["checksum"]) for r in rows]
    finally:
        await conn.close()


async def test_applies_in_order_then_nothing(fresh_url: str, migrations: Path) -> None:
    """A fresh database gets every file in numeric order, recorded with sha256; a rerun applies nothing."""
    expected = sql_names(migrations)
    assert await migrate(fresh_url, migrations) == expected
    recorded = await versions(fresh_url)
    assert [name for _, name, _ in recorded] == expected
    assert all(len(checksum) == 64 for _, _, checksum in recorded)
    assert await migrate(fresh_url, migrations) == []
    (migrations / "9999_extra.sql").write_text("CREATE TABLE extra_t (id int);\n")
    assert await migrate(fresh_url, migrations) == ["9999_extra.sql"]


async def test_concurrent_migrators_apply_each_file_once(fresh_url: str, migrations: Path) -> None:
    """Two migrators at once: one waits on the advisory lock; every file is applied exactly once."""
    # A slow file makes the overlap certain: the second migrator must wait for the first.
    (migrations / "9000_slow.sql").write_text("SELECT pg_sleep(0.5);\n")
    first, second = await asyncio.gather(migrate(fresh_url, migrations), migrate(fresh_url, migrations))
    names = sql_names(migrations)
    assert sorted(first + second) == names
    assert [] in (first, second)
    assert [name for _, name, _ in await versions(fresh_url)] == names


async def test_changed_file_is_refused_naming_it(fresh_url: str, migrations: Path) -> None:
    """A file edited after it was applied is refused with an error naming the file; nothing else runs."""
    await migrate(fresh_url, migrations)
    first = sql_files(migrations)[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    (migrations / "9999_new.sql").write_text("CREATE TABLE never_created (id int);\n")
    with pytest.raises(MigrationError, match=first.name.replace(".", r"\.")) as info:
        await migrate(fresh_url, migrations)
    assert "changed after it was applied" in str(info.value)
    assert "9999_new.sql" not in [name for _, name, _ in await versions(fresh_url)]


async def test_failing_migration_rolls_back_alone(fresh_url: str, migrations: Path) -> None:
    """A broken file is rolled back (its earlier statements too) and named; earlier files stay applied."""
    (migrations / "9998_half.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationError, match=r"9998_half\.sql"):
        await migrate(fresh_url, migrations)
    conn = await asyncpg.connect(fresh_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT to_regclass('users')") == "users"
    finally:
        await conn.close()


def test_bad_file_names_and_duplicate_versions_are_refused(tmp_path: Path) -> None:
    """Unnumbered files and two files with one number are refused before touching the database."""
    (tmp_path / "create.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"create\.sql"):
        asyncio.run(migrate("postgresql://127.0.0.1:1/none", tmp_path))
    (tmp_path / "create.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"0001_a\.sql"):
        asyncio.run(migrate("postgresql://127.0.0.1:1/none", tmp_path))


def test_cli_main(
    fresh_url: str, migrations: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """main(): applies, says up to date, reads DATABASE_URL, exits 1 on a changed file, 2 without a URL."""
    assert main(["--database-url", fresh_url, "--dir", str(migrations)]) == 0
    assert "applied 0001_" in capsys.readouterr().out
    monkeypatch.setenv("DATABASE_URL", fresh_url)
    assert main(["--dir", str(migrations)]) == 0
    assert "up to date" in capsys.readouterr().out
    first = sql_files(migrations)[0]
    first.write_text("-- rewritten\n")
    assert main(["--dir", str(migrations)]) == 1
    assert first.name in capsys.readouterr().err
    monkeypatch.delenv("DATABASE_URL")
    assert main(["--dir", str(migrations)]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err


def test_cli_unreachable_database_exits_1(migrations: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """main() with a database that does not answer exits 1 and says what to check."""
    assert main(["--database-url", "postgresql://postgres@127.0.0.1:1/none", "--dir", str(migrations)]) == 1
    assert "--database-url" in capsys.readouterr().err
