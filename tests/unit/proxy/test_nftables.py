"""podnet's nftables layout (proxy/nftables/layout.py, ledger.py): golden scripts, stable slots, element-only deltas.

Golden files (golden_nftables/*.nft) are podnet's own: the full script for every iptables golden input of
this folder plus kube-proxy's TestOverallNFTablesRules input. Regenerate after a deliberate layout change
with PODNET_UPDATE_GOLDEN=1 and review the diff.

The delta tests replay transactions on a model of the kernel's element containers that fails exactly
where nft does (adding an existing key with other data, deleting a missing key) and check that the model
ends where a fresh full render would: the same elements, and each service IP's slots exactly 0..N-1 with
N what its shared chain's `numgen mod N` uses.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName
from podnet.proxy.nftables.layout import (
    SHORTCUT_OFFSET,
    Layout,
    assign_slots,
    render,
    shared_chain_rules,
    stale_removal,
)
from podnet.proxy.nftables.ledger import Ledger, render_delta
from podnet.proxy.settings import LocalDetector, ProxierSettings
from tests.unit.proxy.proxy_golden_support import GOLDEN_DIR, SHARED_GOLDEN, case_state, load_case

NFT_GOLDEN = Path(__file__).with_name("golden_nftables")
CASES = sorted(GOLDEN_DIR.glob("*.input.yaml"))
if (SHARED_GOLDEN / "nftables-overall.input.yaml").exists():
    CASES.append(SHARED_GOLDEN / "nftables-overall.input.yaml")


def _case(path: Path) -> tuple[DesiredState, ProxierSettings, list[str]]:
    case = load_case(path)
    if "stateAfterEvent" not in case:
        case["stateAfterEvent"] = {"services": case["services"], "endpointSlices": case["endpointSlices"]}
    desired, s = case_state(case)
    cidrs = case["proxier"].get("serviceCIDRs")
    return desired, s, [cidrs] if cidrs else []


@pytest.mark.parametrize("path", CASES, ids=[p.name.removesuffix(".input.yaml") for p in CASES])
def test_full_script_matches_golden(path: Path) -> None:
    desired, s, cidrs = _case(path)
    text = render(desired, s, service_cidrs=cidrs).text
    golden = NFT_GOLDEN / (path.name.removesuffix(".input.yaml") + ".nft")
    if os.environ.get("PODNET_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.skipif(not (SHARED_GOLDEN / "nftables-overall.input.yaml").exists(),
                    reason="shared/reference is not beside this checkout")
def test_overall_case_uses_per_service_chains_only_for_affinity_and_source_ranges() -> None:
    desired, s, cidrs = _case(SHARED_GOLDEN / "nftables-overall.input.yaml")
    r = render(desired, s, service_cidrs=cidrs)
    per_service = {c for c in r.chains if "/" in c}
    # svc5 (affinity + source ranges) keeps kube-proxy's chains; nobody else has any
    assert per_service and all("/svc5/" in c for c in per_service), per_service
    assert any(c.startswith("firewall-") for c in per_service)
    assert "add element ip podnet service-ips { 172.30.0.41 . tcp . 80 : goto cluster-tcp-1" in r.text
    # eTP=Local without local endpoints: pod/node traffic short-circuits (offset slots), the rest is dropped
    assert "192.168.99.22 . tcp . 80 . 65536 : 10.180.0.2 . 80" in r.text
    assert '192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop' in r.text
    assert '172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain' in r.text


def test_ipv6_uses_the_ip6_table() -> None:
    desired, s, cidrs = _case(GOLDEN_DIR / "ipv6.input.yaml")
    text = render(desired, s, service_cidrs=cidrs).text
    assert text.startswith("add table ip6 podnet")
    assert " ip " not in text.replace("ip6", "")
    assert "typeof ip6 daddr . meta l4proto . th dport . numgen random mod 1 : ip6 daddr . tcp dport" in text


# ---------------------------------------------------------------------------------------------------
# shared chains


SETTINGS = ProxierSettings(node_name="n1", node_ip="192.168.0.1", node_ips=("192.168.0.1",),
                           local_detector=LocalDetector.by_cidr("10.244.0.0/16"), node_port_cidrs=("192.168.0.1/32",))


def _lay(s: ProxierSettings = SETTINGS) -> Layout:
    return Layout.of(DesiredState("n1"), s)


def test_shared_chain_rules() -> None:
    assert shared_chain_rules("cluster-udp-3", _lay()) == [
        "ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        "meta l4proto udp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-endpoints-udp",
    ]
    assert shared_chain_rules("nodeport-tcp-2", _lay())[0] == "jump mark-for-masquerade"
    local = shared_chain_rules("external-local-tcp-4-1", _lay())
    assert local[0].startswith("ip saddr 10.244.0.0/16 meta l4proto tcp dnat") and f"offset {SHORTCUT_OFFSET}" in local[0]
    assert local[-1].endswith("numgen random mod 1 map @service-endpoints-tcp")
    no_local = shared_chain_rules("nodeport-local-tcp-4-0", _lay(replace(SETTINGS, local_detector=LocalDetector())))
    assert len(no_local) == 2 and all("fib saddr type local" in r for r in no_local)
    assert shared_chain_rules("cluster-tcp-1", _lay(replace(SETTINGS, masquerade_all=True)))[0] == "jump mark-for-masquerade"
    with pytest.raises(ValueError):
        shared_chain_rules("services", _lay())


def test_stale_removal_flushes_before_deleting_and_spares_fixed_sets() -> None:
    lines = stale_removal("ip podnet", {"services", "cluster-tcp-9", "endpoint-X-a/b"}, {"cluster-ips", "affinity-X-a/b"},
                          {"services"}, set())
    assert lines == ["flush chain ip podnet cluster-tcp-9", "flush chain ip podnet endpoint-X-a/b",
                     "delete chain ip podnet cluster-tcp-9", "delete chain ip podnet endpoint-X-a/b",
                     "delete set ip podnet affinity-X-a/b"]


# ---------------------------------------------------------------------------------------------------
# slots


@given(st.lists(st.integers(0, 30), unique=True, max_size=20), st.lists(st.integers(0, 30), unique=True, max_size=20))
def test_assign_slots_keeps_survivors_and_is_a_permutation(prev: list[int], new: list[int]) -> None:
    before = tuple(str(x) for x in prev)
    eps = [str(x) for x in new]
    got = assign_slots(before, eps)
    assert sorted(got) == sorted(eps)
    for i, e in enumerate(before):
        if e in eps and i < len(eps):
            assert got[i] == e  # a survivor whose slot still exists keeps it
    changed = sum(1 for i, e in enumerate(got) if i >= len(before) or before[i] != e)
    assert changed == len(set(eps) - {e for i, e in enumerate(before) if i < len(eps)})


# ---------------------------------------------------------------------------------------------------
# deltas against a model of the kernel


_ELEM = re.compile(r"^(add|delete) element ip podnet (\S+) \{ (.*) \}$")
_FLUSH = re.compile(r"^flush (?:set|map) ip podnet (\S+)$")


def _split(body: str) -> tuple[str, tuple[str | None, str | None]]:
    value = None
    if " : " in body:
        body, value = body.split(" : ", 1)
    comment = None
    m = re.match(r'^(.*) comment "([^"]*)"$', body)
    if m:
        body, comment = m.group(1), m.group(2)
    return body, (value, comment)


def apply(kernel: dict[tuple[str, str], tuple[str | None, str | None]], text: str) -> None:
    """Apply element operations as nft would, failing where nft fails."""
    for line in text.splitlines():
        m = _FLUSH.match(line)
        if m:
            for k in [k for k in kernel if k[0] == m.group(1)]:
                del kernel[k]
            continue
        m = _ELEM.match(line)
        if not m:
            continue
        op, container = m.group(1), m.group(2)
        for body in m.group(3).split(", "):
            key, data = _split(body)
            k = (container, key)
            if op == "add":
                assert k not in kernel or kernel[k] == data, f"nft: File exists: {line}"
                kernel[k] = data
            else:
                assert k in kernel, f"nft: No such file or directory: {line}"
                del kernel[k]


def semantic(kernel: dict[tuple[str, str], tuple[str | None, str | None]]) -> dict:
    """Kernel elements with slot numbers replaced by endpoint multisets; checks slots are 0..N-1."""
    out: dict = {}
    pools: dict[tuple[str, str, bool], list[tuple[int, str]]] = {}
    for (c, key), data in kernel.items():
        if c.startswith(("service-endpoints-", "nodeport-endpoints-")):
            prefix, slot = key.rsplit(" . ", 1)
            shortcut = int(slot) >= SHORTCUT_OFFSET
            pools.setdefault((c, prefix, shortcut), []).append((int(slot) % SHORTCUT_OFFSET, data[0] or ""))
        else:
            out[(c, key)] = data
    for (c, prefix, shortcut), entries in pools.items():
        assert sorted(i for i, _ in entries) == list(range(len(entries))), (prefix, entries)
        out[(c, prefix, shortcut)] = Counter(v for _, v in entries)
    # every pointer to a shared chain agrees with the number of slots it draws from
    for (_c, key), (value, _) in kernel.items():
        m = re.match(r"goto (cluster|external|nodeport)-(\w+)-(\d+)$", value or "")
        if m:
            kind = "nodeport-endpoints" if m.group(1) == "nodeport" else "service-endpoints"
            pool = (f"{kind}-{m.group(2)}", key, False)
            assert sum(out[pool].values()) == int(m.group(3)), (key, value)
    return out


def _state(services: dict[int, tuple[int, ...]], affinity: frozenset[int] = frozenset(),
           local: frozenset[int] = frozenset()) -> DesiredState:
    ports = {}
    for i, eps in sorted(services.items()):
        name = ServicePortName("ns", f"s{i}", "p", "UDP" if i % 3 == 2 else "TCP")
        endpoints = tuple(sorted((Endpoint(ip=f"10.244.{j // 200}.{j % 200 + 2}", port=8080, local=j % 2 == 0,
                                           node_name="n1" if j % 2 == 0 else "n2") for j in eps), key=str))
        ports[name] = ServicePort(name=name, cluster_ip=f"10.96.0.{i + 1}", port=80,
                                  node_port=30000 + i if i % 2 else 0,
                                  external_ips=(f"192.0.2.{i + 1}",) if i % 4 == 1 else (),
                                  client_ip_affinity=i in affinity, sticky_max_age_seconds=60,
                                  external_policy_local=i in local, endpoints=endpoints)
    return DesiredState("n1", services=ports)


def _changes(old: DesiredState, new: DesiredState) -> dict:
    keys = set(old.services) | set(new.services)
    return {k: new.services.get(k) for k in keys if old.services.get(k) != new.services.get(k)}


service_maps = st.dictionaries(st.integers(0, 7), st.lists(st.integers(0, 12), unique=True, max_size=6).map(tuple),
                               max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(service_maps, min_size=1, max_size=5), st.frozensets(st.integers(0, 7)), st.frozensets(st.integers(0, 7)))
def test_deltas_converge_to_the_full_render(steps: list[dict], affinity: frozenset[int], local: frozenset[int]) -> None:
    first = _state({0: (1, 2), 3: (2, 3)}, affinity, local)
    r = render(first, SETTINGS)
    kernel: dict = {}
    apply(kernel, r.text)
    ledger = Ledger(Layout.of(first, SETTINGS), r)
    prev = first
    for services in steps:
        cur = _state(services, affinity, local)
        delta = render_delta(ledger, _changes(prev, cur))
        apply(kernel, delta.text)
        fresh: dict = {}
        apply(fresh, render(cur, SETTINGS).text)
        assert semantic(kernel) == semantic(fresh)
        prev = cur


def test_endpoint_replacement_is_one_element_per_container() -> None:
    eps = tuple(range(10))
    old = _state({0: eps, 4: tuple(range(20, 30))})
    ledger = Ledger(Layout.of(old, SETTINGS), render(old, SETTINGS))
    slot = ledger.objects[ServicePortName("ns", "s0", "p", "TCP")].pools["cluster"].index("10.244.0.2:8080")
    delta = render_delta(ledger, _changes(old, _state({0: (*eps[1:], 98), 4: tuple(range(20, 30))})))
    assert delta.element_only
    # the slot of the gone endpoint gets the new one; its hairpin entry goes, the new one's comes
    assert delta.text.splitlines() == [
        f"delete element ip podnet service-endpoints-tcp {{ 10.96.0.1 . tcp . 80 . {slot} }}",
        "delete element ip podnet hairpin { 10.244.0.2 . 10.244.0.2 }",
        f"add element ip podnet service-endpoints-tcp {{ 10.96.0.1 . tcp . 80 . {slot} : 10.244.0.100 . 8080 }}",
        "add element ip podnet hairpin { 10.244.0.100 . 10.244.0.100 }",
    ]


def test_shared_endpoint_stays_in_hairpin_while_another_service_uses_it() -> None:
    old = _state({0: (1, 2), 3: (2,)})
    ledger = Ledger(Layout.of(old, SETTINGS), render(old, SETTINGS))
    assert "10.244.0.4 . 10.244.0.4" in render(old, SETTINGS).text  # j=2: a pod of this node
    assert "10.244.0.3 . 10.244.0.3" not in render(old, SETTINGS).text  # j=1: another node's pod
    delta = render_delta(ledger, _changes(old, _state({0: (1,), 3: (2,)})))
    assert "hairpin" not in delta.text  # 10.244.0.4 still backs s3


def test_adding_and_removing_an_ordinary_service_is_element_only() -> None:
    old = _state({0: (1, 2)})
    ledger = Ledger(Layout.of(old, SETTINGS), render(old, SETTINGS))
    add = render_delta(ledger, _changes(old, _state({0: (1, 2), 2: (3, 4, 5)})))
    assert add.element_only and "add chain" not in add.text
    gone = render_delta(ledger, _changes(_state({0: (1, 2), 2: (3, 4, 5)}), old))
    assert gone.element_only and gone.text.count("delete element") >= 4


def test_affinity_service_change_rewrites_only_its_own_chains() -> None:
    old = _state({0: (1, 2), 1: (1, 2)}, affinity=frozenset({1}))
    ledger = Ledger(Layout.of(old, SETTINGS), render(old, SETTINGS))
    delta = render_delta(ledger, _changes(old, _state({0: (1, 2), 1: (1,)}, affinity=frozenset({1}))))
    assert not delta.element_only
    touched = {line.split(" ")[4] for line in delta.text.splitlines() if " chain " in line or "add rule" in line}
    assert touched and all("ns/s1/" in name for name in touched), touched
    assert "delete set ip podnet affinity-" in delta.text


def test_a_new_endpoint_count_creates_its_shared_chain_once() -> None:
    old = _state({0: tuple(range(20))})
    ledger = Ledger(Layout.of(old, SETTINGS), render(old, SETTINGS))
    delta = render_delta(ledger, _changes(old, _state({0: tuple(range(21))})))
    assert "add chain ip podnet cluster-tcp-21" in delta.text
    again = render_delta(ledger, _changes(_state({0: tuple(range(21))}), _state({0: tuple(range(21)), 6: tuple(range(21))})))
    assert "add chain" not in again.text
