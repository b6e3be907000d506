"""kubectl-like commands: apply, get, describe, delete."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
