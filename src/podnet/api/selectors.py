"""Label selectors as kubectl's -l takes them: `a=b,c!=d,e,!f,g in (x,y),h notin (z)`."""

from __future__ import annotations

import re
from collections.abc import Callable

from podnet.errors import Problem, ValidationError

Matcher = Callable[[dict[str, str]], bool]

_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


# One requirement each; a function apiece binds its key and values (mypy cannot type a lambda's defaults).


def _in(k: str, vs: set[str]) -> Matcher:
    return lambda labels: labels.get(k) in vs


def _not_in(k: str, vs: set[str]) -> Matcher:
    return lambda labels: labels.get(k) not in vs


def _equal(k: str, v: str) -> Matcher:
    return lambda labels: labels.get(k) == v


def _not_equal(k: str, v: str) -> Matcher:
    return lambda labels: labels.get(k) != v


def _present(k: str) -> Matcher:
    return lambda labels: k in labels


def _absent(k: str) -> Matcher:
    return lambda labels: k not in labels


def parse_selector(text: str, field: str = "--selector") -> Matcher:
    """A predicate over labels. Raises ValidationError naming the bad requirement."""
    reqs: list[Matcher] = []
    for part in _split(text):
        if not part.strip():
            continue
        if m := _SET.match(part):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append(_in(key, values) if op == "in" else _not_in(key, values))
        elif m := _EQ.match(part):
            key, op, value = m.groups()
            reqs.append(_not_equal(key, value) if op == "!=" else _equal(key, value))
        elif m := _EXISTS.match(part):
            neg, key = m.groups()
            reqs.append(_absent(key) if neg else _present(key))
        else:
            raise ValidationError([Problem(field=field, value=part.strip(), reason="not a label selector "
                                           "requirement (use k=v, k!=v, k, !k, k in (a,b), k notin (a,b))")])
    return lambda labels: all(r(labels) for r in reqs)
