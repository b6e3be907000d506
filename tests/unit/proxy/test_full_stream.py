"""render.FullStream: the full sync's input made while iptables-restore reads it. It must load exactly what
render() says (every chain with the same rules in the same order) and declare every chain before a rule
names it, since iptables-restore checks a jump's target when it reads the line."""

from __future__ import annotations

import re

from hypothesis import given, settings

from podnet.proxy.iptables.names import JUMPS
from podnet.proxy.iptables.render import FullStream, RenderCache, render
from podnet.proxy.iptables.ruleset import CACHE_TRICK_MIN_CHAINS, full_text, parse, streamed_parts
from podnet.proxy.tracker import desired_state_from_objects
from tests.unit.proxy.test_partial_sync_property import SETTINGS, cluster, objects

_TARGET = re.compile(r" -[jg] (\S+)")


def _streamed(state, **kw) -> str:  # type: ignore[no-untyped-def]
    s = FullStream(state, SETTINGS, cache=kw.pop("cache", None))
    return "".join(streamed_parts(s.first, s.lines(), s.blocks, **kw))


@settings(max_examples=120, deadline=None)
@given(spec=cluster)
def test_the_stream_loads_what_render_says_declaring_each_chain_before_its_use(spec: dict) -> None:
    state = desired_state_from_objects(objects(spec), node_name="test-node")
    want = render(state, SETTINGS, full=True, cleanup_stale=False)
    text = _streamed(state)
    assert parse(text).chains == parse(full_text(want.tables)).chains
    declared: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            declared.setdefault(table, set()).add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            chain = line.split(" ", 2)[1]
            assert chain in declared.get(table, set()), line
            m = _TARGET.search(line)
            if m and m.group(1).startswith("KUBE-"):
                assert m.group(1) in declared[table], line


def test_stale_chains_and_missing_jumps_come_after_every_rule_and_the_result_is_render_s() -> None:
    spec = {"a": {"type": "NodePort", "etp": "Cluster", "itp": "Cluster", "affinity": False, "ranges": False,
                  "external_ip": False, "endpoints": [(1, "other", (None, None, None))]}}
    state = desired_state_from_objects(objects(spec), node_name="test-node")
    existing = {"nat": {"KUBE-SVC-GONEGONEGONEGONE", "KUBE-SERVICES", "DOCKER"}, "filter": set()}
    missing = [j for j in JUMPS if j.chain in ("PREROUTING", "INPUT")]
    s = FullStream(state, SETTINGS, cache=RenderCache())
    lines = "".join(streamed_parts(s.first, s.lines(), s.blocks, existing=existing, missing_jumps=missing)).splitlines()
    nat = lines[lines.index("*nat"):lines.index("COMMIT")]
    last_rule = max(i for i, line in enumerate(nat) if line.startswith("-A "))
    assert nat.index(":KUBE-SVC-GONEGONEGONEGONE - [0:0]") > last_rule
    assert nat.index("-X KUBE-SVC-GONEGONEGONEGONE") > last_rule and "-X DOCKER" not in nat
    assert nat[-1].startswith("-I PREROUTING 1 ")
    assert lines.index("*filter") > lines.index("*nat") and any(x.startswith("-I INPUT 1 ") for x in lines)
    assert "-S" not in lines  # a small render into a small table: no whole-cache fetch
    assert s.ruleset().chains == render(state, SETTINGS, full=True, cleanup_stale=False).ruleset().chains


def test_a_large_render_or_a_large_table_asks_for_the_whole_cache_first() -> None:
    state = desired_state_from_objects(objects({}), node_name="test-node")
    many = {"nat": {f"KUBE-SEP-{i:016d}" for i in range(CACHE_TRICK_MIN_CHAINS)}}
    assert _streamed(state, existing=many).splitlines()[:2] == ["*nat", "-S"]
    assert _streamed(state, first_is_large=True).splitlines()[:2] == ["*nat", "-S"]
    assert "-S" not in _streamed(state, existing=many, cache_trick=False).splitlines()


def test_a_stream_read_in_part_finishes_from_where_it_stopped() -> None:
    """iptables-restore may stop reading early (a refused line); the model is then taken from the same
    render, which must go on from where the feed stopped and not add the services read so far twice."""
    spec = {k: {"type": "ClusterIP", "etp": "Cluster", "itp": "Cluster", "affinity": False, "ranges": False,
                "external_ip": False, "endpoints": [(1, "other", (None, None, None))]} for k in "abcd"}
    state = desired_state_from_objects(objects(spec), node_name="test-node")
    s = FullStream(state, SETTINGS)
    lines = s.lines()
    for _ in range(12):
        next(lines)
    assert s.ruleset().chains == render(state, SETTINGS, full=True, cleanup_stale=False).ruleset().chains
