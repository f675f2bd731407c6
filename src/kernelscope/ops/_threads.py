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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["engine_threads", "run_parallel", "single_threaded_blas"]

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
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


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit NumPy/SciPy's OpenBLAS to one thread inside the block (no-op without threadpoolctl)."""
    global _CONTROLLER
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController().select(user_api="blas", prefix="libscipy_openblas")
        limiter = _CONTROLLER.limit(limits=1)
    except Exception:  # threadpoolctl missing or unable to act: run as is
        yield
        return
    with limiter:
        yield


def run_parallel(work: Callable[[int, int, int], None], n: int, chunk: int) -> None:
    """Call ``work(worker, start, stop)`` for consecutive chunks of ``range(n)``.

    Chunks go to ``engine_threads()`` threads (worker ids ``0..threads-1`` so each
    can own a buffer); with one thread or one chunk everything runs in this thread.
    """
    global _POOL, _POOL_SIZE
    starts: Sequence[int] = range(0, n, chunk)
    threads = min(engine_threads(), len(starts))
    if threads <= 1:
        for start in starts:
            work(0, start, min(start + chunk, n))
        return
    if _POOL is None or _POOL_SIZE < threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kernelscope")
        _POOL_SIZE = threads
    # worker w takes chunks w, w + threads, ...: static and balanced for equal chunks
    def lane(worker: int) -> None:
        for start in starts[worker::threads]:
            work(worker, start, min(start + chunk, n))

    with single_threaded_blas():
        futures = [_POOL.submit(lane, w) for w in range(threads)]
        for future in futures:
            future.result()
