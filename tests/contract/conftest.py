"""Fixtures of the contract suite: the real legacy (Node.js) and new (Python) services, once per session.

Each service starts on first use (so `-k new` works while you are building one side) and both stop at
the end of the session. When a test fails, the tail of each service's output is attached to the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from contract_kit import Account, Api
from contract_stack import SERVICES, Stack

_STACK: Stack | None = None


@pytest.fixture(scope="session")
def stack(make_database: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Both services on free loopback ports, sharing one migrated database, Redis prefix and JWT secret."""
    global _STACK
    st = Stack(database_url=make_database(), redis_url=redis_url, log_dir=tmp_path_factory.mktemp("services"))
    _STACK = st
    try:
        yield st
    finally:
        _STACK = None
        problems = st.close()
        assert not problems, problems


@pytest.fixture(params=SERVICES)
def api(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Api]:
    """A client of one service; every test using it runs once against legacy and once against new."""
    client = stack.api(request.param)
    yield client
    client.close()


@pytest.fixture
def legacy(stack: Stack) -> Iterator[Api]:
    """A client of the legacy service (cross-system tests)."""
    client = stack.api("legacy")
    yield client
    client.close()


@pytest.fixture
def new(stack: Stack) -> Iterator[Api]:
    """A client of the new service (cross-system tests)."""
    client = stack.api("new")
    yield client
    client.close()


@pytest.fixture
def reader(api: Api, stack: Stack) -> Account:
    """The shared, read-mostly account registered on the service under test."""
    return stack.shared_account(api.name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the tail of each service's output to a failing contract test's report."""
    report = yield
    if report.failed and _STACK is not None:
        for run in _STACK.running.values():
            state = "running" if run.proc.poll() is None else f"exited {run.proc.returncode}"
            report.sections.append((f"{run.name} output ({state}, tail)", run.tail()))
    return report
