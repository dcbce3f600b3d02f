"""compare.py: status, headers, structural JSON diff with paths, rules, bytes, hashes, compression."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.routing.table import CompareRules
from proxy.shadow.compare import Diff, Observed, compare, decode_body, normalise_path

JSON = [("content-type", "application/json; charset=utf-8")]


def obs(doc: object, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Observed:
    return Observed(status, headers if headers is not None else JSON, orjson.dumps(doc))


def diff(c: object, d: object, rules: CompareRules | None = None) -> Diff | None:
    return compare(obs(c), obs(d), rules or CompareRules())


def kinds(result: Diff | None) -> list[tuple[str, str]]:
    assert result is not None
    return [(x.path, x.kind) for x in result.differences]


def test_identical_json_is_none() -> None:
    """Equal documents (even with different key order) compare equal."""
    assert diff({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}) is None


def test_changed_value_nested_path() -> None:
    """A changed leaf is reported at its full path with both values."""
    c = {"items": [{"author": {"name": "A"}}] * 4}
    d = {"items": [{"author": {"name": "A"}}] * 3 + [{"author": {"name": "A!"}}]}
    result = diff(c, d)
    assert result is not None
    (only,) = result.differences
    assert (only.path, only.kind, only.control, only.candidate) == (
        "$.items[3].author.name",
        "changed",
        "A",
        "A!",
    )
    assert result.paths == ("$.items[*].author.name",)


def test_type_missing_extra_length() -> None:
    """Type changes, missing and extra members, and array lengths each have their kind."""
    result = diff({"a": 1, "b": "x", "l": [1, 2, 3]}, {"a": "1", "c": True, "l": [1, 2]})
    assert kinds(result) == [("$.a", "type"), ("$.b", "missing"), ("$.l", "length"), ("$.c", "extra")]


def test_int_and_float_same_number() -> None:
    """1 and 1.0 are the same JSON number; true and 1 are not."""
    assert diff({"n": 1}, {"n": 1.0}) is None
    assert kinds(diff({"n": 1}, {"n": True})) == [("$.n", "type")]


def test_status_and_headers() -> None:
    """Status and configured headers are compared; content-type spacing and case do not matter."""
    c = Observed(
        200, [("content-type", "application/json; charset=utf-8"), ("cache-control", "no-store")], b"{}"
    )
    d = Observed(201, [("content-type", "application/json;charset=UTF-8")], b"{}")
    result = compare(c, d, CompareRules())
    assert kinds(result) == [("status", "status"), ("headers.cache-control", "header")]
    only_ct = CompareRules(headers=("content-type",))
    assert compare(Observed(200, c.headers, b"{}"), Observed(200, d.headers, b"{}"), only_ct) is None


def test_ignore_paths_with_wildcards() -> None:
    """Ignored paths (with [*]) and everything under them are not compared."""
    rules = CompareRules(ignore=("$.created_at", "$.items[*].id"))
    c = {"created_at": "x", "items": [{"id": 1, "v": 1}, {"id": 2, "v": 2}]}
    d = {"created_at": "y", "items": [{"id": 9, "v": 1}, {"id": 8, "v": 3}]}
    assert kinds(diff(c, d, rules)) == [("$.items[1].v", "changed")]
    assert diff({"created_at": "x"}, {}, rules) is None


def test_arrays_as_sets() -> None:
    """A set path ignores order but reports elements only one side has."""
    rules = CompareRules(sets=("$.tags",))
    assert diff({"tags": ["a", "b", "c"]}, {"tags": ["c", "a", "b"]}, rules) is None
    result = diff({"tags": ["a", "b", "b"]}, {"tags": ["b", "a", "z"]}, rules)
    assert result is not None
    assert [(x.path, x.kind, x.control, x.candidate) for x in result.differences] == [
        ("$.tags[*]", "missing", "b", None),
        ("$.tags[*]", "extra", None, "z"),
    ]
    assert diff({"tags": ["a", "b"]}, {"tags": ["b", "a"]}) is not None  # without the rule, order matters


def test_sets_of_objects_with_ignored_members() -> None:
    """Set elements are compared after removing ignored members."""
    rules = CompareRules(sets=("$.items",), ignore=("$.items[*].id",))
    c = {"items": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}]}
    d = {"items": [{"id": 7, "n": "b"}, {"id": 8, "n": "a"}]}
    assert diff(c, d, rules) is None


def test_numeric_tolerance() -> None:
    """Numbers within the tolerance are equal; beyond it they differ."""
    rules = CompareRules(tolerance=0.01)
    assert diff({"x": 1.0}, {"x": 1.005}, rules) is None
    assert kinds(diff({"x": 1.0}, {"x": 1.02}, rules)) == [("$.x", "changed")]
    assert kinds(diff({"x": 1.0}, {"x": 1.005})) == [("$.x", "changed")]


def test_null_equals_missing() -> None:
    """With null_equals_missing, a null member and an absent one are equal."""
    rules = CompareRules(null_equals_missing=True)
    assert diff({"a": None, "b": 1}, {"b": 1}, rules) is None
    assert diff({"b": 1}, {"b": 1, "a": None}, rules) is None
    assert kinds(diff({"a": None}, {})) == [("$.a", "missing")]


def test_non_json_bodies_compared_as_bytes() -> None:
    """Non-JSON bodies (or invalid JSON) are compared as bytes."""
    text = [("content-type", "text/plain")]
    assert compare(Observed(200, text, b"hello"), Observed(200, text, b"hello"), CompareRules()) is None
    result = compare(Observed(200, text, b"hello"), Observed(200, text, b"hellO"), CompareRules())
    assert kinds(result) == [("body", "body")]
    bad = compare(Observed(200, JSON, b"{oops"), Observed(200, JSON, b"{}"), CompareRules())
    assert kinds(bad) == [("body", "body")]


def test_compressed_bodies_compared_decoded() -> None:
    """gzip and deflate bodies are decoded before comparison."""
    doc = orjson.dumps({"a": 1, "b": "x" * 100})
    gz = Observed(200, [*JSON, ("content-encoding", "gzip")], gzip.compress(doc))
    plain = Observed(200, JSON, doc)
    deflated = Observed(200, [*JSON, ("content-encoding", "deflate")], zlib.compress(doc))
    assert compare(gz, plain, CompareRules(headers=("content-type",))) is None
    assert compare(deflated, gz, CompareRules(headers=("content-type",))) is None
    other = Observed(200, JSON, orjson.dumps({"a": 2, "b": "x" * 100}))
    assert kinds(compare(gz, other, CompareRules(headers=()))) == [("$.a", "changed")]


def test_decode_body_limits() -> None:
    """Decoding refuses bodies that inflate beyond the limit and unknown encodings."""
    bomb = gzip.compress(b"0" * 100_000)
    assert decode_body(bomb, "gzip", 1000) is None
    assert decode_body(bomb, "gzip", 200_000) == b"0" * 100_000
    assert decode_body(b"abc", "compress", 1000) is None
    assert decode_body(b"abc", None, 1000) == b"abc"


def test_incomplete_bodies_compare_by_hash() -> None:
    """Bodies over the cap compare by digest only."""
    a = Observed(200, JSON, b"", complete=False, digest="aa")
    assert compare(a, Observed(200, JSON, b"", complete=False, digest="aa"), CompareRules()) is None
    result = compare(a, Observed(200, JSON, b"", complete=False, digest="bb"), CompareRules())
    assert kinds(result) == [("body", "hash")]


def test_signature_is_sorted_normalised_paths() -> None:
    """The signature is the sorted set of paths with indices normalised."""
    result = diff(
        {"items": [{"b": 1, "a": 1}, {"b": 1, "a": 1}]}, {"items": [{"b": 2, "a": 2}, {"b": 2, "a": 1}]}
    )
    assert result is not None
    assert result.signature == "$.items[*].a $.items[*].b"
    assert normalise_path("$.a[12].b[0]") == "$.a[*].b[*]"


@pytest.mark.parametrize("key", ["a b", "é", "1x"])
def test_odd_member_names_are_quoted(key: str) -> None:
    """Member names that are not identifiers are rendered quoted."""
    result = diff({key: 1}, {key: 2})
    assert result is not None
    assert result.differences[0].path == f"$[{orjson.dumps(key).decode()}]"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(JSON_VALUES)
def test_property_a_document_equals_itself(doc: object) -> None:
    """Any JSON document compared with a re-serialised copy of itself has no difference."""
    assert (
        compare(obs(doc), Observed(200, JSON, orjson.dumps(orjson.loads(orjson.dumps(doc)))), CompareRules())
        is None
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(JSON_VALUES, max_size=6), st.randoms(use_true_random=False))
def test_property_sets_ignore_order(items: list[object], rnd: Any) -> None:
    """Under a sets rule any permutation of an array compares equal; without it a real reorder differs."""
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert diff({"s": items}, {"s": shuffled}, CompareRules(sets=("$.s",))) is None
    if orjson.dumps(items) != orjson.dumps(shuffled):
        assert diff({"s": items}, {"s": shuffled}) is not None


def test_nested_true_and_one_still_differ() -> None:
    """Python's True == 1 must not hide a nested boolean/number change (or 1 vs 1.0 create one)."""
    assert kinds(diff({"a": {"b": [1]}}, {"a": {"b": [True]}})) == [("$.a.b[0]", "type")]
    assert diff({"a": {"b": [1]}}, {"a": {"b": [1.0]}}) is None
