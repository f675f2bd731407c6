"""``kernelscope explain`` from the command line: output and exact error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

SEED = ("--input", "9 8 7 6; 5 4 3 2; 1 2 3 4; 5 6 7 8", "--kernel", "1 2 3; 4 5 6; 7 8 9")


def test_seed_example(cli_runner):
    result = cli_runner("explain", *SEED)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("cross-correlation of a 4x4 input with a 3x3 kernel (stride 1, padding none, "
                        "dilation 1) -> 2x2 output")
    assert "  9*1 + 8*2 + 7*3 + 5*4 + 4*5 + 3*6 + 1*7 + 2*8 + 3*9 = 154" in lines
    assert lines[-3:] == ["output (2x2):", "  154 157", "  200 233"]


def test_json_output(cli_runner):
    result = cli_runner("explain", *SEED, "--json", "--mode", "convolve")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["output"] == [[266, 233], [160, 157]]
    assert data["flip_identity"] is True


def test_options_reach_the_engine(cli_runner):
    result = cli_runner("explain", *SEED, "--padding", "1", "--stride", "2", "--padding-mode",
                        "replicate", "--dilation", "1,1", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["padding"] == [1, 1, 1, 1] and data["stride"] == [2, 2]
    assert data["padded_input"][0][0][0] == [9, 9, 8, 7, 6, 6]


def test_matrices_from_files(cli_runner, tmp_path):
    np.save(tmp_path / "x.npy", np.arange(16).reshape(4, 4))
    (tmp_path / "k.csv").write_text("1,0\n0,-1\n")
    result = cli_runner("explain", "--input", tmp_path / "x.npy", "--kernel", tmp_path / "k.csv",
                        "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["output"] == [[-5] * 3] * 3


def test_multichannel_with_bias(cli_runner):
    result = cli_runner("explain", "--input", "1 2; 3 4 | 5 6; 7 8", "--kernel", "1 0; 0 1 | 1 1; 1 1",
                        "--bias", "10")
    assert result.exit_code == 0, result.output
    assert "  total: 5 + 26 + bias 10 = 41  (channel sums plus bias)" in result.output


@pytest.mark.parametrize("args,message", [
    (("--input", "1 2; 3", "--kernel", "1"),
     "Error: --input: row 2 has 1 number but row 1 has 2 numbers; every row needs the same count"),
    (("--input", "1 2; 3 4", "--kernel", "1 a"),
     "Error: --kernel: 'a' is not a number (row 1, column 2)"),
    (("--input", "1 2; 3 4", "--kernel", "1 2 3; 4 5 6; 7 8 9"),
     "Error: kernel 3x3 is larger than the padded input 2x2 (input 2x2, padding (0, 0, 0, 0)); "
     "use a smaller kernel or more padding"),
    ((*SEED, "--stride", "0"), "Error: stride must be a positive int or a pair of positive ints; got 0"),
    ((*SEED, "--stride", "x"), "Error: --stride must be 1 integer or 2 integers (like '2' or '1,2'); got 'x'"),
    ((*SEED, "--padding", "sme"),
     "Error: padding: unknown padding 'sme'; did you mean 'same'? (valid: full, same, valid), "
     "or an int, (ph, pw) or (top, bottom, left, right)"),
    ((*SEED, "--padding", "1,2,3"),
     "Error: --padding must be valid, same, full, an int, 'ph,pw' or 'top,bottom,left,right'; got '1,2,3'"),
    ((*SEED, "--padding", "4", "--padding-mode", "reflect"),
     "Error: reflect padding of 4 on the top is larger than the input allows: reflect adds at most "
     "height - 1 = 3 pixels per side; use 'replicate', 'circular' or less padding"),
    ((*SEED, "--grad-output", "1"), "Error: --grad-output needs --backward"),
    (("--input", "/nonexistent/x.npy", "--kernel", "1"), "Error: --input: no such file '/nonexistent/x.npy'"),
])
def test_errors_are_one_line_with_exit_2(cli_runner, args, message):
    result = cli_runner("explain", *args)
    assert result.exit_code == 2
    assert result.output.strip() == message


def test_unknown_padding_mode_is_a_usage_error(cli_runner):
    result = cli_runner("explain", *SEED, "--padding-mode", "mirror")
    assert result.exit_code == 2
    assert "Invalid value for '--padding-mode': 'mirror' is not one of" in result.output
    assert "Traceback" not in result.output


def test_large_input_is_refused(cli_runner):
    result = cli_runner("explain", "--input", "; ".join(["1 " * 30] * 30), "--kernel", "1")
    assert result.exit_code == 2
    assert result.output.startswith("Error: explain is for small inputs: this call has 900 output")


def test_backward_calls_the_gradient_explainer(cli_runner):
    result = cli_runner("explain", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 0 -1",
                        "--backward", "--grad-output", "1 0; 0 2")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("backward pass of a cross-correlation of a 3x3 input")
    data = json.loads(cli_runner("explain", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 0 -1",
                                 "--backward", "--json").output)
    # with g all ones, dL/dK[u, v] is the sum of the input pixels that tap met
    assert data["kernel_grad"] == [[12, 16], [24, 28]]


@pytest.mark.parametrize("args,message", [
    (("--groups", "2"), "Error: --groups 2 is not supported with --backward; use groups 1"),
    (("--bias", "1"), "Error: --bias does not change any gradient; leave it out with --backward"),
])
def test_backward_option_errors(cli_runner, args, message):
    result = cli_runner("explain", *SEED, "--backward", *args)
    assert result.exit_code == 2
    assert result.output.strip() == message
