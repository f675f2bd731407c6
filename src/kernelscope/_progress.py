"""Progress for long work, one place to configure it.

On a terminal a tqdm bar on stderr; in a log file (stderr not a terminal) one line when a
piece of work ends (``epoch 3/15: 63 batches in 1.1 s, acc=0.973, loss=0.088``) instead
of hundreds of carriage-return redraws. Results on stdout stay clean either way.

``KERNELSCOPE_PROGRESS``: ``0`` silences it (the tests and ``kernelscope --quiet``), ``bar``
forces bars (``kernelscope --verbose``), ``lines`` forces lines; unset: bars on a terminal,
lines otherwise. ``disable=True`` silences one call.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["progress", "LineProgress"]


class LineProgress:
    """tqdm's small interface (update, set_postfix, close, iteration) printing one line at the end.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = LineProgress(desc="epoch 1/2", total=3, unit="batch", file=out)
    >>> for _ in range(3):
    ...     bar.update(1)
    >>> bar.set_postfix(acc=0.5)
    >>> bar.close()
    >>> out.getvalue().startswith("epoch 1/2: 3/3 batch in ") and out.getvalue().endswith(", acc=0.5\\n")
    True
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None,
                 unit: str = "it", file: Any = None, every: int | None = None, **_: Any) -> None:
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.file, self.every, self.shown = file, every, 0  # every: also a line each time n passes a multiple
        self.n, self.postfix, self.start, self.closed = 0, {}, time.perf_counter(), False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.every and self.n // self.every > self.shown and not self.closed:
            self.shown = self.n // self.every
            self._line()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._line()

    def _line(self) -> None:
        seconds = time.perf_counter() - self.start
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {count} {self.unit} in {seconds:.1f} s{extra}", file=self.file or sys.stderr,
              flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None,
             disable: bool | None = None, **kwargs: Any) -> Any:
    """A progress bar on a terminal, one line per finished piece of work in a log (see the module docstring).

    ``every=N``: in a log, also a line each N units (a long pass shows it is alive); a bar ignores it.
    """
    from tqdm import tqdm  # the plain bar (tqdm.auto warns in Jupyter kernels without ipywidgets)

    every = kwargs.pop("every", None)
    mode = os.environ.get("KERNELSCOPE_PROGRESS", "")
    if disable is None:
        disable = mode == "0"
    if not disable and (mode == "lines" or (mode != "bar" and not sys.stderr.isatty())):
        return LineProgress(iterable, desc=desc, total=total, every=every, **kwargs)
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True, **kwargs)
