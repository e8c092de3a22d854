"""The shared stand-in machinery: faults, quotas, counters and the admin paths."""

import time

import pytest
import requests

from sandbox.org import Org
from sandbox.server import FaultRule, Response, SandboxServer, StandIn


class Echo(StandIn):
    name = "echo"

    def endpoint(self, req):
        return req.path.strip("/") or "root"

    def units(self, req, endpoint):
        return 5.0 if endpoint == "costly" else 1.0

    def handle(self, req):
        return Response.json({"path": req.path, "q": req.arg("q")})


@pytest.fixture
def served():
    standin = Echo(Org(), seed=7)
    with SandboxServer(standin) as server:
        session = requests.Session()
        session.trust_env = False
        yield standin, server.url, session


def test_serves_on_loopback_only_and_counts(served):
    standin, url, s = served
    assert url.startswith("http://127.0.0.1:")
    assert s.get(url + "/a?q=1").json() == {"path": "/a", "q": "1"}
    s.get(url + "/costly")
    stats = s.get(url + "/_sandbox/stats").json()
    assert stats["calls"] == {"a": 1, "costly": 1} and stats["units"] == {"a": 1.0, "costly": 5.0}
    s.post(url + "/_sandbox/reset")
    assert s.get(url + "/_sandbox/stats").json()["total_calls"] == 0
    with pytest.raises(ValueError):
        SandboxServer(Echo(Org()), host="0.0.0.0")


def test_quota_window_answers_429_with_retry_after_until_it_frees(served):
    standin, url, s = served
    s.post(url + "/_sandbox/faults", json=[{"endpoint": "a", "quota": 3, "quota_window_s": 1.0}])
    codes = [s.get(url + "/a").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = s.get(url + "/a")
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 1
    assert s.get(url + "/b").status_code == 200  # the rule names one endpoint
    time.sleep(1.05)
    assert s.get(url + "/a").status_code == 200
    assert standin.stats.snapshot()["throttled"]["a"] == 3


def test_unit_quota_spends_units(served):
    standin, url, s = served
    standin.set_faults([FaultRule(quota=12, quota_window_s=60, quota_units=True, quota_per="global")])
    assert [s.get(url + "/costly").status_code for _ in range(3)] == [200, 200, 429]
    assert [s.get(url + "/a").status_code for _ in range(3)] == [200, 200, 429]  # 11, 12, then over


def test_fail_next_throttle_next_and_error_rate_are_deterministic(served):
    standin, url, s = served
    standin.set_faults([FaultRule(endpoint="a", fail_next=2, throttle_next=1)])
    assert [s.get(url + "/a").status_code for _ in range(4)] == [503, 503, 429, 200]
    runs = []
    for _ in range(2):
        standin._random.seed(1)
        standin.set_faults([FaultRule(error_rate=0.5)])
        runs.append([s.get(url + "/a").status_code for _ in range(20)])
    assert runs[0] == runs[1] and 503 in runs[0] and 200 in runs[0]


def test_latency_with_jitter(served):
    standin, url, s = served
    standin.set_faults([FaultRule(latency_ms=80, jitter_ms=20)])
    t0 = time.perf_counter()
    s.get(url + "/a")
    assert 0.08 <= time.perf_counter() - t0 < 1.0


def test_dropped_connection_is_closed_unanswered(served):
    standin, url, s = served
    standin.set_faults([FaultRule(endpoint="a", drop_rate=1.0)])
    with pytest.raises(requests.ConnectionError):
        s.get(url + "/a")
    assert standin.stats.snapshot()["dropped"] == {"a": 1}
    assert requests.get(url + "/b").status_code == 200


def test_admin_mutate_changes_the_organisation(served):
    standin, url, s = served
    r = s.post(url + "/_sandbox/mutate", json={"op": "set_person", "args": {"index": 5, "fields": {"suspended": True}}})
    assert r.json() == {"change": 1}
    assert standin.org.person(5).suspended is True
    r = s.post(url + "/_sandbox/mutate", json={"op": "share", "args": {"file_id": "uf000005x0001", "share": {
        "id": "new1", "type": "anyone", "role": "reader"}}})
    assert r.json() == {"change": 2}
    assert standin.org.find_file("uf000005x0001").shares[-1].type == "anyone"
    assert s.post(url + "/_sandbox/mutate", json={"op": "explode", "args": {}}).status_code == 400
    assert [c["kind"] for c in standin.org.changes_since(0)] == ["person", "file"]


def test_responses_go_out_in_one_write_with_nodelay(served):
    """apis.md: header and body in separate small writes cost ~40 ms a call (Nagle + delayed ACK)."""
    standin, url, s = served
    t0 = time.perf_counter()
    for _ in range(200):
        s.get(url + "/a")
    assert (time.perf_counter() - t0) / 200 < 0.02
