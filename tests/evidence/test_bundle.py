"""evidence.bundle and its fast paths: the bytes of a bag are exactly those of the plain algorithm.

The plain algorithm is written out here once (``reference_bag``): ``Record.line()`` through gzip
in chunks of 512 lines, ``csv.writer`` over the reference cell converters, and the record hashes
one ``h64`` at a time, sorted and de-duplicated in memory. Every fast path of the writer
(canonical JSON without per-call set-up, the generated line-and-row functions, batched hashing,
the helper process, the slice-wise merges of the hash files) must give the same bytes.
"""

from __future__ import annotations

import csv
import enum
import gc
import gzip
import hashlib
import io
import json
import math
import os
import random
import signal
import time
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from evidence import bundle, keyset, tables
from evidence.bundle import BundleWriter, WriterProcessError
from evidence.model import (
    STREAMS,
    Grant,
    Membership,
    Principal,
    RawPage,
    Record,
    Resource,
    _canonical_json_reference,
    canonical_json,
)
from evidence.vault import Vault

TOKYO = ZoneInfo("Asia/Tokyo")
STARTED = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
RUN_INFO = {"mode": "full", "identity": "test", "calls": {}, "retries": {}, "throttled": {}, "errors": [],
            "errors_total": 0}


class Colour(enum.IntEnum):
    RED = 7


class Tag(str, enum.Enum):
    A = "=alpha"


class Text(str):
    pass


WORDS = ["議事録", "report", "=SUM(A1)", "+1", "-x", "@me", "\tTab", "＝全角", "00123", "2026-11-26", "TRUE",
         "1E5", "Nov-26", "plain", "a,b", 'q"uote', "new\nline", "", " 12 ", "R8.11.26", "x" * 300, "1" * 300,
         "emoji😀", "back\\slash", "\r", "uid:1", "/share/部/f.docx"]
TIMES = ["2026-11-26T03:00:00Z", "2026-01-01T00:00:00.123456Z", "not a time", "2026-11-26T03:00:00", "",
         "2026-11-26T03:00:00+05:30", "0001-01-01T00:00:00Z", "=1+1"]


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.3:
        return rng.choice(WORDS)
    if r < 0.45:
        return rng.choice([rng.randint(-5, 10**6), 10**25, -(2**63), 0])
    if r < 0.55:
        return rng.choice([True, False, None])
    if r < 0.6:
        return rng.choice([1.5, -0.0, 1e300, 0.1])
    if r < 0.75 and depth < 3:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r < 0.9 and depth < 3:
        return {rng.choice(WORDS) + str(i): rand_value(rng, depth + 1) for i in range(rng.randint(0, 4))}
    return rng.choice(WORDS)


def rand_records(seed: int, n: int) -> list[Record]:
    """Records of every stream, mostly as the builders make them, some of odd shapes and types."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w = rng.choice
        attrs = {} if rng.random() < 0.4 else {k: rand_value(rng) for k in rng.sample(
            ["mode", "uid", "root", "zeta", "Alpha", "ä", "acl", "=x"], rng.randint(1, 5))}
        kind = rng.randrange(4)
        if kind == 0:
            rec = Principal(id=w([f"uid:{i}", w(WORDS)]), kind="user", email=w([None, f"u{i}@example.co.jp"]),
                            display_name=w([None, w(WORDS)]), external=w([None, True, False]),
                            roles=tuple(w(WORDS) for _ in range(rng.randint(0, 2))), last_sign_in=w([None, *TIMES]),
                            created=w([None, *TIMES]), attributes=attrs).record()
        elif kind == 1:
            rec = Membership(group_id=f"gid:{i % 7}", member_id=w([f"uid:{i}", w(WORDS)]), member_kind="user",
                             role=w([None, "member", w(WORDS)]), attributes=attrs).record()
        elif kind == 2:
            rec = Resource(id=f"/share/{w(WORDS)}/{i}", kind=w(["file", "folder"]), name=w([None, w(WORDS)]),
                           path=f"/share/{i}", owners=tuple(w([f"uid:{i % 5}", w(WORDS)]) for _ in range(rng.randint(0, 2))),
                           size=w([None, i, 0]), modified=w([None, *TIMES]), shared=w([None, True, False]),
                           attributes=attrs).record()
        else:
            rec = Grant(resource_id=f"/share/{i // 3}", principal_id=w([f"uid:{i % 9}", w(WORDS)]),
                        principal_kind="user", role="viewer", raw_role=w(["u::rw-", w(WORDS)]),
                        via=w(["direct", "default_acl"]), expiry=w([None, *TIMES]),
                        grant_id=w([None, None, w(WORDS), str(i)]), attributes=attrs).record()
        data = dict(rec.data)
        r = rng.random()
        if r < 0.03:
            data["extra_field"] = rand_value(rng)
        elif r < 0.05:
            data.pop(rng.choice(list(data)))
        elif r < 0.07:
            data = dict(reversed(list(data.items())))
        elif r < 0.11:
            data[rng.choice(list(data))] = rng.choice(
                [Colour.RED, 2.5, (1, "=x"), {"z": 1, "a": [1, 2]}, 10**25, True, -3, Tag.A, Text("=t"), [1, "x"],
                 ["a", Text("b")], {}, None, 12, "00123"]
            )
        elif r < 0.12:
            data["attributes"] = rand_value(rng)
        out.append(Record(rec.stream, rec.key, data))
    return out


# --- the plain algorithm ------------------------------------------------------------------------


def reference_row(stream: str, data: Any) -> str:
    sink = io.StringIO(newline="")
    csv.writer(sink).writerow([convert(data.get(name)) for name, convert in tables._converters(stream, TOKYO)])
    return sink.getvalue()


def reference_gzip(lines: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=bundle.COMPRESSLEVEL, mtime=0) as gz:
        for i in range(0, len(lines), 512):
            gz.write(b"\n".join(lines[i : i + 512] + [b""]))
    return buf.getvalue()


def reference_hash_file(values: list[int]) -> tuple[bytes, int]:
    unique = sorted(set(values))
    return array("Q", unique).tobytes(), len(values) - len(unique)


def reference_bag(records: list[Record], raw: list[RawPage]) -> dict[str, bytes]:
    """records/, raw/, tables/ and the .state/keys files as the plain algorithm writes them."""
    files: dict[str, bytes] = {}
    for stream in STREAMS:
        lines = [r.line().encode() for r in records if r.stream == stream]
        files[f"data/records/{stream}.jsonl.gz"] = reference_gzip(lines)
        header = reference_row_header(stream)
        rows = "".join(reference_row(stream, r.data) for r in records if r.stream == stream)
        files[f"data/tables/{stream}.csv"] = ("\ufeff" + header + rows).encode()
        keys = [keyset.h64(line[: line.index(b',"record":')]) for line in lines]
        files[f"keys/{stream}.keys"] = reference_hash_file(keys)[0]
        files[f"keys/{stream}.full"] = reference_hash_file([keyset.h64(line) for line in lines])[0]
    by_file: dict[str, list[bytes]] = {}
    for page in raw:
        by_file.setdefault(bundle._endpoint_file(page.endpoint), []).append(page.line().encode())
    for name, lines in by_file.items():
        files[f"data/raw/{name}.jsonl.gz"] = reference_gzip(lines)
    return files


def reference_row_header(stream: str) -> str:
    sink = io.StringIO(newline="")
    csv.writer(sink).writerow(tables.columns_for(stream))
    return sink.getvalue()


def write_bag(vault: Vault, run_id: str, records: list[Record], raw: list[RawPage]) -> bundle.SealedBag:
    writer = BundleWriter(vault, run_id=run_id, connector_id="check", connector_type="local_files",
                          started=STARTED, tz=TOKYO, organization="検査株式会社", previous=None)
    for r in records:
        writer.write(r)
    for page in raw:
        writer.write_raw(page)
    return writer.seal(status="complete", reasons=[], finished=STARTED, run_info=RUN_INFO)


def bag_files(vault: Vault, sealed: bundle.SealedBag) -> dict[str, bytes]:
    files = {p.relative_to(sealed.path).as_posix(): p.read_bytes()
             for p in sealed.path.rglob("*") if p.is_file()}
    for p in (vault.state / "keys" / sealed.run_id).iterdir():
        files[f"keys/{p.name}"] = p.read_bytes()
    return files


@pytest.fixture(params=["process", "in-process"])
def sink_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(bundle, "WRITER_PROCESS", request.param == "process")
    return request.param


# --- the whole bag ------------------------------------------------------------------------------


def test_bag_bytes_are_those_of_the_plain_algorithm(tmp_path: Path, sink_mode: str) -> None:
    records = rand_records(1, 3000)
    raw = [RawPage(endpoint=f"/api/v1/{p % 2}?x", params={"page": p}, page=p, response={"v": rand_value(random.Random(p))})
           for p in range(600)]
    vault = Vault(tmp_path / "vault").ensure()
    sealed = write_bag(vault, "r00000001", records, raw)
    got = bag_files(vault, sealed)
    expected = reference_bag(records, raw)
    for name, data in expected.items():
        assert got[name] == data, name
    # the manifest holds the digests known from writing: they are those of the files
    manifest = dict(line.split("  ")[::-1] for line in got["manifest-sha256.txt"].decode().splitlines())
    for name, data in got.items():
        if name.startswith("data/"):
            assert manifest[name] == hashlib.sha256(data).hexdigest(), name
    assert sealed.counts == {s: sum(r.stream == s for r in records) for s in STREAMS}


def test_duplicate_keys_are_counted_and_make_the_bag_partial(tmp_path: Path, sink_mode: str) -> None:
    records = rand_records(2, 700)
    grants = [r for r in records if r.stream == "grants"]
    vault = Vault(tmp_path / "vault").ensure()
    sealed = write_bag(vault, "r00000002", records + grants[:3] + grants[:1], [])
    assert sealed.status == "partial"
    run = json.loads((sealed.path / "data" / "run.json").read_text(encoding="utf-8"))
    assert "grants: 4 records share a key with another record" in run["reasons"]


def test_two_sink_modes_write_the_same_bag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = rand_records(3, 1500)
    bags = []
    for mode in (True, False):
        monkeypatch.setattr(bundle, "WRITER_PROCESS", mode)
        vault = Vault(tmp_path / str(mode)).ensure()
        bags.append(bag_files(vault, write_bag(vault, "r00000003", records, [])))
    assert bags[0] == bags[1]


def test_a_record_json_cannot_encode_is_refused_before_anything_is_written(tmp_path: Path, sink_mode: str) -> None:
    vault = Vault(tmp_path / "vault").ensure()
    writer = BundleWriter(vault, run_id="r00000004", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    good = Resource(id="r1", kind="file").record()
    writer.write(good)
    for bad in ({**good.data, "attributes": {"x": math.nan}}, {**good.data, "attributes": {"x": object()}},
                {**good.data, "size": math.inf}):
        with pytest.raises((ValueError, TypeError)):
            writer.write(Record("resources", "r2", bad))
    assert writer.counts == {"resources": 1}
    sealed = writer.seal(status="complete", reasons=[], finished=STARTED, run_info=RUN_INFO)
    assert bag_files(vault, sealed)["data/records/resources.jsonl.gz"] == reference_gzip([good.line().encode()])


# --- the writer process -------------------------------------------------------------------------


def test_an_error_in_the_writer_process_is_raised_in_the_main_process(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault").ensure()
    writer = BundleWriter(vault, run_id="r00000005", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    assert isinstance(writer._sink, bundle._ProcessSink)
    (writer.data / "raw" / "api.jsonl.gz").write_bytes(b"in the way")  # the process cannot create it
    writer.write_raw(RawPage(endpoint="api", params={}, page=0, response={}))
    with pytest.raises(FileExistsError) as caught:
        for r in rand_records(5, 5000):  # the error surfaces at a later call, or at the seal
            writer.write(r)
        writer.seal(status="complete", reasons=[], finished=STARTED, run_info=RUN_INFO)
    assert caught.value.filename.endswith("api.jsonl.gz")
    with pytest.raises(FileExistsError):  # and again for every later call
        writer.seal(status="complete", reasons=[], finished=STARTED, run_info=RUN_INFO)
    assert writer._sink._proc.poll() is not None


def test_the_same_error_in_process_is_raised_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "WRITER_PROCESS", False)
    vault = Vault(tmp_path / "vault").ensure()
    writer = BundleWriter(vault, run_id="r00000006", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    (writer.data / "raw" / "api.jsonl.gz").write_bytes(b"in the way")
    with pytest.raises(FileExistsError):
        writer.write_raw(RawPage(endpoint="api", params={}, page=0, response={}))


def test_a_killed_writer_process_fails_the_bag(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault").ensure()
    writer = BundleWriter(vault, run_id="r00000007", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    writer._sink._proc.kill()
    writer._sink._proc.wait()
    with pytest.raises(WriterProcessError, match="ended unexpectedly"):
        for r in rand_records(7, 5000):
            writer.write(r)
        writer.seal(status="complete", reasons=[], finished=STARTED, run_info=RUN_INFO)


def _ignores_sigint(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def test_the_writer_process_ignores_ctrl_c_and_ends_with_the_bag(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault").ensure()
    writer = BundleWriter(vault, run_id="r00000008", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    proc = writer._sink._proc
    # a terminal's Ctrl-C goes to the foreground process group: the writer has a session of its own
    assert os.getsid(proc.pid) == proc.pid and os.getpgid(proc.pid) != os.getpgid(0)
    # and it ignores SIGINT even when sent to it directly, once Python has started it (SigIgn, bit 2)
    deadline = time.monotonic() + 30
    while not _ignores_sigint(proc.pid):
        assert time.monotonic() < deadline and proc.poll() is None, "the writer never set SIGINT to be ignored"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    records = rand_records(8, 2000)
    for r in records:
        writer.write(r)
    sealed = writer.seal(status="complete", reasons=[], finished=STARTED, run_info=RUN_INFO)
    assert proc.returncode == 0  # it finished the bag (whose random records share some keys)
    assert bag_files(vault, sealed)["data/records/grants.jsonl.gz"] == reference_bag(records, [])[
        "data/records/grants.jsonl.gz"]


def test_discarded_or_dropped_writers_leave_no_process(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault").ensure()
    writer = BundleWriter(vault, run_id="r00000009", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    proc = writer._sink._proc
    writer.discard()
    assert proc.poll() is not None and not writer.dir.exists()

    writer = BundleWriter(vault, run_id="r0000000a", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    proc = writer._sink._proc
    del writer
    gc.collect()
    assert proc.poll() is not None


def test_the_writer_process_ends_when_its_input_ends(tmp_path: Path) -> None:
    sink = bundle._ProcessSink()
    fid = sink.open("plain", str(tmp_path / "x"))
    sink.write(fid, b"abc")
    sink._proc.stdin.close()  # as when the main process is killed
    assert sink._proc.wait(timeout=30) == 1
    sink._finalizer()


# --- the pieces ---------------------------------------------------------------------------------


def test_line_and_row_functions_give_the_reference_text() -> None:
    fast_paths = 0
    for r in rand_records(10, 4000):
        assert tables._row_function(r.stream, TOKYO)(r.data) == reference_row(r.stream, r.data)
        made = tables.line_and_row_function(r.stream, TOKYO)(r.key, r.data)
        if made is not None:
            fast_paths += 1
            assert made == (r.line(), reference_row(r.stream, r.data))
    assert fast_paths > 3000  # the odd shapes take the general path, the rest the fast one


def test_line_and_row_function_declines_what_it_does_not_know() -> None:
    f = tables.line_and_row_function("grants", TOKYO)
    data = Grant(resource_id="r", principal_id="p", principal_kind="user", role="owner", raw_role="o").record().data
    assert f("k", dict(data)) is not None
    for odd in ({**data, "extra": 1}, {k: v for k, v in data.items() if k != "via"}, {**data, "role": 1.5},
                {**data, "role": Text("x")}, {**data, "expiry": 5}, {**data, "attributes": [1]},
                {**data, "inherited_from": ["a", 1]}, {**data, "role": ("a",)}):
        assert f("k", odd) is None, odd


def test_canonical_json_is_the_reference_text_and_errors() -> None:
    circular: dict[str, Any] = {}
    circular["me"] = circular
    rng = random.Random(11)
    values: list[Any] = [rand_value(rng) for _ in range(2000)]
    values += ["plain", "é\ud800", Text("t"), 1.5, -0.0, 10**30, True, None, Colour.RED, Tag.A, (1, 2), {1: "a", 2: "b"},
               {"b": 1, "a": {"d": [], "c": {}}}, [Tag.A, Colour.RED]]
    for value in values:
        assert canonical_json(value) == _canonical_json_reference(value)
    for bad in (math.nan, [math.inf], {"x": object()}, circular, {1: "a", "b": 2}, {(1,): 2}):
        with pytest.raises(Exception) as fast:
            canonical_json(bad)
        with pytest.raises(Exception) as reference:
            _canonical_json_reference(bad)
        assert type(fast.value) is type(reference.value) and str(fast.value) == str(reference.value)


def test_h64_many_is_h64() -> None:
    items = [os.urandom(n) for n in range(0, 300, 7)] + [b"", b'{"key":"x"']
    assert list(keyset.h64_many(items)) == [keyset.h64(i) for i in items]
    assert list(keyset.h64_many([])) == []


def test_add_record_lines_is_record_hashes() -> None:
    lines = [r.line().encode() for r in rand_records(12, 300)]
    keys, full = keyset.SortedHashBuilder(Path("/nonexistent")), keyset.SortedHashBuilder(Path("/nonexistent"))
    keyset.add_record_lines(lines, keys, full)
    assert list(keys._buf) == [keyset.record_hashes(line)[0] for line in lines]
    assert list(full._buf) == [keyset.record_hashes(line)[1] for line in lines]


@pytest.mark.parametrize("n", [0, 1, 2, 99, 100, 101, 517, 5000])
@pytest.mark.parametrize("duplicates", ["none", "some", "many"])
def test_sorted_hash_files_are_those_of_sort_and_dedupe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, duplicates: str
) -> None:
    # small runs and slices, so that copies of a value straddle runs and blocks
    monkeypatch.setattr(keyset, "CHUNK", 100)
    monkeypatch.setattr(keyset, "PRESORT", 16)
    monkeypatch.setattr(keyset, "MIN_BLOCK", 7)
    rng = random.Random(n)
    values = [rng.getrandbits(64) for _ in range(n)]
    if duplicates == "some" and n:
        values += rng.sample(values, max(1, n // 10)) * 2 + [0, 0, 2**64 - 1, 2**64 - 1]
    elif duplicates == "many":
        values = [v % 7 for v in values]
    rng.shuffle(values)
    builder = keyset.SortedHashBuilder(tmp_path)
    i = 0
    while i < len(values):  # add and extend in pieces of every size
        step = rng.choice([1, 3, 16, 64, 250])
        if step == 1:
            builder.add(values[i])
        else:
            builder.extend(array("Q", values[i : i + step]))
        i += step
    dup = builder.finish(tmp_path / "out")
    expected, expected_dup = reference_hash_file(values)
    assert (tmp_path / "out").read_bytes() == expected
    assert dup == expected_dup
    assert not list(tmp_path.glob("*.run"))


@pytest.mark.parametrize("block", [1, 3, 64, 65536])
def test_file_difference_counts_is_difference_counts(tmp_path: Path, block: int) -> None:
    rng = random.Random(block)
    for size_a, size_b, shared in [(0, 0, 0), (0, 9, 0), (9, 0, 0), (1, 1, 1), (300, 280, 250), (500, 500, 500),
                                   (50, 400, 10)]:
        pool = [rng.getrandbits(64) for _ in range(size_a + size_b)]
        a = sorted(set(pool[:size_a]))
        b = sorted(set(pool[:shared] + pool[size_a : size_a + size_b - shared]))
        (tmp_path / "a").write_bytes(array("Q", a).tobytes())
        (tmp_path / "b").write_bytes(array("Q", b).tobytes())
        got = keyset.file_difference_counts(tmp_path / "a", tmp_path / "b", block)
        assert got == keyset.difference_counts(a, b)


def test_raw_pages_from_many_threads_and_records_from_the_main_one_do_not_interleave(tmp_path: Path) -> None:
    """Connectors' client pools hand raw pages from worker threads while the runner writes records:
    one pipe to the writer process, so every message must arrive whole."""
    import threading

    vault = Vault(tmp_path / "vault").ensure()
    writer = BundleWriter(vault, run_id="r00000007", connector_id="check", connector_type="x", started=STARTED,
                          tz=TOKYO, organization="o", previous=None)
    assert isinstance(writer._sink, bundle._ProcessSink)
    pages_per_thread, threads = 1500, 8
    big = {"items": ["x" * 200] * 40}  # pages larger than a pipe buffer's share

    def pages(n: int) -> None:
        for i in range(pages_per_thread):
            writer.write_raw(RawPage(endpoint=f"api{n % 3}", params={"t": n}, page=i, response=big))

    workers = [threading.Thread(target=pages, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    records = list(rand_records(7, 20000))
    for r in records:
        writer.write(r)
    for t in workers:
        t.join()
    sealed = writer.seal(status="complete", reasons=[], finished=STARTED, run_info=RUN_INFO)
    raw_lines = 0
    for n in range(3):
        with gzip.open(sealed.path / "data" / "raw" / f"api{n}.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                assert json.loads(line)["response"] == big
                raw_lines += 1
    assert raw_lines == pages_per_thread * threads
    assert sum(writer.counts.values()) == len(records)
