"""podnet's exception hierarchy. Every error names the input that was wrong.

Exit codes of the CLI: 0 ok, 1 invalid input or usage, 2 store unreachable (see cli/main.py).
"""

from __future__ import annotations

from dataclasses import dataclass


class PodnetError(Exception):
    """Base of podnet's own errors. exit_code is what the CLI exits with."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem: `Kind/namespace/name: field.path: value: reason`."""

    field: str
    value: object
    reason: str
    obj: str = ""  # "Service/default/web", "" when not about an object

    def __str__(self) -> str:
        head = f"{self.obj}: " if self.obj else ""
        return f"{head}{self.field}: {self.value!r}: {self.reason}" if self.value is not None else (
            f"{head}{self.field}: {self.reason}"
        )


class ValidationError(PodnetError):
    """Input failed validation. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NotFound(PodnetError):
    pass


class AlreadyExists(PodnetError):
    """A create named an object that exists (the API server's 409 AlreadyExists)."""


class Conflict(PodnetError):
    """A write carried a stale resourceVersion (the API server's 409 Conflict)."""


class AllocationError(PodnetError):
    """A ClusterIP/NodePort/subnet could not be allocated (taken, out of range, exhausted)."""
