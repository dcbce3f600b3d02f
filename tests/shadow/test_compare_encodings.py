"""The shadow comparison sees through every coding the two services may pick (br, gzip, deflate)."""

from __future__ import annotations

import gzip
import zlib

import brotli
import orjson

from proxy.routing.model import CompareRules
from proxy.shadow.compare import Observed, compare

JSON = [("content-type", "application/json; charset=utf-8")]
DOC = orjson.dumps({"items": [{"id": i, "name": "x" * 40} for i in range(40)], "next_offset": None})


def observed(coding: str | None, body: bytes) -> Observed:
    headers = JSON if coding is None else [*JSON, ("content-encoding", coding)]
    return Observed(200, headers, body)


def test_br_gzip_deflate_and_identity_compare_equal() -> None:
    """The same JSON under any two codings (as legacy and new may send it) is no difference."""
    sides = {
        None: DOC,
        "br": brotli.compress(DOC, quality=4),
        "gzip": gzip.compress(DOC),
        "deflate": zlib.compress(DOC),
    }
    rules = CompareRules(headers=("content-type",))
    for a, body_a in sides.items():
        for b, body_b in sides.items():
            assert compare(observed(a, body_a), observed(b, body_b), rules) is None, (a, b)


def test_a_changed_field_under_br_is_still_found() -> None:
    """Decoding does not hide a difference: a changed value inside a br body is reported by its path."""
    other = orjson.dumps({"items": [{"id": 0, "name": "y"}], "next_offset": None})
    control, candidate = observed("br", brotli.compress(DOC)), observed("gzip", gzip.compress(other))
    diff = compare(control, candidate, CompareRules())
    assert diff is not None and any(d.path.startswith("$.items") for d in diff.differences)
