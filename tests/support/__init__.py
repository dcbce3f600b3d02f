"""Helpers shared by every test folder (``tests/`` is on sys.path through its root conftest.py): real
loopback upstreams, gateways in process and as processes, and waiting for events."""
