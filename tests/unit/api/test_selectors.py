"""kubectl -l selectors."""

from __future__ import annotations

import pytest

from podnet.api.selectors import parse_selector
from podnet.errors import ValidationError

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("app=web", True), ("app==web", True), ("app=db", False), ("app!=db", True), ("app!=web", False),
        ("app", True), ("!app", False), ("missing", False), ("!missing", True),
        ("env in (prod, staging)", True), ("env notin (prod)", False), ("app=web,tier=front", True),
        ("app=web,tier in (back)", False), ("", True), ("missing!=x", True),
    ],
)
def test_selector(text: str, match: bool) -> None:
    assert parse_selector(text)(LABELS) is match


@pytest.mark.parametrize("text", ["a=b=c", "in (x)", "a in x", "=b"])
def test_bad_selector_names_the_option(text: str) -> None:
    with pytest.raises(ValidationError) as ei:
        parse_selector(text)
    assert ei.value.problems[0].field == "--selector"
