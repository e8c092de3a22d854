"""Benchmark of the ``local_files`` connector against the tools an administrator already has.

Usage::

    python benchmarks/local_files.py --files 200000 --repeat 3 [--json out.json]
    python benchmarks/local_files.py --files 1000000 --repeat 1 --tree /tmp/tree-1m   # reusable tree
    python benchmarks/local_files.py --files 2000 --repeat 1 --keep /tmp/bench        # inspect the vault

What it does, in one run (everything in a temporary folder under $TMPDIR or /tmp, removed at
the end unless ``--keep DIR``):

1. **Tree.** Builds a file share of exactly ``--files`` empty files: department / section /
   project / year / document-type / version / archive folders, 5 to 7 levels deep, 20–200 files
   per folder, Japanese and ASCII names, a mix of modes (files 0640/0644/0600/0660/…, folders
   0750/0755/0770/0777/0700), about 1% of entries given a POSIX access ACL naming a few users
   and groups (half of those folders also a default ACL, which everything created below them
   inherits, as on a real share: about 2% of entries end up with an ACL), and, when run as root,
   varied owners and groups. Owners, groups and ACL entries are accounts of this machine's passwd /
   group databases, except 1 file in 5,000 owned by a uid they do not know (a leaver):
   ``find``'s ``%u``/``%g`` does an uncached NSS lookup for every unknown id (~0.1 ms here), so
   unknown ids on many files would slow the baseline, not shoseki. Same ``--files`` and
   ``--seed`` give the same tree on the same machine; with ``--tree DIR`` a tree already built
   there with the same parameters is reused.
2. **Baseline.** ``find ROOT -printf '%m %u %g %s %T@ %p\\n' > /dev/null``: the least work that
   lists the same metadata (it reads no ACLs). One warm-up run first, so the dentry / inode
   caches are warm for the baseline and for shoseki alike; then the median of ``--repeat`` runs.
   The same with numeric ids (``%U %G``, no NSS lookups) is shown for information.
3. **Collection.** ``python -m collector.cli --config CFG collect --no-progress`` into a vault with
   a signing key, ``--repeat`` times (each run adds a bag; from the second run on the bag also
   counts the changes since the previous one, as in production). Wall time and the child's own
   peak RSS (``os.wait4``).
4. **Ratio** collection time ÷ find time. Aim: ≤ 3 (DESIGN.md, "Performance model").
5. **Verify.** ``shoseki verify BAG`` on the last bag against
   ``find BAG -type f -print0 | xargs -0 sha256sum`` over the same files, both as MB/s over the
   bytes of every file in the bag (one warm-up each, then medians). Aim: shoseki ÷ sha256sum
   ≥ 0.7. ``shoseki verify`` of the whole vault is timed for information.
6. **Context.** Records per stream and ``duration_s`` from the last bag's run.json, the bag's
   size, and the time spent outside the run: ``duration_s`` covers the walk and the writing,
   from the start of the run to the moment it is sealed; the process wall time minus it is
   interpreter start-up, imports, the seal (manifest, changes since the previous bag,
   signature) and exit. ``python -m collector.cli --version`` is timed as the start-up floor.

The code measured is whatever ``import collector`` finds: the editable install, or a snapshot
pinned with ``PYTHONPATH`` (``git archive HEAD | tar -x -C DIR; PYTHONPATH=DIR python …``), which
keeps a long run steady while the working tree changes. The report names it.

Reading the output: the table gives medians (raw samples beside them); ``--json FILE`` writes
every median and raw sample plus the machine (CPUs, Python, kernel, the code measured, the
load average before and after: other work on the machine skews the figures). Peak RSS is the
largest of the collection runs. All commands run in child processes, so the figures are what an
administrator would see from the command line.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import platform
import pwd
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import connectors
from connectors.local_files import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_USER,
    ACL_USER_OBJ,
    AclEntry,
    encode_posix_acl,
)
from evidence.signing import write_keypair

TREE_FORMAT = 2  # bump when the generator changes, so cached trees are rebuilt
CONNECTOR_ID = "files-bench"
FIND_FORMAT = "%m %u %g %s %T@ %p\\n"
FIND_FORMAT_NUMERIC = "%m %U %G %s %T@ %p\\n"

# Folder names per level below the root; a branch ends at level 5, 6 or 7.
LEVELS: tuple[tuple[str, ...], ...] = (
    ("総務部", "人事部", "経理部", "営業部", "開発部", "法務部", "情報システム部", "経営企画部"),
    ("第1課", "第2課", "第3課", "shared", "admin"),
    ("PJ-2023-014", "PJ-2024-003", "PJ-2025-021", "顧客A社", "顧客B社", "internal"),
    ("2021", "2022", "2023", "2024", "2025", "2026"),
    ("契約書", "見積書", "議事録", "design", "drafts", "納品物"),
    ("v1", "v2", "レビュー", "final"),
    ("archive", "old", "受領"),
)
FILE_STEMS = ("議事録", "report", "顧客リスト", "invoice", "見積書", "IMG", "契約書", "notes", "data",
              "提案書")
FILE_EXTS = (".docx", ".xlsx", ".pdf", ".csv", ".txt", ".jpg", ".pptx", ".zip")
FILE_MODES = ((0o640, 45), (0o644, 25), (0o660, 17), (0o600, 10), (0o666, 2), (0o755, 1))
DIR_MODES = ((0o750, 50), (0o755, 25), (0o770, 20), (0o777, 3), (0o700, 2))
ACL_SHARE = 0.01  # share of entries given an access ACL explicitly
DEFAULT_ACL_SHARE = 0.5  # share of those folders also given a default ACL
LEAVER_SHARE = 1 / 5000  # files owned by LEAVER_UID, a uid the passwd database does not know
LEAVER_UID = 3_999_999


# --------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    root: Path
    files: int
    folders: int  # the root included
    acls: int  # entries with an access ACL, set or inherited
    default_acls: int  # folders with a default ACL, set or inherited
    build_s: float | None  # None: reused


def _plan_folders(n_files: int, rng: random.Random) -> list[tuple[tuple[str, ...], int]]:
    """Folders (name path below the root) in creation order, each with its number of files."""
    plan: list[tuple[tuple[str, ...], int]] = []
    seen: set[tuple[str, ...]] = set()
    remaining = n_files
    while remaining:
        depth = rng.randint(5, 7)
        parts = tuple(rng.choice(LEVELS[level]) for level in range(depth))
        for d in range(1, depth + 1):
            prefix = parts[:d]
            if prefix in seen:
                continue
            seen.add(prefix)
            count = min(remaining, rng.randint(20, 200))
            plan.append((prefix, count))
            remaining -= count
            if not remaining:
                break
    return plan


def _acl_for(mode: int, rng: random.Random, is_dir: bool, uids: list[int], gids: list[int]) -> bytes:
    """An ACL consistent with ``mode`` plus 1–3 named users and 0–1 named group."""
    u, g, o = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
    perms = (4, 5, 7) if is_dir else (4, 6)
    users = sorted(rng.sample(uids, min(len(uids), rng.randint(1, 3))))
    groups = sorted(rng.sample(gids, rng.randint(0, 1)))
    named = [AclEntry(ACL_USER, rng.choice(perms), uid) for uid in users]
    named_groups = [AclEntry(ACL_GROUP, rng.choice(perms), gid) for gid in groups]
    mask = g
    for e in named + named_groups:
        mask |= e.perm
    # the kernel wants this order: owner, named users (ascending), group, named groups, mask, other
    entries = [AclEntry(ACL_USER_OBJ, u), *named, AclEntry(ACL_GROUP_OBJ, g), *named_groups,
               AclEntry(ACL_MASK, mask), AclEntry(ACL_OTHER, o)]
    return encode_posix_acl(entries)


def build_tree(root: Path, n_files: int, seed: int) -> tuple[int, int, int]:
    """Create the tree under ``root`` (which must not exist); return (folders, acls, default_acls).

    A folder with a default ACL passes it on (the kernel does): its new files get it as their
    access ACL, its new folders as both, so the counts follow ``inheriting``.
    """
    rng = random.Random(seed)
    as_root = os.geteuid() == 0
    uids = sorted({p.pw_uid for p in pwd.getpwall()} - {LEAVER_UID})
    gids = sorted({g.gr_gid for g in grp.getgrall()})
    file_modes, file_w = zip(*FILE_MODES)
    dir_modes, dir_w = zip(*DIR_MODES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    acls = 0
    inheriting: set[tuple[str, ...]] = set()  # folders with a default ACL
    plan = _plan_folders(n_files, rng)
    old_umask = os.umask(0)
    try:
        os.mkdir(root, 0o755)
        for parts, count in plan:
            folder = os.path.join(root, *parts)
            dmode = rng.choices(dir_modes, dir_w)[0]
            os.mkdir(folder, dmode)
            owner, group = rng.choice(uids), gids[LEVELS[0].index(parts[0]) % len(gids)]
            if as_root:
                os.chown(folder, owner, group)
            inherited = parts[:-1] in inheriting
            if inherited:
                inheriting.add(parts)
            if rng.random() < ACL_SHARE:
                os.setxattr(folder, "system.posix_acl_access", _acl_for(dmode, rng, True, uids, gids))
                if rng.random() < DEFAULT_ACL_SHARE:
                    default = _acl_for(dmode, rng, True, uids, gids)
                    os.setxattr(folder, "system.posix_acl_default", default)
                    inheriting.add(parts)
                acls += 1
            elif inherited:
                acls += 1
            files_inherit = parts in inheriting
            prefix = folder + "/"
            modes = rng.choices(file_modes, file_w, k=count)
            for i in range(count):
                path = f"{prefix}{rng.choice(FILE_STEMS)}_{i:04d}{rng.choice(FILE_EXTS)}"
                fd = os.open(path, flags, modes[i])
                try:
                    if as_root:
                        uid = owner if rng.random() < 0.8 else rng.choice(uids)
                        if rng.random() < LEAVER_SHARE:
                            uid = LEAVER_UID
                        gid = group if rng.random() < 0.9 else rng.choice(gids)
                        os.fchown(fd, uid, gid)
                    if rng.random() < ACL_SHARE:
                        access = _acl_for(modes[i], rng, False, uids, gids)
                        os.setxattr(fd, "system.posix_acl_access", access)
                        acls += 1
                    elif files_inherit:
                        acls += 1
                finally:
                    os.close(fd)
    finally:
        os.umask(old_umask)
    return 1 + len(plan), acls, len(inheriting)


def ensure_tree(tree_dir: Path, n_files: int, seed: int) -> Tree:
    """The tree in ``tree_dir/share``, reused when ``tree_dir/tree.json`` says it matches."""
    marker, root = tree_dir / "tree.json", tree_dir / "share"
    wanted = {"format": TREE_FORMAT, "files": n_files, "seed": seed}
    if marker.exists():
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("complete") and all(info.get(k) == v for k, v in wanted.items()):
            return Tree(root, n_files, info["folders"], info["acls"], info["default_acls"], None)
        shutil.rmtree(root, ignore_errors=True)  # ours, but other parameters or an interrupted build
    elif tree_dir.exists() and any(tree_dir.iterdir()):
        sys.exit(f"{tree_dir}: not empty and not a benchmark tree (no tree.json); choose another --tree")
    tree_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**wanted, "complete": False}), encoding="utf-8")
    started = time.perf_counter()
    folders, acls, default_acls = build_tree(root, n_files, seed)
    build_s = time.perf_counter() - started
    info = {**wanted, "complete": True, "folders": folders, "acls": acls, "default_acls": default_acls}
    marker.write_text(json.dumps(info), encoding="utf-8")
    return Tree(root, n_files, folders, acls, default_acls, build_s)


# --------------------------------------------------------------------------------------------
# Measuring child processes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    wall_s: float
    maxrss_mb: float  # the child's own peak resident set (ru_maxrss from wait4)
    stdout: str

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": round(self.wall_s, 4), "maxrss_mb": round(self.maxrss_mb, 1)}


def run_timed(cmd: list[str] | str, workdir: Path) -> Sample:
    """Run ``cmd`` (a string goes through ``sh -c``), exit on failure; wall time and peak RSS."""
    out_path, err_path = workdir / "last.stdout", workdir / "last.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=out, stderr=err, cwd=workdir)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        stderr = err_path.read_text(encoding="utf-8", errors="replace")
        sys.exit(f"failed (exit {proc.returncode}): {cmd}\n{stdout}{stderr[-4000:]}")
    return Sample(wall, usage.ru_maxrss / 1024, stdout)


def timed_runs(cmd: list[str] | str, workdir: Path, repeat: int, warmup: bool) -> list[Sample]:
    if warmup:
        run_timed(cmd, workdir)
    return [run_timed(cmd, workdir) for _ in range(repeat)]


def median(samples: list[Sample]) -> float:
    return statistics.median(s.wall_s for s in samples)


# --------------------------------------------------------------------------------------------
# shoseki configuration and bags
# --------------------------------------------------------------------------------------------


def write_config(run_dir: Path, share: Path) -> Path:
    """A signed vault and one ``local_files`` connector on ``share`` (like ``shoseki init``)."""
    key = run_dir / "keys" / "minisign.key"
    key.parent.mkdir()
    write_keypair(key, run_dir / "keys" / "minisign.pub")
    config_dir = run_dir / "config"
    (config_dir / "connectors").mkdir(parents=True)
    main = config_dir / "shoseki.toml"
    main.write_text(
        "[organization]\n"
        'name = "ベンチマーク株式会社"\n'
        'domains = ["example.co.jp"]\n'
        'timezone = "Asia/Tokyo"\n\n'
        "[vault]\n"
        f"path = {json.dumps(str(run_dir / 'vault'))}\n"
        f"signing_key = {json.dumps(str(key))}\n",
        encoding="utf-8",
    )
    (config_dir / "connectors" / "files.toml").write_text(
        "[[connector]]\n"
        f'id = "{CONNECTOR_ID}"\n'
        'type = "local_files"\n'
        f"roots = [{json.dumps(str(share))}]\n"
        'exclude = [".snapshot", "*.tmp"]   # as in the example configuration; nothing matches\n',
        encoding="utf-8",
    )
    return main


def sealed_bag(collect_stdout: str) -> Path:
    """The bag path from ``files-bench: complete -> PATH``; exit unless the run was complete."""
    match = re.search(rf"^{CONNECTOR_ID}: (\w+) -> (.+)$", collect_stdout, re.MULTILINE)
    if not match or match.group(1) != "complete":
        sys.exit(f"collection not complete:\n{collect_stdout}")
    return Path(match.group(2))


def bag_sizes(bag: Path) -> tuple[int, int, int]:
    """(files, apparent bytes of the files, bytes allocated on disk incl. folders)."""
    files = apparent = allocated = 0
    for dirpath, _, names in os.walk(bag):
        allocated += os.lstat(dirpath).st_blocks * 512
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return files, apparent, allocated


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def benchmark(tree: Tree, run_dir: Path, repeat: int) -> dict[str, Any]:
    shoseki = [sys.executable, "-m", "collector.cli", "--config", str(write_config(run_dir, tree.root))]

    root = shlex.quote(str(tree.root))
    find = timed_runs(f"find {root} -printf '{FIND_FORMAT}' > /dev/null", run_dir, repeat, warmup=True)
    find_numeric = timed_runs(
        f"find {root} -printf '{FIND_FORMAT_NUMERIC}' > /dev/null", run_dir, repeat, warmup=False
    )
    collect = timed_runs([*shoseki, "collect", "--no-progress"], run_dir, repeat, warmup=False)
    floor = timed_runs([*shoseki, "--version"], run_dir, repeat, warmup=True)

    bag = sealed_bag(collect[-1].stdout)
    run_json = json.loads((bag / "data" / "run.json").read_text(encoding="utf-8"))
    files, apparent, allocated = bag_sizes(bag)
    verify_bag = timed_runs([*shoseki, "verify", str(bag)], run_dir, repeat, warmup=True)
    sha = timed_runs(
        f"find {shlex.quote(str(bag))} -type f -print0 | xargs -0 sha256sum > /dev/null", run_dir, repeat, warmup=True
    )
    verify_vault = timed_runs([*shoseki, "verify"], run_dir, repeat, warmup=False)
    vault_bytes = int(re.search(r"([\d,]+) bytes checked", verify_vault[-1].stdout).group(1).replace(",", ""))

    mb = apparent / 1e6
    collect_s, find_s = median(collect), median(find)
    verify_mbs, sha_mbs = mb / median(verify_bag), mb / median(sha)
    return {
        "find": {"median_s": find_s, "samples": [s.as_dict() for s in find]},
        "find_numeric_ids": {"median_s": median(find_numeric), "samples": [s.as_dict() for s in find_numeric]},
        "collect": {
            "median_s": collect_s,
            "peak_rss_mb": max(s.maxrss_mb for s in collect),
            "samples": [s.as_dict() for s in collect],
            "last_run_duration_s": run_json["duration_s"],
            "startup_floor_s": median(floor),
            "startup_floor_rss_mb": max(s.maxrss_mb for s in floor),
        },
        "collect_over_find": collect_s / find_s,
        "bag": {
            "path": str(bag),
            "files": files,
            "bytes": apparent,
            "bytes_on_disk": allocated,
            "counts": run_json["counts"],
            "status": run_json["status"],
        },
        "verify_bag": {
            "median_s": median(verify_bag), "mb_s": verify_mbs, "samples": [s.as_dict() for s in verify_bag]
        },
        "sha256sum": {"median_s": median(sha), "mb_s": sha_mbs, "samples": [s.as_dict() for s in sha]},
        "verify_over_sha256sum": verify_mbs / sha_mbs,
        "verify_vault": {
            "bags": len(collect),
            "bytes": vault_bytes,
            "median_s": median(verify_vault),
            "mb_s": vault_bytes / 1e6 / median(verify_vault),
            "samples": [s.as_dict() for s in verify_vault],
        },
    }


def code_version() -> str:
    """Where the measured code was imported from, with its git commit when it is a checkout."""
    source = Path(connectors.__file__).resolve().parent.parent
    git = ["git", "-C", str(source)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return str(source)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=False
    )
    return f"{source} at {head.stdout.strip()}{' with local changes' if dirty.stdout.strip() else ''}"


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "euid": os.geteuid(),
        "code": code_version(),
    }


def report(tree: Tree, r: dict[str, Any], info: dict[str, Any]) -> str:
    def row(label: str, value: str, note: str = "") -> str:
        return f"{label:40}{value:>12}   {note}".rstrip()

    def secs(d: dict[str, Any]) -> str:
        return f"{d['median_s']:.2f} s"

    def samples(d: dict[str, Any], extra: str = "") -> str:
        return " ".join(f"{s['wall_s']:.2f}" for s in d["samples"]) + extra

    def verdict(aim: str, ok: bool) -> str:
        return f"aim {aim}: {'ok' if ok else 'MISSES THE AIM'}"

    c, b, vault = r["collect"], r["bag"], r["verify_vault"]
    built = "reused" if tree.build_s is None else f"built in {tree.build_s:.1f} s"
    before, after = info["loadavg_1m"]
    header = (
        f"local_files benchmark: {tree.files:,} files, {tree.folders:,} folders, "
        f"{tree.acls:,} access ACLs ({tree.default_acls:,} default), tree {built}\n"
        f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"Linux {info['kernel']}, euid {info['euid']}\n"
        f"code: {info['code']}\n"
        f"load average (1 min) before / after: {before:.2f} / {after:.2f} "
        "(this benchmark adds about 1; more means other work skewed the figures)\n"
    )
    timings = [
        row("", "median", "samples"),
        row("find -printf (baseline)", secs(r["find"]), samples(r["find"])),
        row("  same, numeric ids (%U %G)", secs(r["find_numeric_ids"]), samples(r["find_numeric_ids"])),
        row("shoseki collect", secs(c), samples(c, "   (run 1 has no previous bag)")),
        row("  peak RSS (largest run)", f"{c['peak_rss_mb']:.0f} MB",
            " ".join(f"{s['maxrss_mb']:.0f}" for s in c["samples"])),
        row("  run.json duration_s (last run)", f"{c['last_run_duration_s']:.2f} s", "walk + write"),
        row("  rest of the last run", f"{c['samples'][-1]['wall_s'] - c['last_run_duration_s']:.2f} s",
            "start-up + seal + exit"),
        row("  start-up floor (cli --version)", f"{c['startup_floor_s']:.2f} s",
            f"peak RSS {c['startup_floor_rss_mb']:.0f} MB"),
        row("collect / find", f"{r['collect_over_find']:.2f}", verdict("<= 3", r["collect_over_find"] <= 3)),
        "",
        f"verify the last bag ({b['files']} files, {b['bytes'] / 1e6:.1f} MB)",
        row("  shoseki verify BAG", secs(r["verify_bag"]),
            samples(r["verify_bag"], f"   {r['verify_bag']['mb_s']:.0f} MB/s")),
        row("  find | xargs sha256sum", secs(r["sha256sum"]),
            samples(r["sha256sum"], f"   {r['sha256sum']['mb_s']:.0f} MB/s")),
        row("  shoseki / sha256sum (MB/s)", f"{r['verify_over_sha256sum']:.2f}",
            verdict(">= 0.7", r["verify_over_sha256sum"] >= 0.7)),
        row(f"shoseki verify (vault, {vault['bags']} bags)", secs(vault),
            samples(vault, f"   {vault['mb_s']:.0f} MB/s over {vault['bytes'] / 1e6:.1f} MB")),
        "",
        "records in the last bag: " + ", ".join(f"{k} {v:,}" for k, v in b["counts"].items()),
        (
            f"last bag: {b['bytes'] / 1e6:.1f} MB in files, {b['bytes_on_disk'] / 1e6:.1f} MB on disk, "
            f"status {b['status']}"
        ),
    ]
    return header + "\n" + "\n".join(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000, help="files in the generated tree (default 200000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the tree generator (default 1)")
    parser.add_argument("--tree", type=Path, help="build the tree here and keep it; reuse it if it matches")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (tree, config, vault)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON to FILE")
    args = parser.parse_args()
    if args.files < 1 or args.repeat < 1:
        parser.error("--files and --repeat must be at least 1")

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="shoseki-bench-"))
    try:
        tree = ensure_tree(args.tree or work / "tree", args.files, args.seed)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
        load_before = os.getloadavg()[0]
        results = benchmark(tree, run_dir, args.repeat)
        info = {**machine(), "loadavg_1m": [load_before, os.getloadavg()[0]]}
        print(report(tree, results, info))
        if args.json:
            out = {
                "args": {"files": args.files, "repeat": args.repeat, "seed": args.seed},
                "machine": info,
                "tree": {"files": tree.files, "folders": tree.folders, "acls": tree.acls,
                         "default_acls": tree.default_acls, "build_s": tree.build_s},
                **results,
            }
            args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    finally:
        if not args.keep:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
