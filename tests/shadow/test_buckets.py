"""Latency buckets: `bucket_of` computes the bucket by logarithm; the bounds themselves must decide it."""

from __future__ import annotations

import bisect
import math
import random

from proxy.shadow import store


def by_bisection(seconds: float) -> int:
    """The rule as written: the first bucket whose upper bound is not below ``seconds`` (the last at most)."""
    return min(store._LAST, bisect.bisect_left(store._UPPERS, seconds))


def test_bucket_of_agrees_with_the_bounds_at_and_around_every_bound() -> None:
    uppers = store._UPPERS
    edges = [0.0, 1e-12, *uppers, 1e9, math.inf]
    edges += [math.nextafter(u, 0.0) for u in uppers] + [math.nextafter(u, math.inf) for u in uppers]
    for seconds in edges:
        assert store.bucket_of(seconds) == by_bisection(seconds), seconds


def test_bucket_of_agrees_with_the_bounds_over_the_whole_range() -> None:
    rng = random.Random(7)
    for _ in range(50_000):
        seconds = 10 ** rng.uniform(-7.0, 4.0)
        assert store.bucket_of(seconds) == by_bisection(seconds), seconds
