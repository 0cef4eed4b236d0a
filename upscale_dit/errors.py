"""One exception family for everything udit refuses or cannot do.

The CLI maps these to one-line messages and fixed exit codes (see ``upscale_dit.cli.app``):
0 success, 1 failure while running, 2 invalid usage / config / preset, 3 refused by the memory plan.
"""

from __future__ import annotations


class UditError(Exception):
    """Base class: a message a user can act on; the CLI prints it without a traceback."""

    exit_code = 1


class ConfigError(UditError):
    """A preset, flag or ``--set`` value is invalid; the message names the key and the fix."""

    exit_code = 2


class ModelNotFoundError(UditError):
    """Weights for the requested model are not on this machine."""

    exit_code = 1


class OutputError(UditError):
    """The output path exists (without ``--overwrite``) or cannot be written."""

    exit_code = 2


class InputVideoError(UditError):
    """An input video cannot be read or does not fit the request."""

    exit_code = 2


class OutOfMemoryError(UditError):
    """The accelerator ran out of memory; the message names the knobs that help."""

    exit_code = 3
