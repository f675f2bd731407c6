"""Progress bars for long work, one place to configure them.

Bars go to stderr, so that printed results on stdout stay clean, and are
switched off with ``KERNELSCOPE_PROGRESS=0`` (the tests do this) or ``disable=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress"]


def progress(iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None,
             disable: bool | None = None, **kwargs: Any) -> tqdm:
    """Wrap ``iterable`` in a tqdm bar on stderr (off when ``KERNELSCOPE_PROGRESS=0``)."""
    if disable is None:
        disable = os.environ.get("KERNELSCOPE_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False,
                dynamic_ncols=True, **kwargs)
