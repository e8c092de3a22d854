"""A request / resource-unit budget shared by a connector's workers, so it stays under the
provider's documented quota instead of provoking throttling (Google queries per minute per
project and per user; Graph resource units per app and tenant)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable


BURST_SHARE = 0.02  # of a minute's quota that may be spent at once


class _Bucket:
    """A token bucket that never spends more than ``per_minute`` in any 60 s window: a burst of
    ``BURST_SHARE`` of the quota, refilled at the rest of it (burst + 60 s × rate = quota)."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "blocked_until")

    def __init__(self, per_minute: float, now: float):
        self.burst = max(1.0, per_minute * BURST_SHARE)
        self.rate = max(per_minute - self.burst, 1.0) / 60.0
        self.tokens = self.burst
        self.stamp = now
        self.blocked_until = 0.0

    def wait_for(self, now: float) -> float:
        if now < self.blocked_until:
            return self.blocked_until - now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def spend(self) -> None:
        self.tokens -= 1.0


class QuotaBudget:
    """Per-project and per-user request budgets (requests per minute), shared by all workers."""

    def __init__(self, project_per_minute: float, user_per_minute: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.project_per_minute = project_per_minute
        self.user_per_minute = user_per_minute
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._project = _Bucket(project_per_minute, clock())
        self._users: OrderedDict[str, _Bucket] = OrderedDict()
        self.waited_s = 0.0

    def _user(self, subject: str, now: float) -> _Bucket:
        bucket = self._users.get(subject)
        if bucket is None:
            bucket = self._users[subject] = _Bucket(self.user_per_minute, now)
            if len(self._users) > 10_000:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(subject)
        return bucket

    def acquire(self, subject: str, cost: int = 1) -> float:
        """Block until ``cost`` calls fit both budgets; return the seconds waited."""
        waited = 0.0
        for _ in range(cost):
            while True:
                with self._lock:
                    now = self._clock()
                    user = self._user(subject, now)
                    wait = max(self._project.wait_for(now), user.wait_for(now))
                    if wait <= 0:
                        self._project.spend()
                        user.spend()
                        break
                self._sleep(min(wait, 5.0))
                waited += min(wait, 5.0)
        if waited:
            with self._lock:
                self.waited_s += waited
        return waited

    def hold(self, seconds: float, subject: str | None = None) -> None:
        """A throttle answer: nobody (or, for a per-user limit, that subject) calls for ``seconds``."""
        with self._lock:
            until = self._clock() + seconds
            bucket = self._user(subject, self._clock()) if subject else self._project
            bucket.blocked_until = max(bucket.blocked_until, until)
            bucket.tokens = 0.0
