"""docs/your-network.md runs as written: its Python blocks and every command, in an empty folder."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

DOC = (Path(__file__).resolve().parents[1] / "docs" / "your-network.md").read_text(encoding="utf-8")


def test_every_block_of_the_page_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # `import mynet`, as from the current folder
    blocks = re.findall(r"```(python|console)\n(.*?)```", DOC, flags=re.S)
    assert [kind for kind, _ in blocks].count("console") == 5
    namespace: dict = {}
    for kind, text in blocks:
        if kind == "python":
            with warnings.catch_warnings():  # TorchScript tracing and the ONNX exporter are deprecated in torch 2.x
                warnings.simplefilter("ignore")
                exec(compile(text, "docs/your-network.md", "exec"), namespace)
            continue
        (line,) = [ln for ln in text.splitlines() if ln.startswith("$ ")]
        args = shlex.split(line.removeprefix("$ kernelscope "))
        done = subprocess.run([sys.executable, "-m", "kernelscope", *args], capture_output=True, text=True,
                              timeout=600, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin",
                                                "OPENBLAS_THREAD_TIMEOUT": "4", "HOME": str(tmp_path)})
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        out = tmp_path / args[args.index("--out") + 1]
        assert any(out.iterdir()), line
    assert json.loads((tmp_path / "atlas-resnet18" / "atlas.json").read_text())["shape"] == [64, 3, 7, 7]
    assert json.loads((tmp_path / "atlas-conv1" / "atlas.json").read_text())["layer"] == "conv1"
    assert json.loads((tmp_path / "atlas-mynet" / "atlas.json").read_text())["shape"] == [8, 3, 5, 5]
    assert namespace["src"].kind == "file" and len(namespace["src"].conv_layers) == 20
