"""What docs/security.md promises about reading files: nothing in a file runs code or escapes its folder."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kernelscope.errors import KernelscopeError


class _Payload:
    """Unpickling this would call os.system: the file must be refused before that."""

    def __reduce__(self):
        return (os.system, ("touch kernelscope-pwned",))


def test_a_pickled_object_in_a_torch_file_is_refused_unrun(tmp_path, monkeypatch):
    import torch

    from kernelscope.models.io import read_weights

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "x": _Payload()}, path)
    # (the message for a reduce-call payload is the generic one: see models/io.read_weights)
    with pytest.raises(KernelscopeError, match=r"^cannot read '.*evil\.pt': not a torch file or corrupt \("):
        read_weights(path)
    assert not (tmp_path / "kernelscope-pwned").exists()


def test_npy_object_arrays_are_refused(tmp_path):
    from kernelscope.ops.matrices import parse_matrix

    path = tmp_path / "obj.npy"
    np.save(path, np.array([_Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(KernelscopeError, match=r"cannot read '.*obj\.npy' as a \.npy array \(it holds Python objects, dtype object"):
        parse_matrix(str(path), "--input")


@pytest.mark.parametrize("location,message", [
    ("../secret.bin", r"should be file inside '.*', but '\.\./secret\.bin' points outside the directory"),
    ("/etc/hostname", r"should be a relative path, but it is an absolute path: /etc/hostname"),
])
def test_onnx_external_data_cannot_escape_the_model_folder(tmp_path, location, message):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from kernelscope.models.onnx_import import load_onnx

    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    (tmp_path / "model").mkdir()
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 1, 1, 1],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("length", "4")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    path = tmp_path / "model" / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(KernelscopeError, match=rf"^cannot read ONNX file '.*m\.onnx': .*{message}"):
        load_onnx(path)


def test_the_payload_is_real(tmp_path, monkeypatch):
    """Plain pickle would run it: the refusals above are meaningful."""
    import pickle

    monkeypatch.chdir(tmp_path)
    pickle.loads(pickle.dumps(_Payload()))
    assert (tmp_path / "kernelscope-pwned").exists()


def test_a_whole_module_is_refused_with_the_reason(tmp_path):
    import torch

    from kernelscope.models.io import read_weights

    path = tmp_path / "module.pt"
    torch.save(torch.nn.Conv2d(1, 1, 3), path)
    with pytest.raises(KernelscopeError, match=r"holds pickled Python objects \(such as a whole nn\.Module\), "
                                               r"which kernelscope refuses to load because unpickling can run code"):
        read_weights(path)
