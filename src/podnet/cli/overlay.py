"""`podnet overlay ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="overlay commands", no_args_is_help=True)
