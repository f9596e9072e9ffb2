"""What ``all_reduce(..., async_op=True)`` and the DDP hook run on: one worker thread per
process that runs the ring calls in the order they were issued, and the work object returned
to the caller.

One thread, not a pool: the ring's messages are matched by tag, so two reductions of the same
group must never run at once, and every rank must run them in the same order (DDP issues its
buckets in the same order on every rank). A synchronous call first waits for the reductions
issued before it, for the same reason.
"""

from __future__ import annotations

import math
import queue
import threading
from datetime import timedelta
from typing import Any, Callable

import torch

__all__ = ["AllReduceWork", "run_in_order", "submit"]

_jobs: queue.SimpleQueue[tuple[Callable[[], Any], torch.futures.Future[Any]]] = queue.SimpleQueue()
_worker: threading.Thread | None = None
_start_lock = threading.Lock()
#: Held while one reduction runs, on the worker or on a caller's thread.
_run_lock = threading.Lock()
_last: torch.futures.Future[Any] | None = None


def _loop() -> None:
    while True:
        fn, fut = _jobs.get()
        try:
            with _run_lock:
                value = fn()
        except BaseException as e:  # handed to whoever waits on the future
            fut.set_exception(e)
        else:
            fut.set_result(value)


def submit(fn: Callable[[], Any]) -> torch.futures.Future[Any]:
    """Queues ``fn`` behind the reductions issued before it; the future completes (on the
    worker thread) with its result or its exception."""
    global _worker, _last
    fut: torch.futures.Future[Any] = torch.futures.Future()
    with _start_lock:
        if _worker is None or not _worker.is_alive():
            # A daemon: a process that exits with reductions queued does not hang on them.
            _worker = threading.Thread(target=_loop, name="ferrolm-comm", daemon=True)
            _worker.start()
        _last = fut
        _jobs.put((fn, fut))
    return fut


def run_in_order(fn: Callable[[], Any]) -> Any:
    """Runs ``fn`` on this thread once every reduction issued before it has finished."""
    last = _last
    # On the worker itself (a future's callback) the queued jobs wait for this one instead.
    on_worker = threading.current_thread() is _worker
    if last is not None and not last.done() and not on_worker:
        # Its outcome belongs to its own caller; here only its end matters.
        _wait_quietly(last)
    with _run_lock:
        return fn()


def _wait_quietly(fut: torch.futures.Future[Any]) -> None:
    done = threading.Event()
    fut.add_done_callback(lambda _: done.set())
    done.wait()


class AllReduceWork:
    """The handle ``all_reduce(..., async_op=True)`` returns, like ``torch.distributed``'s
    ``Work``: the tensor holds the result once :meth:`wait` returns.

    Do not read or write the tensor before then: the reduction reads it on a worker thread
    and writes the result into it at the end.
    """

    def __init__(self, future: torch.futures.Future[Any]) -> None:
        self._future = future
        self._done = threading.Event()
        future.add_done_callback(lambda _: self._done.set())

    def wait(self, timeout: timedelta | float | None = None) -> bool:
        """Blocks until the reduction ends and raises its error, if any.

        Args:
            timeout: Longest wait (a ``timedelta`` or seconds); ``None`` waits for the
                reduction, which ends on its own within ``all_reduce``'s ``timeout``.

        Returns:
            ``True``, as ``torch.distributed``'s ``Work.wait``.

        Raises:
            TimeoutError: ``timeout`` passed first (the reduction goes on).
            ValueError, CommTimeoutError, RuntimeError: what the reduction raised.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds >= 0):
            raise ValueError(f"`timeout` must be a non-negative number of seconds, got {timeout!r}")
        if seconds is not None and math.isfinite(seconds):
            if not self._done.wait(seconds):
                raise TimeoutError(f"all_reduce did not finish within timeout={seconds:g} s")
        else:
            self._done.wait()
        self._future.wait()  # raises the reduction's exception
        return True

    def is_completed(self) -> bool:
        """Whether the reduction has ended (successfully or not)."""
        return self._done.is_set()

    def is_success(self) -> bool:
        """Whether the reduction has ended without an error."""
        if not self._done.is_set():
            return False
        try:
            self._future.wait()
        except Exception:  # the failure itself is reported by wait()
            return False
        return True

    def get_future(self) -> torch.futures.Future[Any]:
        """A ``torch.futures.Future`` that completes with the reduced tensor."""
        return self._future
