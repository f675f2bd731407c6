"""``kernelscope serve``: the interactive explorer on a local web server."""

from __future__ import annotations

import ipaddress
import socket

import click

from kernelscope.errors import KernelscopeError

__all__ = ["serve_command", "bind"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise KernelscopeError(f"--host {host!r} cannot be resolved: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it a small response waits ~40 ms for a delayed ACK
    # (measured: 48 ms per request on loopback without, 3 ms with; uvicorn sets it only on sockets it binds)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise KernelscopeError(f"cannot listen on {host}:{port} ({error.strerror}); "
                               f"choose another --port (0 picks a free one)") from None
    sock.setblocking(False)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command("serve")
@click.argument("runs", nargs=-1, type=str, metavar="[RUN|SOURCE]...")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; the default serves this machine only.")
@click.option("--atlas-nulls", default=300, show_default=True, type=click.IntRange(50, 5000),
              help="Null kernels per control when a layer's atlas is computed (hover information).")
def serve_command(runs: tuple[str, ...], port: int, host: str, atlas_nulls: int) -> None:
    """Start the explorer: the operation, explained cell by cell, the given runs, and the network view.

    Each argument is a RUN directory or any other SOURCE (a model file, a pretrained name
    of `kernelscope models` such as onet): every one gets the network view (each conv
    layer's feature maps for one image, any cell explained); runs also get the Runs view.
    Only what is named here is served (by index); nothing else on disk is reachable from
    the page. Stop with Ctrl+C.

    \b
    Example:
      kernelscope serve runs/mnist onet --port 8765
    """
    import uvicorn

    from kernelscope.serve.app import LOCAL_HOSTS, create_app

    # loopback: only local host names (no DNS rebinding); another address: the names it is reached by are unknown
    hosts = (*LOCAL_HOSTS, host) if _is_loopback(host) else None
    from pathlib import Path

    run_dirs = [r for r in runs if (Path(r) / "manifest.json").is_file()]
    others = [r for r in runs if r not in run_dirs]
    app = create_app(run_dirs, sources=others, atlas_n_null=atlas_nulls, allowed_hosts=hosts)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    extra = f" and {len(others)} other source{'' if len(others) == 1 else 's'}" if others else ""
    click.echo(f"kernelscope explorer: http://{shown}:{actual}/  (serving {len(run_dirs)} run"
               f"{'' if len(run_dirs) == 1 else 's'}{extra}; Ctrl+C stops)")
    if not _is_loopback(host):
        click.echo(f"warning: bound to {host}, not loopback: other machines can reach this page", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises Ctrl+C: a normal stop
        pass
    finally:
        sock.close()
    # Also when run returns: started where SIGINT is ignored (a background job of a script: `cmd &`), uvicorn
    # still stops on Ctrl+C/SIGINT with its own handler, but the Ctrl+C it re-raises afterwards is ignored.
    click.echo("kernelscope explorer stopped", err=True)
