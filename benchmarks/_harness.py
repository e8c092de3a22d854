"""What the connector benchmarks share: a sandbox in its own process, a collection as a child
process measured with ``os.wait4`` (wall time, peak RSS of the collector and its bag writer), and
the run.json of the bag it sealed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_sandbox(users: int, workdir: Path, *flags: str) -> tuple[subprocess.Popen, dict]:
    """``shoseki sandbox serve --size USERS FLAGS…``; returns the process and its endpoints.json."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "sandbox", "serve", *flags, "--size", str(users), "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    endpoints = workdir / "endpoints.json"
    deadline = time.monotonic() + 300
    while not endpoints.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"sandbox did not start ({users} users)")
        time.sleep(0.1)
    return proc, json.loads(endpoints.read_text())


def collect(config: Path, connector: str) -> dict:
    """``shoseki collect CONNECTOR`` as a child: wall time, exit code, peak RSS, stderr tail on failure."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "--config", str(config), "collect", connector,
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    chunks: list[bytes] = []  # read while it runs: a full pipe would stall the child
    reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    reader.join(timeout=5)
    code = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(wall, 2), "exit": code, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "stderr_tail": b"".join(chunks).decode(errors="replace")[-400:] if code else ""}


def last_run(vault: Path, connector: str, child: dict) -> dict:
    """run.json of the newest bag of ``connector``."""
    bags = sorted(vault.glob(f"*/*/*_{connector}_r*"), key=lambda p: p.stat().st_mtime)
    if not bags:
        raise SystemExit(f"{connector}: no bag was sealed (exit {child['exit']}): {child['stderr_tail']}")
    return json.loads((bags[-1] / "data" / "run.json").read_text(encoding="utf-8"))
