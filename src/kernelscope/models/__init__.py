"""Models: the small zoo (:func:`build_model`) and loading of users' models (:func:`load_model`).

Imported lazily, so that ``kernelscope.models.layers`` can be used without importing torch
until a model is actually touched.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_model", "model_names", "load_model"]


def __getattr__(name: str) -> Any:
    if name in ("build_model", "model_names"):
        from kernelscope.models import zoo

        return getattr(zoo, name)
    if name == "load_model":
        from kernelscope.models.io import load_model

        return load_model
    raise AttributeError(f"module 'kernelscope.models' has no attribute {name!r}")
