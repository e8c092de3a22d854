"""Progress of a running collection: a live line on a terminal, a log line now and then otherwise."""

from __future__ import annotations

import logging
import time
from typing import TextIO

from collector.runner import Progress

log = logging.getLogger("shoseki.progress")


class ProgressPrinter:
    def __init__(self, stream: TextIO, *, live: bool, log_every: float = 10.0):
        self.stream = stream
        self.live = live
        self.log_every = log_every
        self._last_log: float | None = None
        self._width = 0

    @staticmethod
    def line(p: Progress) -> str:
        text = f"{p.connector_id}  {p.pages:,} pages  {p.records:,} records  {p.rate:,.0f} records/s"
        if p.errors:
            text += f"  {p.errors:,} errors"
        if p.throttle_wait_s or p.throttles:
            text += f"  throttled {p.throttle_wait_s:,.0f}s"
            if p.throttles:
                text += f" ({p.throttles:,} waits)"
        minutes, seconds = divmod(int(p.elapsed), 60)
        return text + f"  {minutes // 60}:{minutes % 60:02d}:{seconds:02d}"

    def update(self, p: Progress) -> None:
        text = self.line(p)
        if self.live:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)
        elif p.done or self._last_log is None or time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            log.info("%s", text)

    def finish(self, connector_id: str) -> None:
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
