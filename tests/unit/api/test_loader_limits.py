"""Resource limits on input: alias bombs and oversized objects are refused with a clear problem, before
anything walks them, whichever PyYAML loader builds the objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from podnet.api import loader
from podnet.api.loader import MAX_NODES, MAX_OBJECT_BYTES, load


def bomb(levels: int = 9, width: int = 9, where: str = "spec:\n  ports: [{port: 80}]\n  junk:\n") -> str:
    """Billion laughs inside an unknown field of a Service: width**levels nodes once expanded."""
    lines = ["apiVersion: v1", "kind: Service", "metadata: {name: bomb}", where.rstrip("\n")]
    lines.append(f"    l0: &l0 [{', '.join(['lol'] * width)}]")
    for i in range(1, levels):
        lines.append(f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def reasons(text: str) -> list[str]:
    return [str(p) for p in load(text).problems]


def test_billion_laughs_in_an_unknown_field_is_refused() -> None:
    (msg,) = reasons(bomb())
    assert "excessive aliasing" in msg and str(MAX_NODES) in msg


def test_merge_key_bomb_is_refused() -> None:
    lines = ["apiVersion: v1", "kind: Service", "metadata: {name: m}", "spec:", "  ports: [{port: 80}]", "x:",
             "  m0: &m0 {a: 1, b: 2}"]
    for i in range(1, 40):
        lines.append(f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}")
    (msg,) = reasons("\n".join(lines) + "\n")
    assert "excessive aliasing" in msg


def test_recursive_alias_is_refused() -> None:
    (msg,) = reasons("apiVersion: v1\nkind: Service\nmetadata: {name: r}\nspec: &s {ports: [{port: 1}], x: *s}\n")
    assert "recursive" in msg


def test_small_aliases_still_load() -> None:
    text = ("apiVersion: v1\nkind: Service\nmetadata: {name: ok, labels: &l {app: web}}\n"
            "spec: {selector: *l, ports: [{port: 80}]}\n")
    (svc,) = load(text).raise_for_problems()
    assert svc.spec.selector == {"app": "web"}


def test_the_cap_is_per_document() -> None:
    one = bomb(levels=4, width=30)  # 30**4 = 810000 nodes: under the cap
    assert not [p for p in load(one).problems if "aliasing" in str(p)]
    assert not [p for p in load(one + "---\n" + one).problems if "aliasing" in str(p)]


@pytest.mark.parametrize("name", ["SafeLoader", "CSafeLoader"])
def test_the_cap_holds_with_either_loader(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The cap is computed from parser events, so switching the loader to CSafeLoader (C composer) keeps it."""
    if not hasattr(yaml, name):
        pytest.skip("PyYAML built without libyaml")
    monkeypatch.setattr(loader, "_YAML_LOADER", getattr(yaml, name))
    (msg,) = reasons(bomb())
    assert "excessive aliasing" in msg
    test_small_aliases_still_load()


def test_object_over_the_request_limit_is_refused_and_named() -> None:
    big = "x" * (MAX_OBJECT_BYTES + 10)
    (msg,) = reasons(f'{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "huge", '
                     f'"annotations": {{"a": "{big}"}}}}, "spec": {{"ports": [{{"port": 80}}]}}}}')
    assert msg.startswith("Service/default/huge: (document): object is") and "3 MiB" in msg


def test_a_list_is_held_to_the_limit_item_by_item() -> None:
    """kubectl sends a List's items one request each: a List over 3 MiB of small items loads (big manifests
    are such Lists), and an item over the limit is named on its own."""
    item = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "x" * 100_000}}
    items = [{**item, "metadata": {"name": f"c{i}"}} for i in range(40)]  # ~4 MB in all
    big = {**item, "metadata": {"name": "huge"}, "data": {"k": "x" * (MAX_OBJECT_BYTES + 10)}}
    loaded = load(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    assert len(loaded.objects) == 40 and not loaded.problems
    (msg,) = reasons(json.dumps({"apiVersion": "v1", "kind": "List", "items": [*items[:2], big]}))
    assert msg.startswith("ConfigMap/default/huge: (document): object is") and "3 MiB" in msg


def test_apply_of_a_bomb_exits_non_zero_with_the_message_and_stores_nothing(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(bomb())
    r = subprocess.run([sys.executable, "-m", "podnet.cli.main", "--store", f"sqlite://{tmp_path}/s.db", "apply",
                        "-f", str(tmp_path / "bomb.yaml")], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "excessive aliasing" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "s.db").exists() or not _keys(tmp_path / "s.db")


def test_apply_of_an_object_over_the_store_limit_names_the_key(tmp_path: Path) -> None:
    """2 MiB passes the API's 3 MiB request limit but not etcd's 1.5 MiB value limit: refused by the store."""
    import json

    selector = {f"k{i}": "v" * 60 for i in range(30000)}  # ~2 MiB, every entry a valid label
    (tmp_path / "big.json").write_text(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big"},
                                                   "spec": {"selector": selector, "ports": [{"port": 80}]}}))
    r = subprocess.run([sys.executable, "-m", "podnet.cli.main", "--store", f"sqlite://{tmp_path}/s.db", "apply",
                        "-f", str(tmp_path / "big.json")], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "/podnet/resources/services/default/big" in r.stderr and "1.5 MiB" in r.stderr
    assert not _keys(tmp_path / "s.db")


def _keys(db: Path) -> list[str]:
    from podnet.store.sqlite import SqliteStore

    with SqliteStore(f"sqlite://{db}") as s:
        return [kv.key for kv in s.list("/").items]


def test_module_constants_match_the_upstream_limits() -> None:
    assert loader.MAX_OBJECT_BYTES == 3 * 1024 * 1024


def test_quick_size_check_says_yes_only_far_below_the_limit() -> None:
    small = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "x" * 1000}}
    assert loader._surely_fits(small)
    assert not loader._surely_fits({"data": {"k": "x" * (MAX_OBJECT_BYTES // 2)}})  # under, but measured exactly
    # what orjson cannot encode gets no quick answer, and the exact measure decides as before
    deep: list = []
    for _ in range(300):  # orjson stops at 255 levels
        deep = [deep]
    for odd in ({"n": 2**70}, {"s": "\ud800"}, {"d": deep}):
        assert not loader._surely_fits(odd)
    huge_int = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "generation": 2**70}}
    assert load(json.dumps(huge_int)).objects[0].metadata.generation == 2**70


def test_values_that_orjson_writes_shorter_are_still_measured_as_json_writes_them() -> None:
    """-Infinity is 9 bytes in the json module's encoding and 4 (null) in orjson's: an object over the limit
    by the json module's measure must not pass the quick check."""
    n = MAX_OBJECT_BYTES // len("-Infinity,") + 10
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inf"}, "data": {}, "x": [float("-inf")] * n}
    assert not loader._surely_fits(doc)
    out = loader.Loaded()
    assert not loader._fits(doc, "<input>", out)
    assert "over the request limit" in out.problems[0].reason


def _loads_with_an_alias(text: str, loader_cls: type) -> bool:
    """Does the text load, and did an alias go into it? (A text that fails to load cannot be a bomb.)"""
    try:
        list(yaml.compose_all(text, Loader=loader_cls))
        return any(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=loader_cls))
    except yaml.YAMLError:
        return False


_LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="*&ab1_- :,[]{}\"'\n\t?!#|>.\ufeff", max_size=30))
@example("*a")
@example("\ufeff*a")
@example("- *a")
@example("? *a\n: *b")
@example("[*a,*b]")
@example("{a: *b,c:*d}")
@example("]:*1")
@example("[&a b, {?*a : c}]")
def test_every_alias_of_a_loadable_text_is_found_by_the_quick_check(text: str) -> None:
    for loader_cls in _LOADERS:
        if _loads_with_an_alias(text, loader_cls):
            assert loader._may_hold_alias(text), (loader_cls.__name__, text)


def test_flow_aliases_without_spaces_are_counted() -> None:
    text = bomb().replace(", ", ",")
    assert "[*l0,*l0," in text
    assert any("excessive aliasing" in r for r in reasons(text))


def test_block_sequence_aliases_are_counted() -> None:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: c}", "x:", "  a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, 9):
        lines.append(f"  l{i}: &l{i}")
        lines += [f"  - *{'a' if i == 1 else f'l{i - 1}'}"] * 9
    assert any("excessive aliasing" in r for r in reasons("\n".join(lines) + "\n"))


def test_text_whose_stars_are_no_aliases_is_not_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("scanned")

    text = ('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, annotations: {a: "*.example.com", b: \'*\'}}\n'
            'data: {glob: "x*y", rule: "*"}  # * in a comment\n')
    monkeypatch.setattr(loader.yaml, "parse", no_scan)
    loaded = load(text)
    assert not loaded.problems and loaded.objects[0].data == {"glob": "x*y", "rule": "*"}
