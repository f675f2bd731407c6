"""Reading a TorchScript file's tensors and module tree without running any of its code.

``torch.jit.load`` compiles the file's code and calls the ``__setstate__`` methods it
defines, so merely opening a hostile file could run code with the user's
permissions. :func:`read_torchscript` never calls it: it reads ``data.pkl`` from the
zip archive with an unpickler that knows only tensors, storages and plain containers;
every ``__torch__.*`` class becomes a :class:`ScriptedNode` that only records the
class name and the attributes. The result is the module tree (dotted name -> class
name, as :class:`torch.nn.Module` would name it) and the state dict (every tensor
attribute by its dotted name).

Running the graph (the model's own ``forward``) is a separate, explicit step:
:func:`load_torchscript_code`, which callers reach only when the user opted in
(``--trust-code``).
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelscope.errors import KernelscopeError

__all__ = ["ScriptedNode", "ScriptedTree", "is_torchscript", "read_torchscript", "load_torchscript_code"]

_MANGLE = re.compile(r"\.___torch_mangle_\d+")


class ScriptedNode:
    """A TorchScript object as data: its class name and attributes (nothing of its code)."""

    qualified_name = "?"

    def __repr__(self) -> str:
        return f"ScriptedNode({self.qualified_name})"


@dataclass
class ScriptedTree:
    """What a TorchScript file holds, read without running it.

    Attributes
    ----------
    modules : dict of str to str
        Dotted module name (``""`` for the root) -> class name (``"Conv2d"``, ``"Net"``).
    state : dict of str to Tensor
        Every tensor attribute by dotted name (parameters and buffers).
    """

    modules: dict[str, str]
    state: dict[str, Any]


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with a ``code/`` folder or ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


class _Unpickler(pickle.Unpickler):
    """Tensors, storages and containers only; ``__torch__`` classes become inert nodes."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
        ("torch.jit._pickle", "build_intlist"),
        ("torch.jit._pickle", "build_doublelist"),
        ("torch.jit._pickle", "build_boollist"),
        ("torch.jit._pickle", "build_tensorlist"),
        ("torch.jit._pickle", "build_intlist"),
        ("torch.jit._pickle", "restore_type_tag"),
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if module.startswith("__torch__"):
            qualified = _MANGLE.sub("", f"{module}.{name}")
            return type(name, (ScriptedNode,), {"qualified_name": qualified})
        if module == "torch" and name.endswith("Storage") and hasattr(torch, name):
            return getattr(torch, name)
        if (module, name) in self._ALLOWED:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        import torch

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            dtype = storage_type.dtype if hasattr(storage_type, "dtype") else storage_type
            untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


def read_torchscript(path: str | Path) -> ScriptedTree:
    """The module tree and tensors of a TorchScript file, without running any of its code.

    Examples
    --------
    >>> import tempfile, warnings, torch
    >>> from torch import nn
    >>> path = tempfile.mkdtemp() + "/net.pt"
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     torch.jit.save(torch.jit.trace(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.zeros(1, 1, 5, 5)), path)
    >>> tree = read_torchscript(path)
    >>> tree.modules, sorted(tree.state), tuple(tree.state["0.weight"].shape)
    ({'': 'Sequential', '0': 'Conv2d'}, ['0.bias', '0.weight'], (2, 1, 3, 3))
    """
    import torch

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            data_name = next((n for n in names if n.endswith("data.pkl") and n.count("/") == 1), None)
            if data_name is None:
                raise KernelscopeError(f"cannot read TorchScript {str(path)!r}: no data.pkl in the archive")
            prefix = data_name[: -len("data.pkl")]
            with warnings.catch_warnings():  # TypedStorage is deprecated but is what the archive describes
                warnings.simplefilter("ignore", UserWarning)
                root = _Unpickler(archive.read(data_name), archive, prefix).load()
    except KernelscopeError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, ValueError, RuntimeError,
            AttributeError, TypeError, OSError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise KernelscopeError(f"cannot read TorchScript {str(path)!r} as data ({detail}); kernelscope reads "
                               "TorchScript files without running their code") from None
    if not isinstance(root, ScriptedNode):
        raise KernelscopeError(f"TorchScript {str(path)!r} does not hold a module")
    modules: dict[str, str] = {}
    state: dict[str, Any] = OrderedDict()

    def walk(node: ScriptedNode, prefix: str) -> None:
        modules[prefix] = node.qualified_name.rsplit(".", 1)[-1]
        for key, value in vars(node).items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, ScriptedNode):
                walk(value, name)
            elif isinstance(value, torch.Tensor):
                state[name] = value.detach()

    walk(root, "")
    return ScriptedTree(modules, dict(state))


def load_torchscript_code(path: str | Path):
    """``torch.jit.load`` the file: this compiles and runs the file's own code. Only on the user's opt-in."""
    import torch

    try:
        with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; loading it still works
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as error:
        raise KernelscopeError(f"cannot load TorchScript {str(path)!r}: {str(error).splitlines()[0]}") from None
