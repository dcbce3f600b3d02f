"""A shadow side that refuses the connection was down, not wrong: its calls are counted ``unreached_<side>``
(reads and dry-run writes), never as its errors, which would keep the route NOT READY for the whole epoch."""

from __future__ import annotations

from .shadow_rig import Backend, RigFactory, routes_text

USERS = "  - {name: users, match: {methods: [GET], path: /users}, target: legacy, shadow: {sample: 1.0}}\n"
WRITE = (
    "  - {name: w, match: {methods: [POST], path: /w}, target: legacy, shadow: {sample: 1.0, writes: true}}\n"
)


async def test_refused_shadow_reads_and_dry_runs_are_unreached_not_errors(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """New's port refuses: each shadowed read and dry-run write counts unreached_candidate, no error."""
    legacy, new = backends
    await new.close()  # nothing listens on its port any more
    rig = await make_rig(routes_text(legacy, new, USERS + WRITE, "aa_sample: 0"), secret=b"k3y")
    for _ in range(3):
        assert (await rig.get("/users"))[0] == 200
    assert (await rig.request("POST", "/w", data=b"{}"))[0] == 200
    await rig.shadower.drain()
    stats = await rig.store.stats()
    users, w = stats["users"], stats["w"]
    assert (users.get("unreached_candidate"), users.get("errors_candidate")) == (3, 0)
    assert users.get("compared") == 0
    assert (w.get("unreached_candidate"), w.get("errors_candidate")) == (1, 0)
