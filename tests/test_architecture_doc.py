"""docs/ARCHITECTURE.md names every module of the gateway with its layer, so it cannot silently go stale."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def test_every_module_is_listed_with_its_layer() -> None:
    """Each proxy/<layer>/<module>.py has a row `| proxy/<layer>/<module>.py | <layer> |`; no row names a
    module that does not exist."""
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "proxy").glob("*/*.py")
                     if p.name != "__init__.py")  # fmt: skip
    missing = [m for m in modules if f"| `{m}` | {m.split('/')[1]} |" not in DOC]
    assert missing == [], f"add these to docs/ARCHITECTURE.md's module table: {missing}"
    listed = [line.split("`")[1] for line in DOC.splitlines() if line.startswith("| `proxy/") and "/" in line]
    gone = [m for m in listed if m.count("/") == 2 and not (ROOT / m).exists()]
    assert gone == [], f"docs/ARCHITECTURE.md lists modules that no longer exist: {gone}"


def test_the_path_of_one_get_names_at_most_eight_files_that_exist() -> None:
    """The numbered walk through one GET has at most 8 steps, each naming a file that exists."""
    section = DOC.split("## The path of one GET", 1)[1].split("\n## ", 1)[0]
    steps = [line for line in section.splitlines() if line[:2].rstrip(".").isdigit() and ". `" in line[:5]]
    assert 1 <= len(steps) <= 8
    for step in steps:
        path = step.split("`")[1]
        assert (ROOT / "proxy" / path).exists(), path
