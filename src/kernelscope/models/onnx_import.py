"""A small ONNX -> PyTorch converter for the common CNN operators.

Supported: Conv, Relu, LeakyRelu, MaxPool, AveragePool, GlobalAveragePool, Gemm, MatMul,
Add, Sub, Mul, Div, Flatten, Reshape, BatchNormalization, Sigmoid, Tanh, Softmax,
Dropout, Identity, Constant. Any other operator is a clear error naming it.

Conv, Gemm (with constant weights) and BatchNormalization become real ``nn.Conv2d``,
``nn.Linear`` and ``nn.BatchNorm2d`` modules, named after their weight initialisers
(``features.0.weight`` -> layer ``features.0``) so that dotted layer names survive a
PyTorch -> ONNX -> kernelscope round trip. Nothing in the file is executed: the graph
is read as data and replayed with torch operations.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.errors import KernelscopeError

__all__ = ["load_onnx", "OnnxModel", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("Conv", "Relu", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "MatMul",
                 "Add", "Sub", "Mul", "Div", "Flatten", "Reshape", "BatchNormalization", "Sigmoid", "Tanh",
                 "Softmax", "Dropout", "Identity", "Constant")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads_2d(pads: list[int] | None) -> tuple[int, int, int, int] | None:
    """ONNX pads [top, left, bottom, right] -> (top, bottom, left, right), or None when zero."""
    if not pads or not any(pads):
        return None
    top, left, bottom, right = pads
    return top, bottom, left, right


class OnnxModel(nn.Module):
    """Replays an ONNX graph with torch operations; parameters live in named sub-modules."""

    def __init__(self, inputs: list[str], outputs: list[str], program: list[tuple], constants: dict[str, torch.Tensor]):
        super().__init__()
        self.input_names = inputs
        self.output_names = outputs
        self.program = program  # [(op, input names, output names, module path or None, attrs)]
        for i, value in enumerate(constants.values()):
            self.register_buffer(f"_const{i}", value, persistent=False)
        self._constant_names = {name: f"_const{i}" for i, name in enumerate(constants)}

    def _module(self, path: str) -> nn.Module:
        return self.get_submodule(path)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {n: getattr(self, b) for n, b in self._constant_names.items()}
        values.update(zip(self.input_names, args, strict=False))
        for op, inputs, outputs, path, attrs in self.program:
            x = [values[n] if n else None for n in inputs]
            if path is not None:
                module = self._module(path)
                pre = attrs.get("pre_pad")
                y = module(F.pad(x[0], (pre[2], pre[3], pre[0], pre[1])) if pre else x[0])
            else:
                y = _apply(op, x, attrs)
            values[outputs[0]] = y
        result = [values[n] for n in self.output_names]
        return result[0] if len(result) == 1 else tuple(result)


def _apply(op: str, x: list[Any], a: dict[str, Any]) -> torch.Tensor:
    if op == "Relu":
        return torch.relu(x[0])
    if op == "LeakyRelu":
        return F.leaky_relu(x[0], a.get("alpha", 0.01))
    if op == "Sigmoid":
        return torch.sigmoid(x[0])
    if op == "Tanh":
        return torch.tanh(x[0])
    if op == "Softmax":
        return torch.softmax(x[0], dim=a.get("axis", -1))
    if op in ("Dropout", "Identity"):
        return x[0]
    if op == "Add":
        return x[0] + x[1]
    if op == "Sub":
        return x[0] - x[1]
    if op == "Mul":
        return x[0] * x[1]
    if op == "Div":
        return x[0] / x[1]
    if op == "MatMul":
        return torch.matmul(x[0], x[1])
    if op == "Flatten":
        axis = a.get("axis", 1)
        return x[0].reshape(int(np.prod(x[0].shape[:axis])) if axis else 1, -1)
    if op == "Reshape":
        shape = [int(s) for s in x[1].tolist()]
        shape = [x[0].shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
        return x[0].reshape(shape)
    if op == "GlobalAveragePool":
        return x[0].mean(dim=(-2, -1), keepdim=True)
    if op in ("MaxPool", "AveragePool"):
        kernel = tuple(a["kernel_shape"])
        stride = tuple(a.get("strides", [1] * len(kernel)))
        pads = _pads_2d(a.get("pads"))
        inp, padding = x[0], (0, 0)
        if pads is not None:
            top, bottom, left, right = pads
            if top == bottom and left == right:
                padding = (top, left)
            else:
                fill = float("-inf") if op == "MaxPool" else 0.0
                inp = F.pad(inp, (left, right, top, bottom), value=fill)
        ceil = bool(a.get("ceil_mode", 0))
        if op == "MaxPool":
            return F.max_pool2d(inp, kernel, stride, padding, ceil_mode=ceil)
        return F.avg_pool2d(inp, kernel, stride, padding, ceil_mode=ceil,
                            count_include_pad=bool(a.get("count_include_pad", 0)))
    if op == "Gemm":  # non-constant weights
        A = x[0].t() if a.get("transA", 0) else x[0]
        B = x[1].t() if a.get("transB", 0) else x[1]
        y = a.get("alpha", 1.0) * (A @ B)
        return y + a.get("beta", 1.0) * x[2] if len(x) > 2 and x[2] is not None else y
    raise KernelscopeError(f"ONNX operator {op!r} is not supported (supported: {', '.join(SUPPORTED_OPS)})")


def _scope_name(node_name: str) -> str:
    """``/layer1/layer1.0/conv1/Conv`` (torch exporter scopes) -> ``layer1.0.conv1``."""
    parts: list[str] = []
    for segment in [s for s in node_name.split("/") if s][:-1]:
        # A segment repeats the tail of the path so far ("layer2" then "layer2.0"): replace that tail.
        for cut in range(len(parts)):
            if segment.startswith(".".join(parts[cut:]) + "."):
                parts = parts[:cut]
                break
        parts += segment.split(".")
    return ".".join(parts)


def _module_path(weight_name: str, node: Any, used: set[str]) -> str:
    if weight_name.endswith(".weight"):
        base = weight_name[:-len(".weight")]
    else:
        base = _scope_name(node.name or "") or node.name or node.op_type
    parts = [re.sub(r"\W", "_", p) or "_" for p in base.split(".")]
    path = ".".join(parts)
    while path in used:
        path += "_"
    used.add(path)
    return path


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, leaf = path.split(".")
    current = root
    for part in parents:
        if not hasattr(current, part):
            current.add_module(part, nn.Module())
        current = getattr(current, part)
    current.add_module(leaf, module)


def load_onnx(path: str | Path) -> OnnxModel:
    """Convert the ONNX model at ``path`` to a torch module (eval mode).

    Raises :class:`KernelscopeError` for unreadable files and unsupported operators.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:  # onnx raises DecodeError and others for corrupt files
        raise KernelscopeError(f"cannot read ONNX file {str(path)!r}: {error}") from None
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    unsupported = sorted({n.op_type for n in graph.node} - set(SUPPORTED_OPS))
    if unsupported:
        raise KernelscopeError(f"ONNX operator(s) {', '.join(map(repr, unsupported))} in {str(path)!r} are not "
                               f"supported (supported: {', '.join(SUPPORTED_OPS)})")
    program: list[tuple] = []
    modules: list[tuple[str, nn.Module]] = []
    used: set[str] = set()
    for node in graph.node:
        a = _attrs(node)
        ins, outs = list(node.input), list(node.output)
        if node.op_type == "Constant":
            init[outs[0]] = torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
            continue
        if node.op_type == "Identity" and ins[0] in init:  # exporters alias shared weights this way
            init[outs[0]] = init[ins[0]]
            continue
        if node.op_type == "Conv" and ins[1] in init:
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise KernelscopeError(f"ONNX Conv {node.name!r}: auto_pad={a['auto_pad']!r} is not supported")
            weight = init[ins[1]]
            if weight.dim() != 4:
                raise KernelscopeError(f"ONNX Conv {node.name!r}: only 2-D convolutions are supported")
            bias = init.get(ins[2]) if len(ins) > 2 and ins[2] else None
            groups = int(a.get("group", 1))
            pads = _pads_2d(a.get("pads"))
            symmetric = pads is None or (pads[0] == pads[1] and pads[2] == pads[3])
            conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                             stride=tuple(a.get("strides", [1, 1])),
                             padding=(pads[0], pads[2]) if pads and symmetric else 0,
                             dilation=tuple(a.get("dilations", [1, 1])), groups=groups, bias=bias is not None)
            with torch.no_grad():
                conv.weight.copy_(weight)
                if bias is not None:
                    conv.bias.copy_(bias)
            module_path = _module_path(ins[1], node, used)
            modules.append((module_path, conv))
            program.append(("Conv", ins[:1], outs, module_path, {"pre_pad": None if symmetric else pads}))
            continue
        if node.op_type == "Gemm" and ins[1] in init and a.get("transB", 0) and not a.get("transA", 0) \
                and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0:
            weight = init[ins[1]]
            bias = init.get(ins[2]) if len(ins) > 2 and ins[2] else None
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                linear.weight.copy_(weight)
                if bias is not None:
                    linear.bias.copy_(bias.reshape(-1))
            module_path = _module_path(ins[1], node, used)
            modules.append((module_path, linear))
            program.append(("Gemm", ins[:1], outs, module_path, {}))
            continue
        if node.op_type == "BatchNormalization":
            scale, shift, mean, var = (init[n] for n in ins[1:5])
            bn = nn.BatchNorm2d(scale.shape[0], eps=float(a.get("epsilon", 1e-5)))
            with torch.no_grad():
                bn.weight.copy_(scale)
                bn.bias.copy_(shift)
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
            module_path = _module_path(ins[1], node, used)
            modules.append((module_path, bn))
            program.append(("BatchNormalization", ins[:1], outs[:1], module_path, {}))
            continue
        program.append((node.op_type, ins, outs, None, a))
    graph_inputs = [i.name for i in graph.input if i.name not in init]
    referenced = {n for _, ins, _, _, _ in program for n in ins}
    constants = {k: v for k, v in init.items() if k in referenced}
    model = OnnxModel(graph_inputs, [o.name for o in graph.output], program, constants)
    for module_path, module in modules:
        _attach(model, module_path, module)
    return model.eval()
