"""Parallel work over chunks of a batch, with NumPy's BLAS kept single-threaded meanwhile.

The engine splits a batch into chunks and runs them on a small thread pool (NumPy
releases the GIL inside its loops and matrix products). While it does, the BLAS
library is limited to one thread per call: many BLAS threads spinning inside
small matrix products stall each other on a busy machine, whereas one thread per
chunk only meets the others at the end. ``KERNELSCOPE_THREADS`` sets the number of
threads (default: the CPUs this process may use, at most 8).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["engine_threads", "run_parallel", "single_threaded_blas"]

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_PID = 0
_CONTROLLER: Any = None


def engine_threads() -> int:
    """How many threads the engine uses (``KERNELSCOPE_THREADS`` or the usable CPUs, at most 8)."""
    value = os.environ.get("KERNELSCOPE_THREADS", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


_LOCK = threading.Lock()
_USERS = 0
_LIMITER: Any = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit NumPy/SciPy's OpenBLAS to one thread inside the block (no-op without threadpoolctl).

    The limit is process-wide, so concurrent callers share it: the first one in
    sets it and the last one out restores the previous setting.
    """
    global _CONTROLLER, _USERS, _LIMITER
    with _LOCK:
        if _USERS == 0:
            try:
                if _CONTROLLER is None:
                    from threadpoolctl import ThreadpoolController

                    _CONTROLLER = ThreadpoolController().select(user_api="blas",
                                                                prefix="libscipy_openblas")
                _LIMITER = _CONTROLLER.limit(limits=1)
            except Exception:  # threadpoolctl missing or unable to act: run as is
                _LIMITER = None
        _USERS += 1
    try:
        yield
    finally:
        with _LOCK:
            _USERS -= 1
            if _USERS == 0 and _LIMITER is not None:
                _LIMITER.restore_original_limits()
                _LIMITER = None


def run_parallel(work: Callable[[int, int, int], None], n: int, chunk: int) -> None:
    """Call ``work(worker, start, stop)`` for consecutive chunks of ``range(n)``.

    Chunks go to ``engine_threads()`` threads (worker ids ``0..threads-1`` so each
    can own a buffer), each with single-threaded BLAS; with one chunk everything runs
    in this thread (BLAS keeps its threads unless ``engine_threads() == 1``).
    """
    global _POOL, _POOL_SIZE, _POOL_PID
    starts: Sequence[int] = range(0, n, chunk)
    wanted = engine_threads()
    threads = min(wanted, len(starts))
    if threads <= 1:
        # one chunk: BLAS may use its own threads, unless one thread was asked for
        with single_threaded_blas() if wanted == 1 else contextlib.nullcontext():
            for start in starts:
                work(0, start, min(start + chunk, n))
        return
    if _POOL is None or _POOL_SIZE < threads or _POOL_PID != os.getpid():
        # a new pool also after a fork: the parent's worker threads do not exist in the child
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kernelscope")
        _POOL_SIZE, _POOL_PID = threads, os.getpid()
    # worker w takes chunks w, w + threads, ...: static and balanced for equal chunks
    def lane(worker: int) -> None:
        for start in starts[worker::threads]:
            work(worker, start, min(start + chunk, n))

    with single_threaded_blas():
        futures = [_POOL.submit(lane, w) for w in range(threads)]
        for future in futures:
            future.result()
