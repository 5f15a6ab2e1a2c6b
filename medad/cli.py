"""The ``medad`` command line: a thin layer that parses arguments and calls the library.

Every user error is a :class:`medad.errors.MedadError`; :func:`main` prints its message on one line and exits
with code 2, never with a traceback.
"""

from __future__ import annotations

import sys

import typer

from medad.errors import MedadError

app = typer.Typer(
    name="medad",
    help="Zero-shot lesion and anomaly detection for medical images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Inspect and check datasets in their public layouts.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


def fail(message: str) -> None:
    """Print a one-line user error and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except MedadError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is kept on disk and a re-run resumes from it", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
