"""connectors.local_files: mode bits, POSIX ACLs, the walk, and the config."""

from __future__ import annotations

import builtins
import errno
import grp
import json
import math
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

import connectors.local_files as lf
import connectors.local_files.walk as lf_walk
from connectors.base import Cancelled, Organization, RunContext
from connectors.local_files import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_USER,
    ACL_USER_OBJ,
    AclEntry,
    LocalFilesConfig,
    LocalFilesConnector,
    MalformedAcl,
    decode_posix_acl,
    encode_posix_acl,
)
from evidence.model import BUILDERS, STREAMS, Record, utc_iso

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (chown to an unknown uid)")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def make_ctx(cancel: threading.Event | None = None) -> RunContext:
    return RunContext(
        run_id="r1",
        connector_id="files",
        started=datetime.now(timezone.utc),
        organization=Organization("Ex", ("example.co.jp",)),
        cancel_event=cancel,
    )


class Snap:
    """What one snapshot yielded: records in order, by stream and key, and the context."""

    def __init__(self, records: list[Record], ctx: RunContext):
        self.records = records
        self.ctx = ctx
        self.by: dict[str, dict[str, dict]] = {s: {} for s in STREAMS}
        for r in records:
            assert r.key not in self.by[r.stream], f"duplicate key {r.stream} {r.key}"
            self.by[r.stream][r.key] = dict(r.data)

    @property
    def resources(self) -> dict[str, dict]:
        return self.by["resources"]

    @property
    def principals(self) -> dict[str, dict]:
        return self.by["principals"]

    def grants(self, resource: Path | str, via: str | None = None) -> dict[tuple[str, str], dict]:
        """(principal_id, raw_role) → grant data for one resource."""
        rid = str(resource)
        return {
            (g["principal_id"], g["raw_role"]): g
            for g in self.by["grants"].values()
            if g["resource_id"] == rid and (via is None or g["via"] == via)
        }

    def roles(self, resource: Path | str, via: str | None = "direct") -> dict[str, str]:
        return {pid: g["role"] for (pid, _), g in self.grants(resource, via).items()}


def snapshot(roots, **options) -> Snap:
    config = LocalFilesConfig(roots=[str(r) for r in roots], **options)
    ctx = make_ctx()
    records = list(LocalFilesConnector(config).snapshot(ctx))
    return Snap(records, ctx)


def setfacl(*args: str) -> None:
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl is not installed")
    done = subprocess.run(["setfacl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        if "Operation not supported" in done.stderr:
            pytest.skip(f"no POSIX ACLs on this file system: {done.stderr.strip()}")
        raise AssertionError(f"setfacl {args}: {done.stderr}")


def ids(name: str) -> tuple[int, int]:
    """uid of user ``nobody`` and gid of ``nogroup`` (or ``nobody``), skipping when absent."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        pytest.skip(f"no user {name}")
    for gname in ("nogroup", "nobody"):
        try:
            return uid, grp.getgrnam(gname).gr_gid
        except KeyError:
            continue
    pytest.skip("no group nogroup / nobody")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{private 0750/{notes.txt 0644, secret.txt 0600}, public 0777, locked.txt 0000, xonly 0711}."""
    root = tmp_path / "share"
    root.mkdir()
    (root / "private").mkdir()
    (root / "private" / "notes.txt").write_text("hello")
    (root / "private" / "secret.txt").write_text("s3cret!")
    (root / "public").mkdir()
    (root / "locked.txt").write_text("")
    (root / "xonly").mkdir()
    os.chmod(root, 0o755)
    os.chmod(root / "private", 0o750)
    os.chmod(root / "private" / "notes.txt", 0o644)
    os.chmod(root / "private" / "secret.txt", 0o600)
    os.chmod(root / "public", 0o777)
    os.chmod(root / "locked.txt", 0o000)
    os.chmod(root / "xonly", 0o711)
    return root


# --------------------------------------------------------------------------------------------
# resources and mode-bit grants
# --------------------------------------------------------------------------------------------


def test_resources_and_mode_bit_grants(tree: Path) -> None:
    snap = snapshot([tree])
    me, mygroup = f"uid:{os.geteuid()}", f"gid:{os.getegid()}"
    res = snap.resources
    assert set(res) == {
        str(tree),
        str(tree / "private"),
        str(tree / "private" / "notes.txt"),
        str(tree / "private" / "secret.txt"),
        str(tree / "public"),
        str(tree / "locked.txt"),
        str(tree / "xonly"),
    }

    root = res[str(tree)]
    assert root["kind"] == "folder" and root["name"] == "share" and root["path"] == str(tree)
    assert root["attributes"]["root"] == str(tree) and root["size"] is None

    notes = res[str(tree / "private" / "notes.txt")]
    st = os.lstat(tree / "private" / "notes.txt")
    assert notes["kind"] == "file"
    assert notes["name"] == "notes.txt"
    assert notes["size"] == 5
    assert notes["owners"] == [f"uid:{st.st_uid}"] == [me]
    assert notes["modified"] == utc_iso(st.st_mtime)
    assert notes["shared"] is True
    assert notes["attributes"] == {
        "mode": "0644",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "inode": st.st_ino,
        "device": st.st_dev,
        "nlink": 1,
        "root": str(tree),
    }
    assert set(snap.grants(tree / "private" / "notes.txt")) == {
        (me, "u::rw-"),
        (mygroup, "g::r--"),
        ("anyone-local", "o::r--"),
    }
    assert snap.roles(tree / "private" / "notes.txt") == {
        me: "owner",
        mygroup: "viewer",
        "anyone-local": "viewer",
    }
    other = snap.grants(tree / "private" / "notes.txt")[("anyone-local", "o::r--")]
    assert other["principal_kind"] == "anyone" and other["via"] == "direct"

    # 0750 folder: group may list, others nothing
    assert res[str(tree / "private")]["attributes"]["mode"] == "0750"
    assert snap.roles(tree / "private") == {me: "owner", mygroup: "viewer"}
    assert set(snap.grants(tree / "private")) == {(me, "u::rwx"), (mygroup, "g::r-x")}

    # 0600: the owner alone, not shared
    assert snap.roles(tree / "private" / "secret.txt") == {me: "owner"}
    assert res[str(tree / "private" / "secret.txt")]["shared"] is False

    # 0777: every local account may change it
    assert snap.roles(tree / "public") == {me: "owner", mygroup: "editor", "anyone-local": "editor"}
    assert ("anyone-local", "o::rwx") in snap.grants(tree / "public")

    # 0000: still recorded (nothing is opened), the owner keeps the owner role
    locked = res[str(tree / "locked.txt")]
    assert locked["attributes"]["mode"] == "0000" and locked["size"] == 0 and locked["shared"] is False
    assert set(snap.grants(tree / "locked.txt")) == {(me, "u::---")}

    # 0711: execute alone is no grant; it stays visible in the mode
    assert snap.roles(tree / "xonly") == {me: "owner"}
    assert res[str(tree / "xonly")]["attributes"]["mode"] == "0711"

    assert not snap.ctx.errors
    assert snap.ctx.calls["scandir"] == 4  # share, private, public, xonly
    assert snap.ctx.identity == f"uid {os.geteuid()} ({pwd.getpwuid(os.geteuid()).pw_name})"
    assert snap.ctx.sources == [
        {"root": str(tree), "exclude": [], "follow_symlinks": False, "read_acls": True}
    ]


def test_records_are_exactly_what_the_model_builders_make(tree: Path) -> None:
    """The walk builds record data from templates for speed: it must equal the builders' output."""
    fifo = tree / "pipe"
    os.mkfifo(fifo)
    (tree / "link").symlink_to("private")
    snap = snapshot([tree])
    for r in snap.records:
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in r.data.items()}
        rebuilt = BUILDERS[r.stream](**data).record()
        assert rebuilt == r
        json.dumps(r.data)  # JSON-safe
        r.line().encode("utf-8")


def test_special_files_are_recorded_and_never_opened(tree: Path, monkeypatch) -> None:
    fifo = tree / "private" / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block forever
    os.chmod(fifo, 0o620)
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *a, **k):
        if isinstance(file, (str, Path)) and str(file).startswith(str(tree)):
            opened.append(str(file))
        return real_open(file, *a, **k)

    def spy_os_open(path, *a, **k):
        if str(path).startswith(str(tree)):
            opened.append(str(path))
        return real_os_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)

    result: list[Snap] = []
    worker = threading.Thread(target=lambda: result.append(snapshot([tree])), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the walk blocked on a FIFO"
    snap = result[0]
    pipe = snap.resources[str(fifo)]
    assert pipe["kind"] == "special" and pipe["attributes"]["type"] == "fifo"
    assert pipe["attributes"]["mode"] == "0620" and pipe["size"] is None
    assert opened == []


def test_fast_timestamps_equal_utc_iso() -> None:
    rnd = random.Random(7)
    values = [0.0, 1.5, -1.5, 1e9 + 0.0000005, 1e9 + 0.0000015, 1764147600.999999, 1764147600.9999996,
              -62135596800.0, 253402300798.5]
    values += [rnd.uniform(-3e9, 4e9) for _ in range(5000)]
    values += [math.floor(v) + rnd.randrange(0, 10**6) / 1e6 for v in values[:1000]]
    for v in values:
        assert lf_walk._iso(v) == utc_iso(v), v
    assert lf_walk._iso(1e13) is None  # past 9999: utc_iso would raise, the walk keeps the raw value


def test_mtime_beyond_year_9999_does_not_stop_the_walk(tmp_path: Path) -> None:
    # ext4 clamps far-future times (to 2446), so feign the stat result of such a file system
    f = tmp_path / "future.txt"
    f.write_text("")
    real = os.lstat(f)
    fake = SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if k.startswith("st_")})
    fake.st_mtime = 1e12
    walk = lf_walk._Walk(make_ctx(), LocalFilesConfig(roots=[tmp_path]), set(), set())
    records = walk.entry_records(str(f), f.name, fake, "file", str(tmp_path), None)
    assert records[0].data["modified"] is None and records[0].data["attributes"]["mtime"] == 1e12


# --------------------------------------------------------------------------------------------
# POSIX ACLs
# --------------------------------------------------------------------------------------------


def test_access_acl_with_mask(tmp_path: Path) -> None:
    uid, gid = ids("nobody")
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o640)
    setfacl("-m", f"u:nobody:rw,g:{gid}:r,m::r", str(f))  # g:nogroup, by number
    snap = snapshot([tmp_path])
    me, mygroup = f"uid:{os.geteuid()}", f"gid:{os.getegid()}"

    grants = snap.grants(f)
    named = grants[(f"uid:{uid}", f"user:{uid}:rw-")]
    assert named["role"] == "viewer"  # rw- in the ACL, but the mask leaves r--
    assert named["attributes"] == {"acl_perm": "rw-", "effective": "r--"}
    assert named["principal_kind"] == "user" and named["via"] == "direct"
    group = grants[(f"gid:{gid}", f"group:{gid}:r--")]
    assert group["role"] == "viewer" and group["principal_kind"] == "group"
    assert group["attributes"] == {"acl_perm": "r--", "effective": "r--"}
    # the owning group's entry comes from the ACL (r--), not from the mode's group bits (the mask)
    assert grants[(mygroup, "g::r--")]["role"] == "viewer"
    assert grants[(me, "u::rw-")]["role"] == "owner"
    assert ("anyone-local", "o::---") not in grants and len(grants) == 4

    res = snap.resources[str(f)]
    assert res["shared"] is True
    assert res["attributes"]["acl"] == (
        f"user::rw-,user:{uid}:rw-,group::r--,group:{gid}:r--,mask::r--,other::---"
    )
    assert not snap.ctx.errors


def test_named_entry_masked_to_nothing_is_no_grant(tmp_path: Path) -> None:
    uid, _ = ids("nobody")
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o600)
    setfacl("-m", "u:nobody:rw,m::---", str(f))
    snap = snapshot([tmp_path])
    assert snap.roles(f) == {f"uid:{os.geteuid()}": "owner"}
    assert snap.resources[str(f)]["shared"] is False
    assert f"user:{uid}:rw-" in snap.resources[str(f)]["attributes"]["acl"]


def test_default_acl_on_a_folder(tmp_path: Path) -> None:
    uid, gid = ids("nobody")
    d = tmp_path / "projects"
    d.mkdir()
    os.chmod(d, 0o750)
    setfacl("-d", "-m", f"u:{uid}:rx,g:{gid}:rwx,o::r", str(d))
    snap = snapshot([tmp_path])

    defaults = snap.grants(d, via="default_acl")
    assert defaults[(f"uid:{uid}", f"default:user:{uid}:r-x")]["role"] == "viewer"
    assert defaults[(f"gid:{gid}", f"default:group:{gid}:rwx")]["role"] == "editor"
    assert defaults[("anyone-local", "default:o::r--")]["role"] == "viewer"
    # the default owner entry applies to whoever creates the child; not setgid: the group neither
    assert not any(raw.startswith(("default:u::", "default:g::")) for _, raw in defaults)
    assert all(g["via"] == "default_acl" for g in defaults.values())
    # the folder's own access is unchanged: mode bits only
    assert snap.roles(d) == {f"uid:{os.geteuid()}": "owner", f"gid:{os.getegid()}": "viewer"}
    assert "default_acl" in snap.resources[str(d)]["attributes"]
    assert "acl" not in snap.resources[str(d)]["attributes"]

    os.chmod(d, 0o2750)  # set-group-ID: new children get the folder's group
    snap = snapshot([tmp_path])
    defaults = snap.grants(d, via="default_acl")
    assert (f"gid:{os.stat(d).st_gid}", "default:g::r-x") in defaults


def test_acl_round_trip_and_the_kernel_format(tmp_path: Path) -> None:
    entries = [
        AclEntry(ACL_USER_OBJ, 6),
        AclEntry(ACL_USER, 6, 65534),
        AclEntry(ACL_GROUP_OBJ, 4),
        AclEntry(ACL_GROUP, 4, 65534),
        AclEntry(ACL_MASK, 4),
        AclEntry(ACL_OTHER, 4),
    ]
    data = encode_posix_acl(entries)
    # what the kernel returned for `setfacl -m u:nobody:rw,g:nogroup:r,m::r` (other r--)
    assert data.hex() == (
        "02000000" "01000600ffffffff" "02000600feff0000" "04000400ffffffff"
        "08000400feff0000" "10000400ffffffff" "20000400ffffffff"
    )
    assert decode_posix_acl(data) == entries
    assert decode_posix_acl(encode_posix_acl([])) == []
    assert lf.acl_to_text(entries) == (
        "user::rw-,user:65534:rw-,group::r--,group:65534:r--,mask::r--,other::r--"
    )

    f = tmp_path / "f"
    f.write_text("")
    try:
        os.setxattr(f, "system.posix_acl_access", data)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("no POSIX ACLs on this file system")
        raise
    assert decode_posix_acl(os.getxattr(f, "system.posix_acl_access")) == entries


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "shorter than the 4-byte header"),
        (b"\x02\x00\x00", "shorter than the 4-byte header"),
        (b"\x03\x00\x00\x00" + bytes(8), "version 3"),
        (b"\x02\x00\x00\x00\x01\x00\x06", "not a multiple of 8"),
        (encode_posix_acl([(0x40, 4, None)]), "unknown tag 0x40"),
        (encode_posix_acl([(ACL_USER_OBJ, 9, None)]), "beyond rwx"),
        (encode_posix_acl([(ACL_USER_OBJ, 6, None), (ACL_OTHER, 4, None)]), "no group entry"),
        (
            encode_posix_acl(
                [(ACL_USER_OBJ, 6, None), (ACL_USER, 6, 5), (ACL_GROUP_OBJ, 4, None), (ACL_OTHER, 0, None)]
            ),
            "without a mask",
        ),
        (
            encode_posix_acl(
                [(ACL_USER_OBJ, 6, None), (ACL_USER_OBJ, 6, None), (ACL_GROUP_OBJ, 4, None), (ACL_OTHER, 0, None)]
            ),
            "repeated",
        ),
        (encode_posix_acl([(ACL_USER_OBJ, 6, None), (ACL_USER, 6, None)]), "without an id"),
    ],
)
def test_malformed_acls_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(MalformedAcl, match=message):
        decode_posix_acl(data)


def test_malformed_acl_xattr_is_an_error_and_the_walk_goes_on(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("")
    os.chmod(bad, 0o640)
    (tmp_path / "later.txt").write_text("")
    garbage = b"\x02\x00\x00\x00\x01\x00\x06"
    try:
        os.setxattr(bad, "system.posix_acl_access", garbage)
    except OSError:
        # The kernel validates ACL xattrs (EINVAL): feign the bad bytes at the syscall boundary.
        real_get, real_list = os.getxattr, os.listxattr

        def getxattr(path, name, *a, **k):
            if str(path) == str(bad) and name == "system.posix_acl_access":
                return garbage
            return real_get(path, name, *a, **k)

        def listxattr(path=None, *a, **k):
            if str(path) == str(bad):
                return ["system.posix_acl_access"]
            return real_list(path, *a, **k)

        monkeypatch.setattr(os, "getxattr", getxattr)
        monkeypatch.setattr(os, "listxattr", listxattr)

    snap = snapshot([tmp_path])
    assert [(e.where, e.message.split(":")[0]) for e in snap.ctx.errors] == [
        (str(bad), "malformed POSIX ACL (system.posix_acl_access)")
    ]
    # the file is still there, with what its mode bits say
    assert snap.roles(bad) == {f"uid:{os.geteuid()}": "owner", f"gid:{os.getegid()}": "viewer"}
    assert str(tmp_path / "later.txt") in snap.resources


def test_acl_lookups_adapt_to_how_common_acls_are(tmp_path: Path) -> None:
    """listxattr first while ACLs are rare, getxattr straight away once most files have one."""
    uid, _ = ids("nobody")
    with_acl = [tmp_path / f"a{i:02d}" for i in range(12)]
    without = [tmp_path / f"b{i:02d}" for i in range(4)] + [tmp_path / "c_acl"]
    for f in with_acl + without:
        f.write_text("")
        os.chmod(f, 0o600)
    setfacl("-m", f"u:{uid}:r", *map(str, with_acl), str(tmp_path / "c_acl"))
    snap = snapshot([tmp_path])
    for f in with_acl + [tmp_path / "c_acl"]:
        assert snap.roles(f).get(f"uid:{uid}") == "viewer", f
    for f in without[:4]:
        assert snap.roles(f) == {f"uid:{os.geteuid()}": "owner"}, f
    assert not snap.ctx.errors


def test_file_systems_without_xattrs_are_asked_once(tmp_path: Path, monkeypatch) -> None:
    for i in range(5):
        (tmp_path / f"f{i}").write_text("")
    calls: list[str] = []

    def unsupported(path, *a, **k):
        calls.append(str(path))
        raise OSError(errno.EOPNOTSUPP, "Operation not supported", str(path))

    monkeypatch.setattr(os, "listxattr", unsupported)
    monkeypatch.setattr(os, "getxattr", unsupported)
    snap = snapshot([tmp_path])
    assert len(snap.resources) == 6 and not snap.ctx.errors
    assert calls == [str(tmp_path)]  # the root; then the device is known to have no ACLs


def test_plant_acl_for_demo(tmp_path: Path) -> None:
    f = tmp_path / "customers.csv"
    f.write_text("")
    os.chmod(f, 0o640)
    try:
        lf.plant_acl_for_demo(f, uid=54329)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("no POSIX ACLs on this file system")
        raise
    assert lf.acl_to_text(decode_posix_acl(os.getxattr(f, "system.posix_acl_access"))) == (
        "user::rw-,user:54329:r--,group::r--,mask::r--,other::---"
    )
    assert snapshot([tmp_path]).roles(f)["uid:54329"] == "viewer"


def test_read_acls_false_reads_mode_bits_only(tmp_path: Path) -> None:
    uid, _ = ids("nobody")
    f = tmp_path / "f"
    f.write_text("")
    setfacl("-m", f"u:{uid}:rw", str(f))
    snap = snapshot([tmp_path], read_acls=False)
    assert f"uid:{uid}" not in snap.roles(f)
    assert "acl" not in snap.resources[str(f)]["attributes"]


# --------------------------------------------------------------------------------------------
# exclude and symlinks
# --------------------------------------------------------------------------------------------


def test_exclude_patterns(tmp_path: Path) -> None:
    root = tmp_path / "share"
    for d in ("docs", ".snapshot/hourly", "scratch/deep", "docs/.snapshot"):
        (root / d).mkdir(parents=True)
    files = ("docs/a.txt", "docs/b.tmp", "a.tmp", ".snapshot/hourly/x.txt", "scratch/s.txt", "scratch/deep/t.txt")
    for f in files:
        (root / f).write_text("")
    snap = snapshot([root], exclude=["*.tmp", ".snapshot", "scratch/**"])
    rel = {os.path.relpath(k, root) for k in snap.resources}
    assert rel == {".", "docs", "docs/a.txt", "scratch"}
    # an excluded folder is not entered: share, docs, scratch
    assert snap.ctx.calls["scandir"] == 3
    assert not snap.ctx.errors


def test_symlinks_are_not_followed_by_default(tmp_path: Path) -> None:
    root = tmp_path / "share"
    (root / "real").mkdir(parents=True)
    (root / "real" / "f.txt").write_text("")
    (root / "to_dir").symlink_to("real")
    (root / "to_file").symlink_to("real/f.txt")
    (root / "dangling").symlink_to("nowhere")
    snap = snapshot([root])
    for name, target in (("to_dir", "real"), ("to_file", "real/f.txt"), ("dangling", "nowhere")):
        r = snap.resources[str(root / name)]
        assert r["kind"] == "symlink" and r["attributes"]["target"] == target
        assert "followed" not in r["attributes"]
        assert snap.roles(root / name) == {f"uid:{os.geteuid()}": "owner"}  # 0777 means nothing on a link
        assert r["shared"] is False
    assert not any(k.startswith(str(root / "to_dir") + "/") for k in snap.resources)
    assert not snap.ctx.errors


def test_follow_symlinks_stays_inside_the_root_and_never_loops(tmp_path: Path) -> None:
    root = tmp_path / "share"
    outside = tmp_path / "outside"
    (root / "real" / "sub").mkdir(parents=True)
    (root / "real" / "sub" / "f.txt").write_text("")
    outside.mkdir()
    (outside / "leak.txt").write_text("")
    (root / "alias").symlink_to("real")  # inside: followed
    (root / "zalias").symlink_to(root / "real")  # the same target again: entered once only
    (root / "out").symlink_to("../outside")  # leaves the root: never
    (root / "abs_out").symlink_to(outside)
    (root / "real" / "sub" / "loop").symlink_to("../..")  # back to the root: a cycle
    (root / "real" / "self").symlink_to(".")
    snap = snapshot([root], follow_symlinks=True)
    res = snap.resources

    assert str(root / "real" / "sub" / "f.txt") in res
    assert res[str(root / "alias")]["kind"] == "symlink"
    assert res[str(root / "alias")]["attributes"]["followed"] is True
    assert str(root / "alias" / "sub" / "f.txt") in res
    zalias = res[str(root / "zalias")]["attributes"]
    assert zalias["followed"] is False
    assert zalias["not_followed"] == "target already entered through another symlink"
    assert not any(k.startswith(str(root / "zalias") + "/") for k in res)
    for name in ("out", "abs_out"):
        assert res[str(root / name)]["attributes"]["not_followed"] == "target outside the root"
    assert not any("leak.txt" in k for k in res)
    loop = res[str(root / "real" / "sub" / "loop")]["attributes"]
    assert loop["followed"] is False and loop["not_followed"].startswith("cycle")
    assert res[str(root / "real" / "self")]["attributes"]["not_followed"].startswith("cycle")
    # bounded: nothing deeper than one trip through a link
    assert max(k.count("/") for k in res) - str(root).count("/") <= 4
    assert not snap.ctx.errors


# --------------------------------------------------------------------------------------------
# errors: unreadable folders, vanished roots, cancellation
# --------------------------------------------------------------------------------------------


def _snapshot_in_child_as_nobody(config: LocalFilesConfig) -> dict:
    """Root ignores permissions: run the snapshot in a child that became ``nobody``."""
    uid, gid = ids("nobody")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            ctx = make_ctx()
            records = list(LocalFilesConnector(config).snapshot(ctx))
            out = {
                "resources": [r.key for r in records if r.stream == "resources"],
                "errors": [[e.where, e.message] for e in ctx.errors],
                "identity": ctx.identity,
            }
            with os.fdopen(write_fd, "w") as w:
                json.dump(out, w)
            status = 0
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            try:
                os.write(write_fd, json.dumps({"crash": repr(exc)}).encode())
            except OSError:
                pass
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as r:
        text = r.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(text)
    assert "crash" not in result, result
    assert os.waitstatus_to_exitcode(status) == 0
    return result


@pytest.fixture
def open_tmp():
    """A scratch folder every account can traverse (pytest's own tmp_path is 0700 for root)."""
    path = Path(tempfile.mkdtemp(prefix="shoseki-lf-", dir="/tmp" if os.path.isdir("/tmp") else None))
    os.chmod(path, 0o755)
    yield path
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
    shutil.rmtree(path)


def test_unreadable_folder_is_an_error_and_the_walk_goes_on(open_tmp: Path) -> None:
    root = open_tmp / "share"
    (root / "a_locked" / "inner").mkdir(parents=True)
    (root / "a_locked" / "inner" / "hidden.txt").write_text("")
    (root / "b_list_only").mkdir()  # r without x: the names can be listed, not stat'ed
    for name in ("one", "two", "three"):
        (root / "b_list_only" / name).write_text("")
    (root / "z_open").mkdir()
    (root / "z_open" / "f.txt").write_text("")
    for p in (root, root / "z_open"):
        os.chmod(p, 0o755)
    os.chmod(root / "z_open" / "f.txt", 0o644)
    config = LocalFilesConfig(roots=[root])
    os.chmod(root / "a_locked", 0o000)
    os.chmod(root / "b_list_only", 0o644)
    try:
        if IS_ROOT:
            result = _snapshot_in_child_as_nobody(config)
            assert result["identity"].startswith(f"uid {pwd.getpwnam('nobody').pw_uid} ")
        else:
            ctx = make_ctx()
            records = list(LocalFilesConnector(config).snapshot(ctx))
            result = {
                "resources": [r.key for r in records if r.stream == "resources"],
                "errors": [[e.where, e.message] for e in ctx.errors],
            }
    finally:
        os.chmod(root / "a_locked", 0o755)
        os.chmod(root / "b_list_only", 0o755)
    assert result["errors"] == [
        [str(root / "a_locked"), "cannot list directory: Permission denied"],
        [str(root / "b_list_only"), "cannot stat entries: Permission denied"],  # once, not per entry
    ]
    assert str(root / "b_list_only") in result["resources"]
    assert not any(k.startswith(str(root / "b_list_only") + "/") for k in result["resources"])
    assert str(root / "a_locked") in result["resources"]  # lstat needs only the parent
    assert str(root / "a_locked" / "inner") not in result["resources"]
    assert str(root / "z_open" / "f.txt") in result["resources"]  # after the error, in order


def test_a_vanished_root_is_an_error(tmp_path: Path) -> None:
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    gone.mkdir()
    kept.mkdir()
    (kept / "f").write_text("")
    config = LocalFilesConfig(roots=[gone, kept])
    connector = LocalFilesConnector(config)
    gone.rmdir()
    check = connector.check()
    assert not check.ok
    assert [i.ok for i in check.items if i.name.startswith("root ")] == [False, True]
    ctx = make_ctx()
    keys = [r.key for r in connector.snapshot(ctx) if r.stream == "resources"]
    assert [(e.where, e.message) for e in ctx.errors] == [(str(gone), "root does not exist")]
    assert keys == [str(kept), str(kept / "f")]


def test_files_vanishing_mid_walk_are_skipped_silently(tmp_path: Path, monkeypatch) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text("")
    real_listdir = os.listdir

    def listdir(path):
        names = real_listdir(path)
        (tmp_path / "b").unlink(missing_ok=True)  # deleted after listing, before lstat
        return names

    monkeypatch.setattr(os, "listdir", listdir)
    snap = snapshot([tmp_path])
    assert set(snap.resources) == {str(tmp_path), str(tmp_path / "a"), str(tmp_path / "c")}
    assert not snap.ctx.errors


def test_cancellation_is_checked_per_folder(tree: Path) -> None:
    cancel = threading.Event()
    ctx = make_ctx(cancel)
    gen = LocalFilesConnector(LocalFilesConfig(roots=[tree])).snapshot(ctx)
    first = [next(gen) for _ in range(3)]
    assert first
    cancel.set()
    with pytest.raises(Cancelled):
        for _ in gen:
            pass


# --------------------------------------------------------------------------------------------
# principals and memberships
# --------------------------------------------------------------------------------------------


def test_principals_memberships_and_unique_keys(tree: Path) -> None:
    snap = snapshot([tree])  # Snap asserts keys are unique per stream
    principals = snap.principals
    for u in pwd.getpwall():
        p = principals[f"uid:{u.pw_uid}"]
        assert p["kind"] == "user" and p["enabled"] is None
        assert "shell" in p["attributes"] and "home" in p["attributes"]
    for g in grp.getgrall():
        assert principals[f"gid:{g.gr_gid}"]["kind"] == "group"
    anyone = principals["anyone-local"]
    assert anyone["kind"] == "anyone" and anyone["display_name"] == "every local account (other)"
    root_user = pwd.getpwuid(0)
    assert snap.by["memberships"][f"gid:{root_user.pw_gid}|uid:0"]["role"] == "primary"
    # order: principals and memberships, then resources and grants
    streams = [r.stream for r in snap.records]
    assert streams.index("resources") > max(i for i, s in enumerate(streams) if s == "memberships")

    again = snapshot([tree])
    assert [r.key for r in again.records] == [r.key for r in snap.records]  # deterministic


def test_memberships_from_the_databases(tmp_path: Path, monkeypatch) -> None:
    users = [
        pwd.struct_passwd(("alice", "x", 1000, 1000, "Alice", "/home/alice", "/bin/bash")),
        pwd.struct_passwd(("bob", "x", 1001, 1000, "Bob", "/home/bob", "/usr/sbin/nologin")),
        pwd.struct_passwd(("bob2", "x", 1001, 1000, "Bob again", "/home/bob", "/bin/sh")),
        pwd.struct_passwd(("carol", "x", 1002, 4242, "", "/home/carol", "/bin/bash")),
    ]
    groups = [
        grp.struct_group(("staff", "x", 1000, ["alice", "bob", "ghost", "alice"])),
        grp.struct_group(("wheel", "x", 10, ["alice"])),
    ]
    monkeypatch.setattr(pwd, "getpwall", lambda: users)
    monkeypatch.setattr(grp, "getgrall", lambda: groups)
    snap = snapshot([tmp_path])
    m = snap.by["memberships"]
    assert m["gid:1000|uid:1000"]["role"] == "primary"
    assert m["gid:1000|uid:1000"]["attributes"] == {"also_listed_in_group": True}
    assert m["gid:1000|uid:1001"]["role"] == "primary"
    assert m["gid:10|uid:1000"]["role"] == "member"
    assert m["gid:1000|user:ghost"]["member_kind"] == "unknown"
    assert m["gid:4242|uid:1002"]["role"] == "primary"
    p = snap.principals
    assert p["uid:1001"]["display_name"] == "bob" and p["uid:1001"]["attributes"]["aliases"] == ["bob2"]
    assert p["uid:1001"]["attributes"]["shell"] == "/usr/sbin/nologin" and p["uid:1001"]["enabled"] is None
    assert p["user:ghost"]["kind"] == "unknown" and p["user:ghost"]["attributes"]["unknown"] is True
    assert p["gid:4242"]["attributes"]["unknown"] is True and p["gid:4242"]["display_name"] is None


@needs_root
def test_unknown_ids_on_files_become_principals_at_the_end(tmp_path: Path) -> None:
    for n in (54321, 54322):
        for getter in (pwd.getpwuid, grp.getgrgid):
            try:
                getter(n)
                pytest.skip(f"id {n} exists here")
            except KeyError:
                pass
    f = tmp_path / "orphan.txt"
    f.write_text("")
    os.chown(f, 54321, 54322)
    g = tmp_path / "acl.txt"
    g.write_text("")
    have_acl = True
    acl = [
        (ACL_USER_OBJ, 6, None),
        (ACL_USER, 4, 54323),
        (ACL_GROUP_OBJ, 4, None),
        (ACL_MASK, 4, None),
        (ACL_OTHER, 0, None),
    ]
    try:
        os.setxattr(g, "system.posix_acl_access", encode_posix_acl(acl))
    except OSError:
        have_acl = False
    snap = snapshot([tmp_path])
    p = snap.principals
    assert p["uid:54321"]["kind"] == "user" and p["uid:54321"]["display_name"] is None
    assert p["uid:54321"]["attributes"] == {"unknown": True, "uid": 54321}
    assert p["gid:54322"]["kind"] == "group" and p["gid:54322"]["attributes"]["unknown"] is True
    assert snap.resources[str(f)]["owners"] == ["uid:54321"]
    if have_acl:
        assert p["uid:54323"]["attributes"]["unknown"] is True
        assert snap.roles(g)["uid:54323"] == "viewer"
    keys = [r.key for r in snap.records]
    last_resource = max(i for i, r in enumerate(snap.records) if r.stream in ("resources", "grants"))
    assert keys.index("uid:54321") > last_resource


def test_undecodable_file_names(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt")
    try:
        fd = os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644)
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    os.close(fd)
    snap = snapshot([tmp_path])
    key = str(tmp_path) + "/caf\\xe9.txt"
    r = snap.resources[key]
    assert r["name"] == "caf\\xe9.txt" and r["attributes"]["undecodable_name"] is True
    for rec in snap.records:
        rec.line().encode("utf-8")


# --------------------------------------------------------------------------------------------
# config and check
# --------------------------------------------------------------------------------------------


def test_config_validation(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValidationError, match="path does not exist") as info:
        LocalFilesConfig(roots=[tmp_path, tmp_path / "nope"])
    assert [e["loc"] for e in info.value.errors()] == [("roots", 1)]  # names the entry
    (tmp_path / "file").write_text("")
    with pytest.raises(ValidationError, match="is not a directory"):
        LocalFilesConfig(roots=[tmp_path / "file"])
    with pytest.raises(ValidationError, match="no_such_option|Extra inputs"):
        LocalFilesConfig.model_validate({"roots": [str(tmp_path)], "no_such_option": 1})
    with pytest.raises(ValidationError, match="at least one root"):
        LocalFilesConfig(roots=[])
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(ValidationError, match="must not overlap"):
        LocalFilesConfig(roots=[tmp_path / "a", tmp_path / "a" / "b"])
    with pytest.raises(ValidationError, match="same directory"):
        LocalFilesConfig(roots=[tmp_path / "a", tmp_path / "a" / "b" / ".."])
    monkeypatch.chdir(tmp_path)
    config = LocalFilesConfig(roots=["a"])
    assert config.roots == [tmp_path / "a"] and config.roots[0].is_absolute()
    assert config.exclude == [] and config.follow_symlinks is False and config.read_acls is True


def test_check(tree: Path) -> None:
    check = LocalFilesConnector(LocalFilesConfig(roots=[tree])).check()
    assert check.ok
    names = [i.name for i in check.items]
    assert names == [f"root {tree}", "user and group databases"]
    assert LocalFilesConnector.kind == "local_files"
    assert LocalFilesConnector.streams == ("principals", "memberships", "resources", "grants")
