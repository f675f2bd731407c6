"""The ``kernelscope`` command: a thin layer over the library.

Each sub-command lives in its own module and is imported only when it runs (so
``kernelscope explain`` never imports torch). Register a command by adding one
line to ``COMMANDS``: ``"name": ("module", "attribute", "one-line help")``.

Errors, never a traceback unless asked for:

- usage errors exit 2 with ``Error: ...`` and a hint (click's own);
- :class:`~kernelscope.errors.KernelscopeError` and the failures a user causes
  outside the library (an unwritable or missing path, a full disk, a closed or
  full standard output, a truncated or damaged ``.npz``/``.npy``, an image
  larger than Pillow's decompression-bomb limit) exit 2 with one ``Error: ...``
  line;
- anything else is a bug: one line ``Error: internal error: <type>: <message>
  (run with --debug for the traceback)`` and exit status 1.

``kernelscope --debug ...`` or ``KERNELSCOPE_DEBUG=1`` also prints the traceback
(the exit status stays the same).
"""

from __future__ import annotations

import errno
import importlib
import io
import os
import stat
import sys
import traceback
import zipfile
from typing import Any

import click

from kernelscope import __version__
from kernelscope.errors import KernelscopeError

__all__ = ["main", "cli", "COMMANDS", "LibraryError", "InternalError"]

# name -> (module, attribute, short help). The short help is here so that
# `kernelscope --help` lists every command without importing any of them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("kernelscope.cli.train", "train_command", "Train a zoo model, recording kernels and feature maps into a run directory."),
    "runs": ("kernelscope.cli.runs", "runs_group", "Inspect run directories: manifest summary and metrics per epoch."),
    "report": ("kernelscope.cli.report", "report", "Write a run's self-contained HTML report."),
    "demo": ("kernelscope.cli.demo", "demo", "Run the whole story on bundled data and write the report."),
    "explain": ("kernelscope.cli.explain", "explain_command", "Show every output pixel of a small convolution, step by step."),
    "conventions": ("kernelscope.cli.conventions", "conventions_command", "Which libraries' 'convolution' is cross-correlation, which true convolution."),
    "maps": ("kernelscope.cli.maps", "command", "Feature maps of every channel for an image, and across epochs."),
    "patches": ("kernelscope.cli.patches", "command", "Top-k dataset patches per channel, cropped by the receptive field."),
    "rf": ("kernelscope.cli.rf", "command", "Theoretical and effective receptive fields, and a locality check."),
    "dissect": ("kernelscope.cli.dissect", "command", "Network Dissection: channels that detect eyes, mouths or your concepts."),
    "shift": ("kernelscope.cli.shift", "command", "Which channels go quiet or fire more on out-of-distribution images."),
    "kernels": ("kernelscope.cli.kernels", "kernels_group", "The classical filter bank: list kernels, show one as numbers and image."),
    "filter": ("kernelscope.cli.filter", "filter_command", "Filter an image with classical kernels: each kernel beside its feature map."),
    "images": ("kernelscope.cli.images", "images_command", "List the real sample images bundled with the installed packages."),
    "parts": ("kernelscope.cli.parts", "command", "Part detectors by occlusion: channels that respond to eyes, nose, mouth."),
    "models": ("kernelscope.cli.models", "models_command", "The pretrained networks installed packages ship, and the architectures --arch accepts."),
    "correlation": ("kernelscope.cli.correlation", "command", "Does a channel measure correlation? Linear templates, raw vs normalised, tuning."),
    "atlas": ("kernelscope.cli.atlas", "atlas_command", "How close a layer's kernels are to classical filters, against null controls."),
    "replicate": ("kernelscope.cli.replicate", "replicate_command", "Train a recipe over N seeds: every headline number with its 95% interval over seeds."),
    "visualize": ("kernelscope.cli.visualize", "command", "Images that excite each channel, beside its top patches and their projections."),
    "serve": ("kernelscope.cli.serve", "serve_command", "The interactive explorer: the operation explained cell by cell, and runs, in a local web page."),
}


class LibraryError(click.ClickException):
    """A library error shown as ``Error: message`` with exit status 2."""

    exit_code = 2


class InternalError(click.ClickException):
    """An unexpected exception (a bug): one ``Error: internal error: ...`` line, exit status 1."""

    exit_code = 1


# errno values of the path and device failures a user causes; any other OSError is internal
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EISDIR,
                errno.ENOTDIR, errno.ENOENT, errno.ENAMETOOLONG, errno.EFBIG, errno.EPIPE,
                errno.ELOOP}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _stdout_failed(error: OSError) -> bool:
    """Whether ``error`` came from writing standard output (a closed pipe, a full device).

    Python drops the unwritten buffer when a write fails, so the stream cannot be
    asked afterwards. Instead: a frame of the traceback was writing a stream on
    standard output's file descriptor (click's ``echo`` holds it as ``file``); or,
    for a ``print`` (no such frame), the error names no file and fits what standard
    output is: a closed pipe (EPIPE on a pipe or socket), or no space (``/dev/full``,
    or a file on a file system with no free block).
    """
    if error.filename is not None:
        return False
    try:
        stdout_fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # click's test runner: no file descriptor
        return False
    tb = error.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if value is sys.stdout:
                return True
            if isinstance(value, io.IOBase):
                try:
                    if value.fileno() == stdout_fd:
                        return True
                except (OSError, ValueError):
                    continue
        tb = tb.tb_next
    try:
        mode = os.fstat(stdout_fd)
        if error.errno == errno.EPIPE:
            return stat.S_ISFIFO(mode.st_mode) or stat.S_ISSOCK(mode.st_mode)
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            if stat.S_ISCHR(mode.st_mode):
                return (os.major(mode.st_rdev), os.minor(mode.st_rdev)) == (1, 7)  # /dev/full
            return stat.S_ISREG(mode.st_mode) and os.fstatvfs(stdout_fd).f_bavail == 0
    except OSError:
        pass
    return False


def _silence_stdout() -> None:
    """Point the process's standard output at /dev/null so the exit flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # click's test runner: no file descriptor
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def _stdout_message(error: OSError) -> str:
    reason = error.strerror or _first_line(error) or type(error).__name__
    return f"cannot write to standard output: {reason}"


def _os_message(error: OSError) -> str:
    """One line for an OSError a user caused, naming the path and what to do."""
    path = "" if error.filename is None else f" {str(error.filename)!r}"
    if error.filename2 is not None:
        path += f" -> {str(error.filename2)!r}"
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing{path}" if path else ""
        return f"no space left on device{where}; free some space or write elsewhere"
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied:{path or ' ' + _first_line(error)}; choose a path you may use "
                "or change its permissions")
    if code == errno.EROFS:
        return f"read-only file system:{path}; write elsewhere"
    reason = (error.strerror or _first_line(error) or type(error).__name__).rstrip(".")
    return f"{reason[:1].lower()}{reason[1:]}:{path}" if path else reason


def user_error_message(error: BaseException) -> str | None:
    """One line for an exception a user caused outside the library, else ``None`` (a bug).

    Examples
    --------
    >>> user_error_message(PermissionError(13, "Permission denied", "/root/report.html"))
    "permission denied: '/root/report.html'; choose a path you may use or change its permissions"
    >>> user_error_message(OSError(28, "No space left on device"))
    'no space left on device; free some space or write elsewhere'
    >>> user_error_message(RuntimeError("a bug")) is None
    True
    """
    if isinstance(error, KernelscopeError):
        return str(error)
    if isinstance(error, zipfile.BadZipFile):
        return f"a file is not a valid .npz (zip) archive or is truncated ({_first_line(error)})"
    if isinstance(error, EOFError):
        return f"a file ended early: it is empty or truncated ({_first_line(error) or 'EOFError'})"
    kind = type(error)
    if kind.__name__ == "DecompressionBombError" and kind.__module__.startswith("PIL"):
        return f"image too large to open safely: {_first_line(error)}"
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        return _os_message(error)
    return None


def _debug_wanted(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("KERNELSCOPE_DEBUG", "") not in ("", "0")


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        module = importlib.import_module(module_name)
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as error:
            if _debug_wanted(ctx):
                traceback.print_exc(file=sys.stderr)
            if isinstance(error, OSError) and _stdout_failed(error):
                _silence_stdout()
                raise LibraryError(_stdout_message(error)) from None
            message = user_error_message(error)
            if message is not None:
                raise LibraryError(message) from None
            detail = type(error).__name__ + (f": {_first_line(error)}" if _first_line(error) else "")
            raise InternalError(f"internal error: {detail} (run with --debug for the traceback)"
                                ) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kernelscope")
@click.option("--debug", is_flag=True,
              help="On an error, also print the traceback (or set KERNELSCOPE_DEBUG=1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr (results and errors still print).")
@click.option("--verbose", "-v", is_flag=True,
              help="Progress bars even when stderr is not a terminal (default there: one line per finished step).")
def cli(debug: bool, quiet: bool, verbose: bool) -> None:
    """See and measure what the convolution kernels of a CNN learn."""
    if quiet and verbose:
        raise click.UsageError("give --quiet or --verbose, not both")
    if quiet or verbose:
        os.environ["KERNELSCOPE_PROGRESS"] = "0" if quiet else "bar"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kernelscope`` console script.

    Output still buffered when the command ends is flushed here, so that a full or
    closed standard output gives the one-line error too, not Python's exit-time
    traceback.
    """
    code: Any = 0
    try:
        cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="kernelscope")
    except SystemExit as done:
        code = done.code
    try:
        sys.stdout.flush()
    except OSError as error:
        _silence_stdout()
        click.echo(f"Error: {_stdout_message(error)}", err=True)
        code = 2
    sys.exit(code)
