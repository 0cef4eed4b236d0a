"""The `udit` command: the app, the version flag, and the error translation shared by every command."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from .._version import __version__
from ..errors import UditError
from ..progress import stderr_console

app = typer.Typer(
    name="udit",
    help="Ultra-high-resolution video (1080p-4K) from pre-trained video diffusion transformers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`UditError` into one line on stderr and its exit code; set UDIT_DEBUG=1 for the traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UditError as exc:
            if os.environ.get("UDIT_DEBUG"):
                raise
            stderr_console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            stderr_console.print("[yellow]Interrupted[/]; no output was written.")
            raise typer.Exit(code=130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"udit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print udit's version and exit.")] = False,
) -> None:
    """udit: FreeSwim and Relay LoRA for Wan2.1, one engine over diffusers."""


from . import generate as _generate  # noqa: E402,F401  (registers the command)
from . import presets as _presets  # noqa: E402,F401
from . import profile as _profile  # noqa: E402,F401
from . import relay as _relay  # noqa: E402,F401


def main() -> None:
    app()
