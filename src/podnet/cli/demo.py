"""`podnet demo`: the narrated walkthrough on a lab."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
