"""The ``loom`` program installed with the package (``loom/bin/loom``).

The package runs it where Loom needs a process of its own: the sandboxed measure worker of
:meth:`loom.Model.tune`, :func:`loom.experiment.run`, and the ``loom`` command itself
(:func:`main`, the console script pip installs).
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from . import errors

_PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "loom")


def loom_binary() -> str:
    """The path of the ``loom`` program: the one installed in the package, else ``$LOOM_BINARY``
    (a documented override for running the package from a source tree). Raises
    :class:`loom.NotFoundError` when neither exists."""
    if os.access(_PACKAGED, os.X_OK):
        return _PACKAGED
    override = os.environ.get("LOOM_BINARY", "")
    if override and os.access(override, os.X_OK):
        return override
    raise errors.NotFoundError(
        f"the loom program is not installed at {_PACKAGED} (reinstall the package, or set "
        "LOOM_BINARY to a built loom binary)"
    )


def main(argv: Optional[List[str]] = None) -> None:
    """The ``loom`` console script: runs the packaged program with this process's arguments."""
    args = sys.argv[1:] if argv is None else argv
    try:
        binary = loom_binary()
    except errors.LoomError as e:
        print(f"loom: error: {e.message}", file=sys.stderr)
        sys.exit(1)
    os.execv(binary, [binary, *args])
