"""How fast the sandbox serves, and whether its memory grows with the tenant.

Starts ``shoseki sandbox serve`` as a separate process (so client and server do not share one
interpreter lock), then measures with keep-alive clients:

* requests per second for a simple list page: Google ``users.list`` (100 users a page) and
  Graph ``users?$top=100`` over HTTPS, with 1 and 4 client threads (aim: >= 1,000 req/s, so the
  sandbox is never the bottleneck of a connector benchmark);
* the server's peak RSS (VmHWM) after walking every user page of both providers, at the small
  size and at a large one (default 100,000 users): the aim is no growth with size beyond a
  constant, because people and files are generated on demand.

AWS (moto) is left out (``--no-aws``): moto keeps its state in memory by design, which is moto's
cost, not the sandbox's.

    python benchmarks/sandbox.py [--large 100000] [--requests 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msal
import requests
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import service_account


def start_sandbox(size: str, workdir: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "sandbox", "serve", "--no-aws", "--size", size, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoints = workdir / "endpoints.json"
    deadline = time.monotonic() + 120
    while not endpoints.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"sandbox did not start (size {size})")
        time.sleep(0.1)
    return proc, json.loads(endpoints.read_text())


def google_session(e: dict) -> tuple[requests.Session, str]:
    g = e["google"]
    creds = service_account.Credentials.from_service_account_file(
        g["service_account_key_file"],
        scopes=["https://www.googleapis.com/auth/admin.directory.user.readonly"],
        subject=g["admin_subject"],
    )
    creds.refresh(GoogleRequest())
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = f"Bearer {creds.token}"
    return s, g["root_url"] + "admin/directory/v1/users?customer=my_customer&maxResults=100"


def graph_session(e: dict) -> tuple[requests.Session, str]:
    m = e["microsoft"]
    http = requests.Session()
    http.verify, http.trust_env = m["ca_bundle"], False
    app = msal.ConfidentialClientApplication(
        m["client_id"], authority=m["authority"], client_credential=Path(m["client_secret_file"]).read_text(),
        instance_discovery=False, http_client=http,
    )
    token = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
    s = requests.Session()
    s.verify, s.trust_env = m["ca_bundle"], False
    s.headers["Authorization"] = f"Bearer {token}"
    return s, m["graph_url"] + "/users?$top=100"


def rate(make_session, url: str, total: int, threads: int) -> float:
    per = total // threads
    sessions = [make_session() for _ in range(threads)]
    errors: list[str] = []

    def work(s: requests.Session) -> None:
        for _ in range(per):
            r = s.get(url)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
                return

    workers = [threading.Thread(target=work, args=(s,)) for s in sessions]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"requests failed: {errors[0]}")
    return per * threads / elapsed


def walk_all(session: requests.Session, url: str, next_key: str, next_param: str | None) -> int:
    pages, r = 0, session.get(url).json()
    while True:
        pages += 1
        token = r.get(next_key)
        if not token:
            return pages
        nxt = f"{url}&{next_param}={token}" if next_param else token
        r = session.get(nxt).json()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(size: str, total: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="shoseki-bench-sandbox-") as tmp:
        proc, e = start_sandbox(size, Path(tmp))
        try:
            out: dict = {"size": size, "users": e["organization"]["users"], "rss_after_start_mb": round(peak_rss_mb(proc.pid), 1)}
            for name, make in (("google_users_list", lambda: google_session(e)), ("graph_users", lambda: graph_session(e))):
                url = make()[1]
                for threads in (1, 4):
                    samples = [rate(lambda: make()[0], url, total, threads) for _ in range(repeat)]
                    out[f"{name}_{threads}t_req_s"] = round(statistics.median(samples))
                    out[f"{name}_{threads}t_samples"] = [round(x) for x in samples]
            gs, gurl = google_session(e)
            ms, murl = graph_session(e)
            t0 = time.perf_counter()
            out["google_pages_walked"] = walk_all(gs, gurl, "nextPageToken", "pageToken")
            out["graph_pages_walked"] = walk_all(ms, murl, "@odata.nextLink", None)
            out["walk_s"] = round(time.perf_counter() - t0, 2)
            out["peak_rss_mb"] = round(peak_rss_mb(proc.pid), 1)
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", default="100000", help="users in the large run (default 100000)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per rate sample")
    ap.add_argument("--repeat", type=int, default=3, help="rate samples per setting (median reported)")
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args()
    results = [measure("small", args.requests, args.repeat), measure(args.large, args.requests // 4, 1)]
    small, large = results
    print(f"{'':<34}{'small':>12}{args.large + ' users':>16}")
    for key in small:
        if key.endswith("samples") or key == "size":
            continue
        print(f"{key:<34}{small[key]!s:>12}{large.get(key, '')!s:>16}")
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"\npeak RSS large / small: {ratio:.2f}  (flat means the tenant is generated on demand)")
    if args.json:
        args.json.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                         "results": results, "rss_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
