"""The embedded PostgreSQL is never leaked, even when the process that started it was SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from support.waiting import eventually_sync

from proxy.devstack.embedded import EmbeddedPostgres, _alive

STARTER = """
import sys, time
from pathlib import Path
from proxy.devstack.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1])).start()
print(pg._server.get_pid(), flush=True)
time.sleep(60)  # stays alive until the test SIGKILLs it
"""


def test_a_server_left_by_a_killed_starter_is_stopped_by_the_next_clean_stop() -> None:
    """After its starter is SIGKILLed, the next start reuses the server and the next stop ends it."""
    data_dir = Path(tempfile.mkdtemp(prefix="strangler-embedded-")) / "pg"
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert starter.stdout is not None
        postmaster = int(starter.stdout.readline())
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(10)
        assert _alive(postmaster), "the postmaster outlives a SIGKILLed starter (that is the case under test)"

        again = EmbeddedPostgres(data_dir).start()
        assert again._server.get_pid() == postmaster  # type: ignore[attr-defined]
        again.stop()
        eventually_sync(lambda: not _alive(postmaster), what="the embedded PostgreSQL to exit", within=15)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
        if starter.stdout is not None:
            starter.stdout.close()
        if "postmaster" in locals() and _alive(postmaster):
            os.kill(postmaster, signal.SIGINT)
