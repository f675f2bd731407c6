"""The one library exception.

Every error that a user can cause (bad shapes, unknown names, unreadable files)
is raised as :class:`KernelscopeError`, with a message that names the parameter,
the value received and what is allowed. The CLI turns it into a one-line
``Error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["KernelscopeError", "suggest"]


class KernelscopeError(ValueError):
    """A user-facing error: what was wrong and how to fix it, in one line."""


def suggest(name: str, valid: Iterable[str], *, what: str = "name") -> str:
    """Return a one-line message for an unknown ``name`` with the closest valid names.

    Parameters
    ----------
    name : str
        The name the user gave.
    valid : iterable of str
        All valid names.
    what : str
        What kind of name it is, for the message ("kernel", "dataset", "layer", ...).

    Examples
    --------
    >>> suggest("sobelx", ["sobel_x", "sobel_y", "laplacian"], what="kernel")
    "unknown kernel 'sobelx'; did you mean 'sobel_x', 'sobel_y'? (valid: laplacian, sobel_x, sobel_y)"
    """
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(valid) if len(valid) <= 40 else ", ".join(valid[:40]) + ", ..."
    return f"unknown {what} {name!r}{hint} (valid: {listing})"
