"""load_model: state dicts and safetensors (+ arch, shapes inferred), TorchScript, ONNX, refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from kernelscope.errors import KernelscopeError
from kernelscope.models import build_model
from kernelscope.models.io import infer_build_kwargs
from kernelscope.models.layers import conv_layer_names
from kernelscope.sources import load_model


def _same(a, b, x, atol=1e-5):
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=atol)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_model("lenet5", in_channels=3, num_classes=5, input_size=32, kernel_size=7, width=8).eval()


def test_module_passthrough(net):
    assert load_model(net) is net


def test_state_dict_with_arch_infers_shapes(net, tmp_path):
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt", arch="lenet5")
    assert loaded.kernelscope_arch["kwargs"] == {"in_channels": 3, "num_classes": 5, "input_size": [32, 32],
                                                 "kernel_size": 7, "width": 8, "depth": 2}
    _same(net, loaded, torch.randn(2, 3, 32, 32))
    assert not loaded.training


def test_state_dict_without_arch_is_its_conv_weights(net, tmp_path):
    torch.save(net.state_dict(), tmp_path / "w.pt")
    weights = load_model(tmp_path / "w.pt")
    assert conv_layer_names(weights) == conv_layer_names(net)
    for name in conv_layer_names(net):
        assert torch.equal(weights.get_submodule(name).weight, net.get_submodule(name).weight)
    with pytest.raises(KernelscopeError, match=r"^state dict 'w.pt' cannot be run: a state dict holds weights, not "
                                               r"the computation; give --arch \(arch=\) to run it"):
        weights(torch.zeros(1, 3, 32, 32))


def test_state_dict_must_fit_its_arch(net, tmp_path):
    torch.save(net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(KernelscopeError, match="no 'tinyvgg' configuration matches the state dict's shapes"):
        load_model(tmp_path / "w.pt", arch="tinyvgg")
    with pytest.raises(KernelscopeError, match="unknown model 'lenet'; did you mean 'lenet5'"):
        load_model(tmp_path / "w.pt", arch="lenet")


def test_safetensors(net, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    _same(net, load_model(tmp_path / "w.safetensors", arch="lenet5"), torch.randn(2, 3, 32, 32))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(KernelscopeError, match="cannot read safetensors file"):
        load_model(tmp_path / "bad.safetensors", arch="lenet5")


def test_pickled_module_is_refused_without_running_it(net, tmp_path):
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(KernelscopeError, match=r"holds pickled Python objects \(such as a whole nn.Module\), which "
                                               "kernelscope refuses to load"):
        load_model(tmp_path / "whole.pt")


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"garbage")
    with pytest.raises(KernelscopeError, match="cannot read .*x.pt"):
        load_model(tmp_path / "x.pt", arch="lenet5")
    with pytest.raises(KernelscopeError, match=r"source '.*nope.pt' does not exist \(give a run directory or a model file\)"):
        load_model(tmp_path / "nope.pt")


def _trace(model, x, path):
    with warnings.catch_warnings():  # torch.jit.trace is deprecated in torch 2.x; files still load
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(model, x), str(path))


def test_torchscript_of_a_zoo_model_becomes_the_eager_model(tmp_path):
    torch.manual_seed(1)
    model = build_model("resnet-small", input_size=28).eval()
    x = torch.randn(2, 1, 28, 28)
    _trace(model, x, tmp_path / "ts.pt")
    loaded = load_model(tmp_path / "ts.pt")
    assert isinstance(loaded, type(model)) and conv_layer_names(loaded) == conv_layer_names(model)
    _same(model, loaded, x)


class _Foreign(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x).abs().sum(dim=(2, 3))


def test_torchscript_of_a_foreign_model_is_read_as_weights_only(tmp_path):
    model = _Foreign().eval()
    _trace(model, torch.randn(2, 1, 9, 9), tmp_path / "f.pt")
    loaded = load_model(tmp_path / "f.pt")
    assert not isinstance(loaded, torch.jit.ScriptModule)
    assert conv_layer_names(loaded) == ["conv"]
    assert torch.equal(loaded.conv.weight, model.conv.weight) and torch.equal(loaded.conv.bias, model.conv.bias)
    with pytest.raises(KernelscopeError, match=r"TorchScript 'f.pt' cannot be run: .*pass --trust-code"):
        loaded(torch.randn(2, 1, 9, 9))


def test_torchscript_of_a_foreign_model_runs_only_with_trust_code(tmp_path):
    model = _Foreign().eval()
    x = torch.randn(2, 1, 9, 9)
    _trace(model, x, tmp_path / "f.pt")
    loaded = load_model(tmp_path / "f.pt", trust_code=True)
    assert isinstance(loaded, torch.jit.ScriptModule)
    _same(model, loaded, x)


def _export_onnx(model, x, path):
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated but works offline
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])


@pytest.mark.parametrize("name", ["large-kernel", "resnet-small", "tinyvgg"])
def test_onnx_matches_onnxruntime_and_keeps_layer_names(name, tmp_path):
    import onnxruntime

    torch.manual_seed(2)
    model = build_model(name, input_size=28).eval()
    x = torch.randn(3, 1, 28, 28)
    _export_onnx(model, x, tmp_path / "m.onnx")
    loaded = load_model(tmp_path / "m.onnx")
    reference = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = reference.run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert conv_layer_names(loaded) == conv_layer_names(model)


def _hand_graph(path, *, op_extra=None):
    """A graph with the ops an exporter may not emit: asymmetric pads, AveragePool, BN, Gemm, Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "conv.weight"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "conv.bias"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "bn.weight"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "bn.bias"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "bn.running_mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "bn.running_var"),
        numpy_helper.from_array(rng.normal(size=(3, 16)).astype(np.float32), "fc.weight"),
        numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "fc.bias"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[0, 1, 2, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                         ["b"], epsilon=1e-3),
        helper.make_node("Sigmoid", ["b"], ["s"]),
        helper.make_node("AveragePool", ["s"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["p"], ["q"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["q", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["g"], transB=1),
        helper.make_node(op_extra or "Softmax", ["g"], ["y"], **({"axis": 1} if op_extra is None else {})),
    ]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnx_hand_graph_against_onnxruntime(tmp_path, rng):
    import onnxruntime

    _hand_graph(tmp_path / "h.onnx")
    x = rng.normal(size=(2, 2, 8, 8)).astype(np.float32)
    (expected,) = onnxruntime.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})
    loaded = load_model(tmp_path / "h.onnx")
    with torch.no_grad():
        np.testing.assert_allclose(loaded(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-6)
    assert conv_layer_names(loaded) == ["conv"]


def test_onnx_unsupported_op_and_corrupt_file(tmp_path):
    _hand_graph(tmp_path / "h.onnx", op_extra="Elu")
    with pytest.raises(KernelscopeError, match=r"ONNX operator\(s\) 'Elu' in .* are not supported \(supported: Conv"):
        load_model(tmp_path / "h.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(KernelscopeError, match="cannot read ONNX file"):
        load_model(tmp_path / "bad.onnx")


def test_infer_build_kwargs_respects_given_values():
    net = build_model("large-kernel", input_size=25, kernel_size=9, num_classes=2)
    kw = infer_build_kwargs("large-kernel", net.state_dict())
    assert kw["input_size"] == (25, 25) and kw["kernel_size"] == 9 and kw["num_classes"] == 2
    with pytest.raises(KernelscopeError, match="no 'large-kernel' configuration matches"):
        infer_build_kwargs("large-kernel", net.state_dict(), input_size=28)
