"""Planning restore input: what a full and a partial sync send to iptables-restore (pure)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.proxy.iptables.names import JUMPS, Jump
from podnet.proxy.iptables.restore import _context, _parse_nft_chains
from podnet.proxy.iptables.ruleset import (
    CACHE_TRICK_MIN_CHAINS,
    Ruleset,
    _jump_lines,
    apply_changes,
    blocks_from_text,
    full_text,
    parse,
    plan_partial,
)

BASE = """*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-A1 - [0:0]
-A KUBE-SERVICES -m comment --comment "ns/a:p cluster IP" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j KUBE-SVC-AAA
-A KUBE-SVC-AAA -j KUBE-SEP-A1
-A KUBE-SEP-A1 -m tcp -p tcp -j DNAT --to-destination 10.0.0.1:80
-A KUBE-SERVICES -m comment --comment "last" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"""


def test_parse_keeps_rule_text_and_order() -> None:
    rs = parse(BASE)
    assert list(rs.chains) == ["filter", "nat"]
    assert rs.chains["nat"]["KUBE-SERVICES"] == [
        '-A KUBE-SERVICES -m comment --comment "ns/a:p cluster IP" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j KUBE-SVC-AAA',
        '-A KUBE-SERVICES -m comment --comment "last" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    ]
    assert rs.chains["filter"]["KUBE-SERVICES"] == []
    assert parse("*nat\n:KUBE-SEP-X - [0:0]\n-X KUBE-SEP-X\nCOMMIT\n").deleted == {"nat": ["KUBE-SEP-X"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("*nat\n-A KUBE-NOPE -j ACCEPT\nCOMMIT\n", "not declared"),
        ("*nat\n-D KUBE-SERVICES -j ACCEPT\nCOMMIT\n", "unsupported command '-D'"),
        ("-X KUBE-SEP-X\n", r"outside a \*table"),
        ("*nat\ngarbage\n", "cannot parse"),
    ],
)
def test_parse_rejects_what_the_renderer_never_writes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_full_plan_rewrites_owned_chains_and_deletes_only_stale_service_chains() -> None:
    existing = {"nat": {"KUBE-SERVICES", "KUBE-SVC-OLD", "KUBE-SEP-OLD", "DOCKER", "KUBE-SEP-A1", "PREROUTING"}}
    lines = full_text(blocks_from_text(BASE), existing=existing).splitlines()
    assert ":KUBE-SVC-OLD - [0:0]" in lines and "-X KUBE-SVC-OLD" in lines and "-X KUBE-SEP-OLD" in lines
    # other programs' chains are never named, so never flushed
    assert not any("DOCKER" in line or "PREROUTING" in line for line in lines)
    # deletes come after every rule (references are gone by then)
    nat = lines[lines.index("*nat"):]
    assert max(i for i, x in enumerate(nat) if x.startswith("-A")) < min(i for i, x in enumerate(nat) if x.startswith("-X"))
    assert parse(BASE).chains["nat"]["KUBE-SVC-AAA"] == ["-A KUBE-SVC-AAA -j KUBE-SEP-A1"]
    assert "-S" not in lines  # small input: no cache trick


def test_full_plan_uses_the_cache_trick_for_large_tables() -> None:
    chains = "".join(f":KUBE-SEP-{i:05d} - [0:0]\n" for i in range(CACHE_TRICK_MIN_CHAINS))
    lines = full_text(blocks_from_text(f"*nat\n{chains}COMMIT\n")).splitlines()
    assert lines[:2] == ["*nat", "-S"]
    assert "-S" not in full_text(blocks_from_text(f"*nat\n{chains}COMMIT\n"), cache_trick=False).splitlines()


def test_missing_jumps_are_prepended_in_kube_proxy_order() -> None:
    nat_jumps = [j for j in JUMPS if j.table == "nat"]
    text = full_text(blocks_from_text(BASE), missing_jumps=nat_jumps)
    assert '-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in text
    # into a chain a listing showed empty too: never appended, so a rule someone appends meanwhile stays below
    a = Jump("filter", "INPUT", "KUBE-A", None)
    b = Jump("filter", "INPUT", "KUBE-B", None)
    assert _jump_lines([a, b]) == ["-I INPUT 1 -j KUBE-A", "-I INPUT 1 -j KUBE-B"]


def test_is_jump_matches_iptables_save_output() -> None:
    j = next(j for j in JUMPS if j.target == "KUBE-EXTERNAL-SERVICES" and j.chain == "INPUT")
    line = ('-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service '
            'portals" -j KUBE-EXTERNAL-SERVICES')
    assert j.matches(line)
    assert not j.matches(line.replace("--ctstate NEW ", "--ctstate INVALID ").replace("NEW", ""))
    fw = next(j for j in JUMPS if j.target == "KUBE-FIREWALL" and j.chain == "INPUT")
    assert fw.matches("-A INPUT -j KUBE-FIREWALL")
    assert not fw.matches("-A INPUT -m comment --comment x -j KUBE-FIREWALL")


def test_partial_plan_of_unchanged_input_is_empty() -> None:
    applied = parse(BASE).chains
    plan = plan_partial(applied, parse(BASE), parse(BASE))
    assert plan.text == "" and plan.applied == applied


def test_partial_plan_edits_dispatch_chains_and_rewrites_changed_service_chains() -> None:
    applied = parse(BASE).chains
    new = BASE.replace("10.0.0.1:80", "10.0.0.2:80").replace(
        '-A KUBE-SERVICES -m comment --comment "last"',
        '-A KUBE-SERVICES -m comment --comment "ns/b:p cluster IP" -j KUBE-SVC-AAA\n'
        '-A KUBE-SERVICES -m comment --comment "last"',
    )
    plan = plan_partial(applied, parse(BASE), parse(new))
    lines = plan.text.splitlines()
    assert lines == [
        "*nat",
        ":KUBE-SEP-A1 - [0:0]",
        '-I KUBE-SERVICES 1 -m comment --comment "ns/b:p cluster IP" -j KUBE-SVC-AAA',
        "-A KUBE-SEP-A1 -m tcp -p tcp -j DNAT --to-destination 10.0.0.2:80",
        "COMMIT",
    ]
    assert plan.applied["nat"]["KUBE-SERVICES"][0] == '-A KUBE-SERVICES -m comment --comment "ns/b:p cluster IP" -j KUBE-SVC-AAA'
    assert plan.applied["nat"]["KUBE-SERVICES"][-1].endswith("-j KUBE-NODEPORTS")


def test_partial_plan_rewrites_a_dispatch_chain_whose_last_rule_changes() -> None:
    applied = parse(BASE).chains
    plan = plan_partial(applied, parse(BASE), parse(BASE.replace('"last"', '"new last"')))
    assert ":KUBE-SERVICES - [0:0]" in plan.text.splitlines()


def test_partial_plan_deletes_known_chains_only() -> None:
    applied = parse(BASE).chains
    plan = plan_partial(applied, Ruleset(), Ruleset(), ["KUBE-SEP-A1", "KUBE-SEP-NEVER-MADE"])
    assert plan.text.splitlines() == ["*nat", ":KUBE-SEP-A1 - [0:0]", "-X KUBE-SEP-A1", "COMMIT"]
    assert "KUBE-SEP-A1" not in plan.applied["nat"]


def _svc(name: str, ip: str, eps: list[str]) -> tuple[str, list[str]]:
    """(nat dispatch rule, per-service chain lines) of a toy service."""
    rule = f'-A KUBE-SERVICES -m comment --comment "{name}" -d {ip} -j KUBE-SVC-{name.upper()}'
    body = [f":KUBE-SVC-{name.upper()} - [0:0]"] + [f"-A KUBE-SVC-{name.upper()} -j KUBE-SEP-{e}" for e in eps]
    body += [f":KUBE-SEP-{e} - [0:0]" for e in eps] + [f"-A KUBE-SEP-{e} -j DNAT --to-destination {e}" for e in eps]
    return rule, body


def _render(services: dict[str, tuple[str, list[str]]]) -> str:
    decl, rules = [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]"], []
    for name in sorted(services):
        rule, body = _svc(name, *services[name])
        decl += [x for x in body if x.startswith(":")]
        rules += [rule] + [x for x in body if x.startswith("-A")]
    rules.append("-A KUBE-SERVICES -m comment --comment last -j KUBE-NODEPORTS")
    return "*nat\n" + "\n".join(decl + rules) + "\nCOMMIT\n"


def _as_sets(applied: dict[str, dict[str, list[str]]]) -> dict[str, object]:
    nat = applied["nat"]
    return {c: (sorted(r) if c == "KUBE-SERVICES" else r) for c, r in nat.items()}


IPS = st.sampled_from([f"10.0.0.{i}" for i in range(1, 6)])
CLUSTER = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.tuples(st.sampled_from(["10.96.0.1", "10.96.0.2", "10.96.0.3"]), st.lists(IPS, min_size=1, max_size=3, unique=True)),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(before=CLUSTER, after=CLUSTER)
def test_delta_sync_reaches_the_same_model_as_a_full_sync(before: dict, after: dict) -> None:
    """Rendering only the changed services and diffing lands exactly where a full sync would (rule sets)."""
    # endpoint chains are per service in real renders: make names unique per service
    before = {k: (ip, [f"{k}-{e}" for e in eps]) for k, (ip, eps) in before.items()}
    after = {k: (ip, [f"{k}-{e}" for e in eps]) for k, (ip, eps) in after.items()}
    applied = parse(_render(before)).chains
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    old = {k: before[k] for k in changed if k in before}
    new = {k: after[k] for k in changed if k in after}
    gone = set()
    for k, (_, eps) in old.items():
        gone |= {f"KUBE-SVC-{k.upper()}"} | {f"KUBE-SEP-{e}" for e in eps}
    for k, (_, eps) in new.items():
        gone -= {f"KUBE-SVC-{k.upper()}"} | {f"KUBE-SEP-{e}" for e in eps}
    untouched = copy.deepcopy(applied)
    plan = plan_partial(applied, parse(_render(old)), parse(_render(new)), sorted(gone))
    want = parse(_render(after)).chains
    assert _as_sets(plan.applied) == _as_sets(want)
    # planning leaves the model alone; the Restorer then applies the changes to it in place, once the kernel
    # has them, and reaches the same model
    assert applied == untouched
    apply_changes(applied, plan.changes)
    assert applied == plan.applied
    # the kernel's last KUBE-SERVICES rule is still the NodePorts jump
    assert plan.applied["nat"]["KUBE-SERVICES"][-1].endswith("-j KUBE-NODEPORTS")
    # and every line of the plan is one iptables-restore understands
    for line in plan.text.splitlines():
        assert line in ("*nat", "COMMIT") or line[:3] in (":KU", "-A ", "-D ", "-I ", "-X ")


def test_nft_chain_listing_is_parsed_per_table() -> None:
    text = """table ip filter {
\tchain INPUT {
\t\ttype filter hook input priority filter; policy accept;
\t}
\tchain KUBE-FORWARD {
\t}
}
table ip nat {
\tchain KUBE-SEP-X {
\t}
}
table ip kube-proxy {
\tchain other {
\t}
}
"""
    assert _parse_nft_chains(text, ["filter", "nat"]) == {"filter": {"INPUT", "KUBE-FORWARD"}, "nat": {"KUBE-SEP-X"}}


def test_error_context_shows_the_failing_line() -> None:
    text = "*nat\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n"
    out = _context(text, "iptables-restore: line 3 failed")
    assert "3: -A A -j NOPE" in out and "2: :A - [0:0]" in out
    assert _context(text, "no line number here") == ""


def test_full_text_is_the_input_plus_stale_chains_and_jumps_line_for_line() -> None:
    existing = {"nat": {"KUBE-SVC-OLD", "KUBE-SEP-OLD", "DOCKER", "KUBE-SEP-A1"}}
    jumps = [j for j in JUMPS if j.target in ("KUBE-SERVICES", "KUBE-FORWARD")]
    fast = full_text(blocks_from_text(BASE), existing=existing, missing_jumps=jumps)
    # what the removed plan_full wrote, line for line
    ref = "\n".join([*BASE.splitlines(), ":KUBE-SVC-OLD - [0:0]", ":KUBE-SEP-OLD - [0:0]", "-X KUBE-SVC-OLD",
                     "-X KUBE-SEP-OLD", *_jump_lines([j for j in jumps if j.table == "filter"]),
                     *_jump_lines([j for j in jumps if j.table == "nat"])])
    assert sorted(fast.splitlines()) == sorted(ref.splitlines())
    # per table: rules before the stale chains' deletion, the deletion before COMMIT
    nat = fast.split("*nat\n", 1)[1].splitlines()
    last_rule = max(i for i, x in enumerate(nat) if x.startswith("-A KUBE"))
    assert last_rule < nat.index("-X KUBE-SEP-OLD") < nat.index("COMMIT")
    assert {t: set(b.chains) for t, b in blocks_from_text(BASE).items()} == {
        "filter": {"KUBE-SERVICES", "KUBE-FORWARD"}, "nat": {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-SVC-AAA", "KUBE-SEP-A1"}}
