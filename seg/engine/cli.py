"""How every tool ends on an expected failure: one line on stderr, the same exit codes.

    2  the command or its config is wrong (ConfigError, like argparse's own usage errors)
    1  it was right but could not be done (missing or unreadable files, a bad checkpoint,
       a diverged run, a device error)

``SEG_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import os
import sys

from seg.config import ConfigError

USAGE_ERROR = 2
RUNTIME_ERROR = 1
# What a user can cause and fix; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ConfigError, OSError, ValueError, RuntimeError)


def fail(error: BaseException) -> int:
    """Print ``error: ...`` on one line and return the exit code for it."""
    if os.environ.get("SEG_DEBUG"):
        import traceback

        traceback.print_exception(error)
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return exit_code(error)


def exit_code(error: BaseException) -> int:
    """The error's own ``exit_code`` if it carries one (another process's, passed on), else
    `USAGE_ERROR` for a usage or config error and `RUNTIME_ERROR` for the rest."""
    if isinstance(getattr(error, "exit_code", None), int):
        return error.exit_code
    return USAGE_ERROR if isinstance(error, ConfigError) else RUNTIME_ERROR
