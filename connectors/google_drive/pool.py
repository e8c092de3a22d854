"""A bounded pool of impersonated sessions that streams results back to the snapshot generator.

Workers pull tasks from a shared iterator (no queue of 100k futures), each runs ``fn(task, emit)``
and hands batches of results to a bounded queue, so a slow consumer (the bag writer) slows the
workers down instead of letting records pile up in memory. A task's recoverable failure is the
task's business (``fn`` reports it through ``ctx.error``); anything ``fn`` raises stops the pool
and is re-raised in the consumer — a cancellation, a refused admin credential.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

_DONE = object()


def run_pool(tasks: Iterable[Any], fn: Callable[[Any, Callable[[list[Any]], None]], None], *, workers: int,
             max_pending: int = 64) -> Iterator[Any]:
    """Yield every item ``fn`` emitted (in batches' order per task, tasks interleaved)."""
    source = iter(tasks)
    source_lock = threading.Lock()
    out: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
    stop = threading.Event()
    failure: list[BaseException] = []

    def emit(items: list[Any]) -> None:
        while not stop.is_set():
            try:
                out.put(items, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def worker() -> None:
        try:
            while not stop.is_set():
                with source_lock:
                    try:
                        task = next(source)
                    except StopIteration:
                        return
                fn(task, emit)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, which re-raises it
            failure.append(exc)
            stop.set()
        finally:
            while True:
                try:
                    out.put(_DONE, timeout=0.2)
                    break
                except queue.Full:
                    if stop.is_set():
                        try:
                            out.get_nowait()
                        except queue.Empty:
                            pass

    threads = [threading.Thread(target=worker, name=f"shoseki-google-{n}", daemon=True) for n in range(max(1, workers))]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            item = out.get()
            if item is _DONE:
                running -= 1
                continue
            if failure:
                break
            yield from item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


class _Stopped(Exception):
    pass
