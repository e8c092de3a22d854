"""evidence.diff: the streamed diff gives exactly the changes a brute-force diff of dicts gives.

The reference (``reference_diff``) holds both snapshots in dicts and follows the rules of the
module docstring literally; the property test compares the two on random small snapshots given
in random order, with the chunk sizes lowered so that the on-disk sort and merge are used too.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence import diff
from evidence.diff import Change, diff_bags, diff_records, diff_snapshots
from evidence.model import STREAMS, Grant, Principal, Resource, canonical_json

Snapshot = dict[str, dict[str, dict[str, Any]]]


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------


def _js(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fields(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(f for f in set(a) | set(b) if f not in a or f not in b or _js(a[f]) != _js(b[f])))


def _public(snapshot: Snapshot) -> set[str]:
    return {g["resource_id"] for g in snapshot.get("grants", {}).values()
            if g.get("link_scope") == "anyone" or g.get("principal_id") == "anyone"}


def reference_diff(old: Snapshot, new: Snapshot) -> list[tuple]:
    became_public = _public(new) - _public(old)
    out: list[dict[str, Any]] = []
    for stream in STREAMS:
        o, n = old.get(stream, {}), new.get(stream, {})
        removed = [(k, o[k]) for k in o if k not in n]
        added = [(k, n[k]) for k in n if k not in o]
        for k in o.keys() & n.keys():
            fields = _fields(o[k], n[k])
            public = stream == "resources" and k in became_public
            if fields or public:
                out.append(dict(stream=stream, kind="changed", key=k, old=o[k], new=n[k], fields=fields,
                                role_changed=stream == "grants" and bool({"role", "raw_role"} & set(fields)),
                                state_changes=tuple(f for f in ("enabled", "mfa", "admin", "kind") if f in fields)
                                if stream == "principals" else (),
                                became_shared=stream == "resources" and o[k].get("shared") is not True
                                and n[k].get("shared") is True,
                                became_public=public))
        if stream == "grants":
            groups: dict[str, list] = {}
            for side, items in ((0, removed), (1, added)):
                for k, d in items:
                    ident = _js([d.get(f) or "" for f in ("resource_id", "principal_id", "via", "grant_id")])
                    groups.setdefault(ident, []).append((side, k, d))
            removed, added = [], []
            for members in groups.values():
                if sorted(m[0] for m in members) == [0, 1]:
                    (_, ok, od), (_, nk, nd) = sorted(members, key=lambda m: m[0])
                    fields = _fields(od, nd)
                    out.append(dict(stream=stream, kind="changed", key=nk, old_key=ok, old=od, new=nd, fields=fields,
                                    role_changed=bool({"role", "raw_role"} & set(fields))))
                else:
                    for side, k, d in members:
                        (added if side else removed).append((k, d))
        for k, d in removed:
            out.append(dict(stream=stream, kind="removed", key=k, old=d, new=None))
        for k, d in added:
            out.append(dict(stream=stream, kind="added", key=k, old=None, new=d,
                            became_shared=stream == "resources" and d.get("shared") is True,
                            became_public=stream == "resources" and k in became_public))
    return sorted(_norm_dict(c) for c in out)


def _norm_dict(c: dict[str, Any]) -> tuple:
    return (c["stream"], c["kind"], c["key"], c.get("old_key"), _js(c["old"]), _js(c["new"]), c.get("fields", ()),
            c.get("role_changed", False), c.get("state_changes", ()), c.get("became_shared", False),
            c.get("became_public", False))


def _norm(changes: Iterator[Change]) -> list[tuple]:
    return sorted(_norm_dict(c.__dict__) for c in changes)


@contextlib.contextmanager
def small_chunks(chunk: int, in_memory: int) -> Iterator[None]:
    saved = diff.CHUNK_BYTES, diff.IN_MEMORY_BYTES
    diff.CHUNK_BYTES, diff.IN_MEMORY_BYTES = chunk, in_memory
    try:
        yield
    finally:
        diff.CHUNK_BYTES, diff.IN_MEMORY_BYTES = saved


# ---------------------------------------------------------------------------------------------
# Random snapshots
# ---------------------------------------------------------------------------------------------

IDS = st.sampled_from(["r1", "r2", "r|3", "文書", 'q"x', "a\\b", "r1 "])
PRINCIPAL_IDS = st.sampled_from(["u1", "u2", "anyone", "domain:example.jp", "g]1"])
MAYBE_BOOL = st.sampled_from([None, True, False])


@st.composite
def grant(draw) -> dict[str, Any]:
    return Grant(
        resource_id=draw(IDS), principal_id=draw(PRINCIPAL_IDS), principal_kind=draw(st.sampled_from(["user", "anyone"])),
        role=draw(st.sampled_from(["viewer", "editor", "owner"])), raw_role=draw(st.sampled_from(["reader", "writer"])),
        via=draw(st.sampled_from(["direct", "link"])), link_scope=draw(st.sampled_from([None, "anyone", "specific"])),
        expiry=draw(st.sampled_from([None, "2027-01-01T00:00:00Z"])), grant_id=draw(st.sampled_from([None, "p1", "p2"])),
    ).record().data


@st.composite
def principal(draw) -> dict[str, Any]:
    return Principal(id=draw(st.sampled_from(["u1", "u2", "u3", "é"])), kind=draw(st.sampled_from(["user", "guest"])),
                     enabled=draw(MAYBE_BOOL), mfa=draw(MAYBE_BOOL), admin=draw(MAYBE_BOOL),
                     display_name=draw(st.sampled_from(["A", "B"]))).record().data


@st.composite
def resource(draw) -> dict[str, Any]:
    return Resource(id=draw(IDS), kind="file", shared=draw(MAYBE_BOOL), name=draw(st.sampled_from(["x", "y"])),
                    attributes=draw(st.sampled_from([{}, {"n": 1}, {"n": True}, {"n": 1.5}]))).record().data


@st.composite
def membership(draw) -> dict[str, Any]:
    return {"group_id": draw(st.sampled_from(["g1", "g2"])), "member_id": draw(st.sampled_from(["u1", "u2"])),
            "member_kind": "user", "role": draw(st.sampled_from([None, "OWNER", "MEMBER"])), "attributes": {}}


KEYS = {
    "grants": lambda d: Grant(**{k: v for k, v in d.items()}).key(),
    "principals": lambda d: d["id"],
    "resources": lambda d: d["id"],
    "memberships": lambda d: f"{d['group_id']}|{d['member_id']}",
}
MAKERS = {"grants": grant, "principals": principal, "resources": resource, "memberships": membership}


@st.composite
def snapshot(draw) -> Snapshot:
    out: Snapshot = {}
    for stream in STREAMS:
        datas = draw(st.lists(MAKERS[stream](), max_size=12))
        out[stream] = {KEYS[stream](d): d for d in datas}  # duplicate-free keys: the last one wins
    return out


@st.composite
def snapshot_pair(draw) -> tuple[Snapshot, Snapshot]:
    """A snapshot and a variation of it: records kept, dropped, changed, or new ones added."""
    old = draw(snapshot())
    extra = draw(snapshot())
    new: Snapshot = {}
    for stream in STREAMS:
        kept = {k: d for k, d in old[stream].items() if draw(st.booleans()) or draw(st.booleans())}
        for k in list(kept):
            if draw(st.integers(0, 3)) == 0:
                d = draw(MAKERS[stream]())
                if KEYS[stream](d) == k:
                    kept[k] = d
        new[stream] = {**kept, **{k: d for k, d in extra[stream].items() if draw(st.booleans())}}
    return old, new


def _as_input(snap: Snapshot, rnd) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    out = {}
    for stream, records in snap.items():
        items = list(records.items())
        rnd.shuffle(items)
        out[stream] = items
    return out


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=snapshot_pair(), rnd=st.randoms(use_true_random=False), chunk=st.sampled_from([None, 1, 200, 700]))
def test_matches_reference(pair, rnd, chunk, tmp_path_factory) -> None:
    old, new = pair
    workdir = tmp_path_factory.mktemp("diff")
    ctx = small_chunks(chunk, min(chunk, 300)) if chunk else contextlib.nullcontext()
    with ctx:
        got = _norm(diff_snapshots(_as_input(old, rnd), _as_input(new, rnd), workdir=workdir))
    assert got == reference_diff(old, new)
    assert list(workdir.iterdir()) == []  # temporary files removed


def _write_bag(bag: Path, snap: dict[str, list[tuple[str, dict[str, Any]]]]) -> Path:
    records = bag / "data" / "records"
    records.mkdir(parents=True)
    for stream, items in snap.items():
        with gzip.open(records / f"{stream}.jsonl.gz", "wt", encoding="utf-8") as f:
            for key, data in items:
                f.write(canonical_json({"key": key, "record": data}) + "\n")
    return bag


def _g(rid: str, pid: str, raw_role: str, role: str = "viewer", **kw: Any) -> tuple[str, dict[str, Any]]:
    rec = Grant(resource_id=rid, principal_id=pid, principal_kind="user", role=role, raw_role=raw_role, **kw).record()
    return rec.key, dict(rec.data)


def test_bags_labels_and_missing_streams(tmp_path: Path) -> None:
    r_same = Resource(id="r1", kind="file", shared=True).record()
    r_shared_old = Resource(id="r2", kind="file", shared=None).record()
    r_shared_new = Resource(id="r2", kind="file", shared=True).record()
    p_old = Principal(id="u1", kind="user", enabled=True, mfa=False, admin=False, display_name="A").record()
    p_new = Principal(id="u1", kind="guest", enabled=True, mfa=True, admin=False, display_name="B").record()
    old = _write_bag(tmp_path / "old", {
        "principals": [(p_old.key, dict(p_old.data))],
        "resources": [(r_same.key, dict(r_same.data)), (r_shared_old.key, dict(r_shared_old.data))],
        "grants": [_g("r1", "u1", "reader", grant_id="p1"), _g("r2", "u2", "reader"), _g("r3", "u3", "reader")],
    })
    new = _write_bag(tmp_path / "new", {  # no memberships file in either
        "principals": [(p_new.key, dict(p_new.data))],
        "resources": [(r_shared_new.key, dict(r_shared_new.data)), (r_same.key, dict(r_same.data))],
        "grants": [_g("r3", "u3", "reader"), _g("r1", "anyone", "reader", link_scope="anyone"),
                   _g("r1", "u1", "writer", role="editor", grant_id="p1")],
    })
    changes = {(c.stream, c.kind, c.key): c for c in diff_bags(old, new, workdir=tmp_path)}
    assert set(changes) == {
        ("principals", "changed", "u1"), ("resources", "changed", "r1"), ("resources", "changed", "r2"),
        ("grants", "changed", "r1|u1|direct|writer|p1"), ("grants", "removed", "r2|u2|direct|reader"),
        ("grants", "added", "r1|anyone|direct|reader"),
    }
    p = changes["principals", "changed", "u1"]
    assert p.fields == ("display_name", "kind", "mfa") and p.state_changes == ("mfa", "kind")
    r1 = changes["resources", "changed", "r1"]
    assert r1.became_public and not r1.became_shared and r1.fields == () and r1.old == r1.new
    r2 = changes["resources", "changed", "r2"]
    assert r2.became_shared and not r2.became_public and r2.fields == ("shared",)
    g = changes["grants", "changed", "r1|u1|direct|writer|p1"]
    assert g.role_changed and g.old_key == "r1|u1|direct|reader|p1" and g.fields == ("raw_role", "role")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "new", tmp_path / "old"]  # temporary files removed


def test_missing_stream_files_are_empty(tmp_path: Path) -> None:
    old = _write_bag(tmp_path / "old", {})
    new = _write_bag(tmp_path / "new", {"memberships": [("g|u", {"group_id": "g", "member_id": "u"})]})
    assert [(c.stream, c.kind, c.key) for c in diff_bags(old, new)] == [("memberships", "added", "g|u")]
    assert list(diff_bags(new, new)) == []


def test_duplicate_keys_use_the_first_line(tmp_path: Path) -> None:
    a, b = {"id": "u1", "kind": "user", "mfa": False}, {"id": "u1", "kind": "user", "mfa": True}
    # in sorted line order '..."mfa":false...' comes before '..."mfa":true...'
    assert list(diff_records([("u1", b), ("u1", a)], [("u1", a)], stream="principals")) == []
    [c] = diff_records([("u1", a)], [("u1", b), ("u1", b)], stream="principals")
    assert c.kind == "changed" and c.state_changes == ("mfa",)


def test_json_types_are_told_apart() -> None:
    [c] = diff_records([("k", {"v": 1})], [("k", {"v": True})], stream="memberships")
    assert c.fields == ("v",)
    [c] = diff_records([("k", {"v": 1})], [("k", {})], stream="memberships")
    assert c.fields == ("v",)


def test_non_canonical_lines_that_mean_the_same_are_unchanged(tmp_path: Path) -> None:
    old = _write_bag(tmp_path / "old", {"memberships": [("g|u", {"a": 1, "b": 2})]})
    new = tmp_path / "new" / "data" / "records"
    new.mkdir(parents=True)
    with gzip.open(new / "memberships.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write('{"key":"g|u","record":{"b": 2, "a": 1}}')  # no trailing newline either
    assert list(diff_bags(old, tmp_path / "new")) == []


def test_large_enough_to_spill(tmp_path: Path) -> None:
    """Thousands of grants through the on-disk path (several runs), against the reference."""
    import random

    rnd = random.Random(7)
    old = {k: d for k, d in (_g(f"r{i % 500}", f"u{i}", "reader", grant_id=f"p{i}") for i in range(5000))}
    new = dict(old)
    for k in rnd.sample(sorted(old), 200):
        del new[k]
    for k in rnd.sample(sorted(new), 100):
        d = dict(new.pop(k), raw_role="writer", role="editor")
        new[Grant(**d).key()] = d
    for i in range(5000, 5150):
        k, d = _g(f"r{i % 500}", "anyone" if i % 50 == 0 else f"u{i}", "reader", grant_id=f"p{i}")
        new[k] = d
    with small_chunks(64 << 10, 1 << 10):
        got = _norm(diff_records(rnd.sample(list(old.items()), len(old)), rnd.sample(list(new.items()), len(new)),
                                 workdir=tmp_path))
    assert got == reference_diff({"grants": old}, {"grants": new})
    counts = Counter(kind for _, kind, *_ in got)
    assert counts == {"removed": 200, "changed": 100, "added": 150}
    assert list(tmp_path.iterdir()) == []
