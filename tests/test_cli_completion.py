"""Shell completion (click's, as docs/ecosystem.md documents it) and ``kernelscope --version``."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import kernelscope
from kernelscope.cli import COMMANDS, cli


def _complete(env: dict[str, str]) -> str:
    result = CliRunner().invoke(cli, [], env=env, prog_name="kernelscope")
    assert result.exit_code == 0, result.output
    return result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"], prog_name="kernelscope")
    assert result.exit_code == 0
    assert result.output == f"kernelscope, version {kernelscope.__version__}\n"


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F _kernelscope_completion kernelscope"),
                                          ("zsh", "#compdef kernelscope"),
                                          ("fish", "complete --no-files --command kernelscope")])
def test_completion_scripts(shell, marker):
    script = _complete({"_KERNELSCOPE_COMPLETE": f"{shell}_source"})
    assert marker in script
    assert "_KERNELSCOPE_COMPLETE=" in script  # the script calls back into kernelscope for each completion


@pytest.mark.parametrize("words,cword,expected", [
    ("kernelscope ex", "1", ["explain"]),                        # a lazily imported command, by name
    ("kernelscope ", "1", sorted(COMMANDS)),                       # every command
    ("kernelscope --ver", "1", ["--version", "--verbose"]),
    ("kernelscope train --tensor", "2", ["--tensorboard"]),        # a sub-command's options
    ("kernelscope train --lr-schedule c", "3", ["constant", "cosine"]),  # a choice's values
])
def test_bash_completion_answers(words, cword, expected):
    out = _complete({"_KERNELSCOPE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword})
    got = [line.split(",", 1)[1] for line in out.splitlines()]
    assert sorted(got) == sorted(expected)
