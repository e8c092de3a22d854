"""Benchmark of ``aws_iam`` and ``aws_s3`` against moto in server mode.

For each size (default 1,000 and 5,000 IAM users; buckets scaled to users / 20):

1. builds the synthetic organisation with just enough people for that many IAM users (about a
   third of the people are engineers or IT staff with an IAM user) and seeds a
   ``ThreadedMotoServer`` on 127.0.0.1 in a process of its own through plain boto3
   (:func:`sandbox.aws.start_moto_server`), then adds private buckets (a few with an
   organisation-only policy, a public-read ACL or no public access block) up to users / 20;
2. wraps the server's WSGI application with a request counter (every HTTP request the
   collector sends, retries and STS included: an independent count, beside the collector's own
   ``before-send`` count in run.json's ``notes.http_requests``);
3. runs ``shoseki collect aws-iam`` and ``shoseki collect aws-s3`` as child processes (their own
   interpreter: the server's work does not share their GIL) and reads wall time and peak RSS
   with ``os.wait4``.

The lower bound (apis.md §1.5) is the fewest requests that can return the whole state:

* IAM: ``ceil((U+G+R+P)/1000)`` GetAccountAuthorizationDetails pages + 2 credential-report calls
  (generate → COMPLETE, get) + 2 account calls (summary, password policy);
* S3: 1 account call (the account's public access block) + ``ceil(B/1000)`` ListBuckets pages +
  5 calls per bucket (policy, policy status, ACL, public access block, ownership).

Reported: HTTP requests ÷ lower bound (aim ≤ 1.1), with the requests real AWS would not need
named: moto's ListBuckets has no ``BucketRegion``, so the connector asks ``GetBucketLocation`` per
bucket (B requests real S3 spares), and the connector skips ``GetBucketPolicyStatus`` for buckets
without a policy (which the 5-per-bucket bound counts). Each connector also makes one
``sts:GetCallerIdentity`` (the identity recorded in run.json).

    python benchmarks/aws.py [--users 1000,5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._harness import collect, last_run  # noqa: E402

from sandbox.aws import FAKE_CREDENTIALS, HOME_REGION, ORGANIZATION_ID, aws_truth, local_client, start_moto_server  # noqa: E402
from sandbox.org import Org  # noqa: E402


def people_for(iam_users: int, seed: int = 1) -> int:
    """The organisation size whose IAM users are as close to ``iam_users`` as possible without passing it."""
    lo, hi = iam_users, iam_users * 4
    while lo < hi:  # the count grows with the size (people are generated independently)
        mid = (lo + hi + 1) // 2
        if sum(p.aws for p in Org(seed, mid).people()) <= iam_users:
            lo = mid
        else:
            hi = mid - 1
    return lo


class RequestCounter:
    """A WSGI wrapper counting every request but moto's own ``/moto-api/`` ones; ``GET /_bench/requests``
    answers the count since the last such question (and is not counted)."""

    def __init__(self, app: Any):
        self.app, self.n, self.lock = app, 0, threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/_bench/requests":
            with self.lock:
                n, self.n = self.n, 0
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"requests": n}).encode()]
        if not path.startswith("/moto-api"):
            with self.lock:
                self.n += 1
        return self.app(environ, start_response)


def add_buckets(url: str, existing: int, target: int, seed: int = 1) -> int:
    """Private buckets up to ``target``: every 10th with an organisation-only policy, every 25th with a
    public-read ACL, every 9th without a public access block; 70 % in the home region."""
    import random

    import boto3

    session = boto3.Session(aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=HOME_REGION)
    clients: dict[str, Any] = {}
    rng = random.Random(seed)
    made = 0
    for j in range(existing, target):
        region = HOME_REGION if rng.random() < 0.7 else "us-east-1"
        s3 = clients.get(region) or clients.setdefault(region, local_client(session, "s3", region, url))
        name = f"bench-data-{j:05d}"
        kwargs: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "ObjectWriter" if j % 25 == 0 else "BucketOwnerEnforced"}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        if j % 25 == 0:
            s3.put_bucket_acl(Bucket=name, ACL="public-read")
        if j % 10 == 0:
            s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{name}/*",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORGANIZATION_ID}}}]}))
        if j % 9 == 0:
            s3.delete_public_access_block(Bucket=name)
        else:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        made += 1
    return made


def write_config(work: Path, url: str, domain: str, vault: Path) -> Path:
    creds, conf = work / "aws-credentials", work / "aws-config"
    key = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    for path, text in ((creds, f"[bench]\naws_access_key_id = {key}\naws_secret_access_key = {secrets.token_urlsafe(30)}\n"),
                       (conf, f"[profile bench]\nregion = {HOME_REGION}\n")):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    (work / "config" / "connectors").mkdir(parents=True, exist_ok=True)
    (work / "config" / "shoseki.toml").write_text(
        f'[organization]\nname = "bench"\ndomains = ["{domain}"]\ntimezone = "Asia/Tokyo"\n\n[vault]\npath = "{vault}"\n',
        encoding="utf-8")
    common = (f'profile = "bench"\ncredentials_file = "{creds}"\nconfig_file = "{conf}"\nregion = "{HOME_REGION}"\n'
              f'endpoint_url = "{url}"\ninternal_accounts = ["111122223333"]\n')
    (work / "config" / "connectors" / "aws.toml").write_text(
        f'[[connector]]\nid = "aws-iam"\ntype = "aws_iam"\n{common}\n'
        f'[[connector]]\nid = "aws-s3"\ntype = "aws_s3"\n{common}', encoding="utf-8")
    return work / "config" / "shoseki.toml"






def serve(iam_users: int, seed: int, ready: Path) -> None:
    """The moto side, in its own process (so the collectors' peak RSS is theirs alone: a child
    forked from a process that holds moto's state would start with that process's memory)."""
    import signal

    n_people = people_for(iam_users, seed)
    org = Org(seed, n_people)
    truth = aws_truth(org)
    c = truth.counts
    target = max(c["s3_buckets"], iam_users // 20)
    t0 = time.monotonic()
    server, url = start_moto_server(org)
    seeded_s = time.monotonic() - t0
    add_buckets(url, c["s3_buckets"], target, seed)
    counter = RequestCounter(server._server.app)
    server._server.app = counter
    info = {
        "url": url, "domain": org.domain, "people": n_people, "iam_users": c["iam_users"], "groups": c["iam_groups"],
        "roles": c["iam_roles"], "customer_policies": c["iam_customer_managed_policies"], "buckets": target,
        "buckets_with_policy": (sum(b["policy"] is not None for b in truth.buckets.values())
                                + sum(j % 10 == 0 for j in range(c["s3_buckets"], target))),
        "seed_s": round(seeded_s, 1), "server_pid": os.getpid(),
    }
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.rename(ready)
    stop.wait()
    server.stop()


def requests_since_last(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_bench/requests", timeout=30) as answer:
        return int(json.loads(answer.read())["requests"])


def measure(iam_users: int, seed: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="shoseki-bench-aws-") as tmp:
        work = Path(tmp)
        ready = work / "moto.json"
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(iam_users), "--seed", str(seed),
                                 "--ready", str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            deadline = time.monotonic() + 1800
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"moto did not start ({iam_users} IAM users)")
                time.sleep(0.2)
            info = json.loads(ready.read_text())
            U, G, R, P, B = info["iam_users"], info["groups"], info["roles"], info["customer_policies"], info["buckets"]
            bound_iam = math.ceil((U + G + R + P) / 1000) + 2 + 2
            bound_s3 = 1 + math.ceil(B / 1000) + 5 * B
            out: dict[str, Any] = {k: v for k, v in info.items() if k not in ("url", "domain", "server_pid")}
            config = write_config(work, info["url"], info["domain"], work / "vault")
            for connector, bound in (("aws-iam", bound_iam), ("aws-s3", bound_s3)):
                requests_since_last(info["url"])
                child = collect(config, connector)
                http = requests_since_last(info["url"])
                run = last_run(work / "vault", connector, child)
                moto_only = run["calls"].get("s3.GetBucketLocation", 0)
                out[connector] = {
                    **child, "status": run["status"], "http_requests": http,
                    "http_requests_counted_by_collector": run["notes"].get("http_requests"),
                    "calls": run["calls"], "retries": sum(run["retries"].values()), "lower_bound": bound,
                    "ratio": round(http / bound, 3),
                    "ratio_without_moto_region_lookups": round((http - moto_only) / bound, 3),
                    "records": run.get("counts"), "duration_s": run.get("duration_s"),
                }
            # moto ignores MaxItems (one page whatever the size): what real IAM's pages of 1,000 would cost
            iam = out["aws-iam"]
            iam["http_requests_with_real_iam_pages"] = (iam["http_requests"] - iam["calls"].get("iam.GetAccountAuthorizationDetails", 0)
                                                        + math.ceil((G + P) / 1000) + math.ceil((U + R) / 1000))
            both_http = out["aws-iam"]["http_requests"] + out["aws-s3"]["http_requests"]
            lookups = out["aws-s3"]["calls"].get("s3.GetBucketLocation", 0)
            out["combined"] = {"http_requests": both_http, "lower_bound": bound_iam + bound_s3,
                               "ratio": round(both_http / (bound_iam + bound_s3), 3),
                               "ratio_without_moto_region_lookups": round((both_http - lookups) / (bound_iam + bound_s3), 3)}
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="1000,5000", help="IAM users per run, comma-separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)   # internal: the moto process
    ap.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.seed, args.ready)
        return
    results = []
    for size in [int(s) for s in args.users.split(",")]:
        r = measure(size, args.seed)
        results.append(r)
        print(f"{r['iam_users']:>5} IAM users, {r['buckets']} buckets ({r['buckets_with_policy']} with a policy); "
              f"moto seeded in {r['seed_s']:.0f}s", flush=True)
        for key in ("aws-iam", "aws-s3"):
            x = r[key]
            print(f"   {key:<8} {x['status']:<8} wall {x['wall_s']:>6.1f}s  peak RSS {x['peak_rss_mb']:>5.0f} MB  "
                  f"http {x['http_requests']:>6} (collector counted {x['http_requests_counted_by_collector']})  "
                  f"bound {x['lower_bound']:>6}  ratio {x['ratio']:.3f} "
                  f"({x['ratio_without_moto_region_lookups']:.3f} without moto's GetBucketLocation)  retries {x['retries']}"
                  + (f"  [{x['http_requests_with_real_iam_pages']} with real IAM's pages of 1000]"
                     if "http_requests_with_real_iam_pages" in x else ""), flush=True)
            if x.get("stderr_tail"):
                print("     ", x["stderr_tail"])
        cmb = r["combined"]
        print(f"   both     http {cmb['http_requests']} / bound {cmb['lower_bound']} = {cmb['ratio']:.3f} "
              f"({cmb['ratio_without_moto_region_lookups']:.3f} without moto's GetBucketLocation)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
