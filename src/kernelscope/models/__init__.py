"""Models: the small zoo (:func:`build_model`), pretrained ONet, model-file readers and the init control.

Users' models are opened by :func:`kernelscope.sources.open_source` (one place for every
format). Imported lazily, so that ``kernelscope.models.layers`` can be used without
importing torch until a model is actually touched.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_model", "model_names"]


def __getattr__(name: str) -> Any:
    if name in ("build_model", "model_names"):
        from kernelscope.models import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'kernelscope.models' has no attribute {name!r}")
