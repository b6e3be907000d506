"""The loader builds its objects with the cyclic garbage collector paused, and always turns it back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.api import loader


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_paused_gc_pauses_and_restores() -> None:
    gc.enable()
    with loader.paused_gc():
        assert not gc.isenabled()
        with loader.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block leaves it to the outer one
    assert gc.isenabled()


def test_paused_gc_restores_after_an_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), loader.paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_paused_gc_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    with loader.paused_gc():
        pass
    assert not gc.isenabled()


def test_load_builds_objects_with_the_collector_paused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[bool] = []
    real = loader._load_doc

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(gc.isenabled())
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "_load_doc", spy)
    gc.enable()
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: Nope\n"
    loaded = loader.load(text, check=False)
    assert seen == [False, False] and gc.isenabled()
    assert [p.field for p in loaded.problems] == ["apiVersion", "kind"]
    seen.clear()
    (tmp_path / "a.yaml").write_text(text)
    assert [o.name for o in loader.load_paths([str(tmp_path)], check=False).objects] == ["a"]
    assert seen == [False, False] and gc.isenabled()
