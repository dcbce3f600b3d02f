"""The stated tests of proxy.shadow.noise: noise (A/A rate explains the candidate rate) and generated
paths, as tables."""

from __future__ import annotations

import pytest

from proxy.shadow.noise import (
    MIN_AA_PAIRS,
    MIN_COMPARED,
    MIN_GENERATED,
    is_generated,
    is_noise,
    learned_from,
    learned_rows,
)  # fmt: skip
from proxy.shadow.store import PathCounts, RouteStats


@pytest.mark.parametrize(
    ("aa_pairs", "aa_diffs", "compared", "candidate_diffs", "noise", "why"),
    [
        (100, 100, 100, 100, True, "always differs with itself and with the candidate"),
        (100, 50, 100, 50, True, "same rates"),
        (100, 50, 100, 60, True, "a little above: not significant"),
        (100, 10, 100, 5, True, "candidate below the A/A rate"),
        (100, 12, 100, 100, False, "a dozen races cannot excuse a path that always differs"),
        (20, 12, 400, 400, False, "twelve warm-up races of 20 pairs against a real change"),
        (100, 5, 1000, 200, False, "20 % against 5 %: significant"),
        (100, 2, 100, 2, False, "A/A rate trivial (under MIN_AA_DIFFS differences)"),
        (MIN_AA_PAIRS - 1, MIN_AA_PAIRS - 1, 100, 100, False, "too few A/A pairs"),
        (100, 100, MIN_COMPARED - 1, MIN_COMPARED - 1, False, "too few comparisons"),
        (20, 18, 20, 20, True, "90 % vs 100 % of 20 each: not significant (z about 1.45)"),
        (20, 10, 20, 20, False, "50 % vs 100 % of 20 each: significant (z about 3.65)"),
        (97, 90, 228, 228, True, "93 % vs 100 %: significant (z about 4), but a path this volatile is noise"),
        (100, 89, 1000, 1000, True, "89 % vs 100 %: significant, but the control changes it in 3 of 4 pairs"),
        (100, 70, 1000, 1000, True, "70 % vs 100 %: significant, but the path changes in most pairs"),
        (100, 60, 1000, 1000, False, "60 % vs 100 %: not significantly above VOLATILE_SHARE (z 2.0)"),
        (400, 240, 1000, 1000, True, "60 % of 400 pairs: significantly above VOLATILE_SHARE (z 4.0)"),
        (100, 49, 1000, 50, True, "49 % vs 5 %: the candidate differs less than the control"),
    ],
)
def test_is_noise(
    aa_pairs: int, aa_diffs: int, compared: int, candidate_diffs: int, noise: bool, why: str
) -> None:
    """A path is noise only when enough A/A pairs show it differing about as often as the candidate."""
    assert is_noise(aa_pairs, aa_diffs, compared, candidate_diffs) is noise, why


@pytest.mark.parametrize(
    ("compared", "same_shape", "aa_pairs", "aa_diffs", "read", "generated", "why"),
    [
        (20, 20, 0, 0, False, True, "a write (no A/A): every comparison differed with the same shape"),
        (100, 90, 0, 0, False, True, "90 %"),
        (100, 89, 0, 0, False, False, "under 90 %"),
        (MIN_GENERATED - 1, MIN_GENERATED - 1, 0, 0, False, False, "too few comparisons"),
        (100, 100, 50, 50, True, True, "a read whose control differs with itself too"),
        (100, 100, 50, 25, True, True, "a read: the control differs with itself in half the pairs"),
        (100, 100, 50, 0, True, False, "a read whose control is stable there: the candidate really differs"),
        (100, 100, 10, 10, True, False, "a read: too few A/A pairs to confirm it"),
        (100, 100, 50, 0, False, False, "A/A pairs on another method's path show it stable"),
        (100, 100, 10, 0, False, True, "a write: too few A/A pairs to say the control is stable"),
    ],
)
def test_is_generated(
    compared: int, same_shape: int, aa_pairs: int, aa_diffs: int, read: bool, generated: bool, why: str
) -> None:
    """Generated: nearly every comparison differed there with the same generated shape (and, on a read,
    the control differs with itself there too)."""
    assert is_generated(compared, same_shape, aa_pairs, aa_diffs, read) is generated, why


def test_learned_from_counts_and_report_rows() -> None:
    """learned_from applies both tests per path; a generated path is never noise; the report rows
    carry both rates of each noise path and the rate of each generated path."""
    counts = PathCounts(
        compared=100, aa_pairs=40,
        aa={"$.uptime": 40, "$.id": 40, "$.title": 4},
        candidate={"$.uptime": 100, "$.id": 100, "$.title": 100},
        same_shape={"$.id": 100}, present={"$.id": 100}, statuses={200: 100},
    )  # fmt: skip
    learned = learned_from(counts, "GET")
    assert learned.generated == {"$.id"} and learned.noise == {"$.uptime"}
    assert not learned.holds(("$.id",), 200)  # reads never hold: they have A/A pairs and re-reads

    def created(n: int) -> PathCounts:  # n creates, each with a new id
        return PathCounts(n, same_shape={"$.id": n}, present={"$.id": n}, statuses={201: n})

    few = MIN_GENERATED - 1
    write = learned_from(created(few), "POST")
    assert write.holds(("$.id",), 201) and write.generated == frozenset()
    enough = learned_from(created(MIN_GENERATED), "POST")
    assert not enough.holds(("$.id",), 201) and enough.generated == {"$.id"}
    # A login: 45 comparisons, 26 of them 401s without tokens: the token showed in the 19 others.
    tokens = PathCounts(45, same_shape={"$.token": few}, present={"$.token": few},
                        statuses={200: few, 401: 26})  # fmt: skip
    login = learned_from(tokens, "POST")
    assert login.holds(("$.token",), 200) and login.generated == frozenset()
    # A path never seen changing: the comparisons under the status it now changes under decide.
    assert not login.holds(("$.other",), 401)
    assert login.holds(("$.other",), 200) and login.holds(("$.other",), 500)
    get = RouteStats(
        "r", counters={"compared": 97, "raced": 3, "aa_pairs": 40, "n@200": 100},
        aa={"$.uptime": 40, "$.id": 40, "$.title": 4}, cand={"$.uptime": 100, "$.id": 100, "$.title": 100},
        shape={"200 $.id": 100},
    )  # fmt: skip
    post = RouteStats("r", counters={"learning": 5, "n@201": 5}, cand={"$.id": 5}, shape={"201 $.id": 5})
    st = RouteStats("r", methods={"GET": get, "POST": post})
    assert get.path_counts() == counts  # the denominator: compared, raced and held comparisons
    rows = learned_rows(st, configured=("$.id",))
    assert rows.noise == {"$.uptime"}
    assert rows.noise_rows == ({"method": "GET", "path": "$.uptime", "aa_rate": 1.0, "candidate_rate": 1.0,
                                "aa_pairs": 40, "aa_diffs": 40, "compared": 100},)  # fmt: skip
    assert rows.generated_rows == (
        {"method": "GET", "path": "$.id", "rate": 1.0, "compared": 100, "learned": True},
        {"method": "POST", "path": "$.id", "rate": 1.0, "compared": 5, "learned": False},  # configured only
    )


def test_generated_share_is_of_the_comparisons_where_the_path_shows() -> None:
    """A login's tokens change in every 200 and are absent from its 401s: generated, though only 60 % of
    all its comparisons show them. A path that changed in 30 % of the 200s is not generated."""
    login = RouteStats("r", counters={"compared": 100, "n@200": 60, "n@401": 40},
                       shape={"200 $.access_token": 60, "200 $.id": 18})  # fmt: skip
    counts = login.path_counts()
    assert counts.present == {"$.access_token": 60, "$.id": 60} and counts.statuses == {200: 60, 401: 40}
    # A full hash's "(other)" and a bare path (written before statuses were) are no status's path.
    odd = RouteStats("r", counters=login.counters, shape={**login.shape, "(other)": 7, "$.old": 3})
    assert odd.path_counts() == counts
    assert counts.share("$.access_token") == 1.0
    assert learned_from(counts, "POST").generated == {"$.access_token"}
