"""podnet's exception hierarchy. Every error names the input that was wrong.

Exit codes of the CLI: 0 ok, 1 invalid input or usage, 2 store unreachable (see cli/main.py).
"""

from __future__ import annotations


class PodnetError(Exception):
    """Base of podnet's own errors. exit_code is what the CLI exits with.

    The one root: every module raises a subclass of this (CommandError in net/exec.py, ...). The CNI
    plugins' CniError (cni/spec.py) stands apart on purpose: it is the CNI spec's error object (code, msg,
    details, printed as JSON on stdout and mapped to the exit code by cni/skel.py), not a podnet failure.
    """

    exit_code = 1


class Problem:
    """One validation problem: `Kind/namespace/name: field.path: value: reason`.

    A frozen value (equality, hash and repr over its four fields) written out by hand rather than with
    dataclasses: net/exec.py imports this module and the CNI plugins load that once per pod, where
    dataclasses (with inspect and re) would add ~15 ms.
    """

    __slots__ = ("field", "obj", "reason", "value")
    __match_args__ = ("field", "value", "reason", "obj")

    field: str
    value: object
    reason: str
    obj: str  # "Service/default/web", "" when not about an object

    def __init__(self, field: str, value: object, reason: str, obj: str = "") -> None:
        object.__setattr__(self, "field", field)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "obj", obj)

    def _key(self) -> tuple[str, object, str, str]:
        return (self.field, self.value, self.reason, self.obj)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Problem) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Problem is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: Problem is frozen")

    def __getstate__(self) -> tuple[str, object, str, str]:
        return self._key()

    def __setstate__(self, state: tuple[str, object, str, str]) -> None:
        for name, v in zip(("field", "value", "reason", "obj"), state, strict=True):
            object.__setattr__(self, name, v)

    def __repr__(self) -> str:
        return (f"Problem(field={self.field!r}, value={self.value!r}, reason={self.reason!r}, "
                f"obj={self.obj!r})")

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
