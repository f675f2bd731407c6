"""``kernelscope serve``: the address printed, the runs served, clean one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest


@pytest.fixture
def no_serving(monkeypatch):
    """Replace uvicorn's blocking loop by a recorder of the sockets it was given."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: calls.append(
        (self.config.app, [s.getsockname() for s in sockets])))
    return calls


def test_serve_prints_the_address_and_serves_the_given_runs(cli_runner, serve_run, no_serving):
    result = cli_runner("serve", serve_run, "--port", "0")
    assert result.exit_code == 0, result.output
    (app, addresses), = no_serving
    host, port = addresses[0]
    assert host == "127.0.0.1" and port > 0
    assert result.stdout == f"kernelscope explorer: http://127.0.0.1:{port}/  (serving 1 run; Ctrl+C stops)\n"
    assert result.stderr == "kernelscope explorer stopped\n"  # printed however the server ends
    assert [run.path for run in app.state.store.runs] == [serve_run]
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    hosts = [m.kwargs["allowed_hosts"] for m in app.user_middleware if m.cls is TrustedHostMiddleware]
    assert hosts == [["127.0.0.1", "localhost", "::1", "[::1]", "testserver", "127.0.0.1"]]


def test_serve_warns_when_not_bound_to_loopback(cli_runner, no_serving):
    result = cli_runner("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 0
    assert "warning: bound to 0.0.0.0, not loopback: other machines can reach this page" in result.stderr
    (app, _), = no_serving
    assert app.user_middleware[0].cls.__name__ == "_BodyLimit"  # no host check: its names are unknown


def test_serve_refuses_a_missing_run(cli_runner, tmp_path, no_serving):
    result = cli_runner("serve", tmp_path / "nope")
    assert result.exit_code == 2
    assert result.output == (f"Error: source '{tmp_path / 'nope'}' does not exist (give a run directory or a "
                             "model file)\n")
    assert no_serving == []


def test_serve_refuses_a_busy_port(cli_runner, no_serving):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli_runner("serve", "--port", port)
    assert result.exit_code == 2
    assert result.output == (f"Error: cannot listen on 127.0.0.1:{port} (Address already in use); "
                             "choose another --port (0 picks a free one)\n")


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "Invalid value for '--port': 70000 is not in the range 0<=x<=65535."),
    (["--host", "no.such.host.invalid", "--port", "0"], "Error: --host 'no.such.host.invalid' cannot be resolved"),
])
def test_serve_usage_errors(cli_runner, no_serving, args, message):
    result = cli_runner("serve", *args)
    assert result.exit_code == 2
    assert message in result.output


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# "ignored": how a background job of a script (`make test &`, `nohup`) starts: SIGINT ignored from birth. uvicorn
# still stops on SIGINT with its own handler, but the Ctrl+C it re-raises afterwards was ignored and the stop line
# never came (the flaky "stderr was empty after Ctrl-C" of issue 21, whenever the suite ran as such a job).
@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_serve_for_real_answers_and_stops_on_ctrl_c(serve_run, inherited):
    """The installed command in a subprocess: prints the address, answers /api/runs, exits 0 on SIGINT."""
    import httpx

    env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": "4"}
    process = subprocess.Popen([sys.executable, "-m", "kernelscope", "serve", str(serve_run), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=_ignore_sigint if inherited == "ignored" else None)
    try:
        line = process.stdout.readline()
        assert line.startswith("kernelscope explorer: http://127.0.0.1:"), process.stderr.read()
        url = line.split()[2]
        deadline = time.monotonic() + 20
        while True:
            try:
                runs = httpx.get(url + "api/runs", timeout=5).json()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert [r["id"] for r in runs] == [0]
        assert httpx.get(url, timeout=5).headers["content-type"].startswith("text/html")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, f"exit status {process.returncode}; stderr: {err!r}"
    assert "kernelscope explorer stopped" in err, f"no stop line; stderr: {err!r}"
