"""The rich Console podnet's commands print tables and reports through.

rich sizes its output to the terminal, and to 80 columns when stdout is not one: `podnet lab status >
file` or `| grep` would get every wide table folded mid-cell and long lines broken in two. Off a
terminal (and unless COLUMNS says otherwise) this console is as wide as each line needs: text is not
wrapped and tables keep their natural width. Only what fills the whole width by design (a rule, a
panel) is drawn at RULE_WIDTH there.

Emoji codes are off: a MAC address such as aa:ab:cd:... contains ":ab:" and ":cd:".
"""

from __future__ import annotations

import os
import sys
from typing import IO

from rich.console import Console
from rich.rule import Rule

RULE_WIDTH = 80
UNWRAPPED = 100_000  # "as wide as it needs": rich renders a table at its natural width when that is less


def console(file: IO[str] | None = None) -> Console:
    out = file or sys.stdout
    on_terminal = out.isatty() if hasattr(out, "isatty") else False
    if on_terminal or os.environ.get("COLUMNS"):
        return Console(file=file, emoji=False)
    return Console(file=file, emoji=False, width=UNWRAPPED, soft_wrap=True)


def full_width(c: Console) -> int:
    """The width of something that fills the line (rule, panel): the terminal's, or RULE_WIDTH."""
    return c.width if c.width != UNWRAPPED else RULE_WIDTH


def rule(c: Console, title: str) -> None:
    c.print(Rule(title), width=full_width(c))
