"""Unit tests of the iptables renderer: names, numbers, partial syncs, large clusters, metrics data."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from podnet.proxy.iptables.names import JUMPS, endpoint_chain_name, port_proto_hash, probability
from podnet.proxy.iptables.render import active_nat_chains, render
from podnet.proxy.settings import settings_from_proxier_block
from podnet.proxy.tracker import desired_state_from_objects
from tests.unit.proxy.proxy_fake_iptables import FakeIPTables
from tests.unit.proxy.proxy_golden_support import GOLDEN_DIR, check_rule_jumps

DEFAULT = settings_from_proxier_block(yaml.safe_load((GOLDEN_DIR / "_proxier_default.yaml").read_text()))


def svc(ns, name, ip, port_name="p80", port=80, proto="TCP", **spec):
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": port_name, "port": port, "protocol": proto}], **spec}}


def eps(ns, name, ips, port_name="p80", port=80, proto="TCP", slice_name=None):
    return {"kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": slice_name or f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip]} for ip in ips],
            "ports": [{"name": port_name, "port": port, "protocol": proto}]}


def state(objs, node="test-node"):
    return desired_state_from_objects(objs, node)


# --- names and numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spn,proto,endpoint,chain",
    [  # chain names that appear in kube-proxy's test expectations
        ("ns1/svc1:p80", "tcp", None, "XPGD46QRK7WJZT7O"),
        ("ns2/svc2:p80", "tcp", None, "GNZBNJ2PO5MGZ6GT"),
        ("ns2/svc2:p8080", "tcp", None, "2VJB64SDSIJUP5T6"),
        ("ns5/svc5:p80", "tcp", None, "NUKIZ6OKUXPJNT4C"),
        ("ns1/svc1:p80", "tcp", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
        ("ns4/svc4:p80", "tcp", "10.180.0.4:80", "KUBE-SEP-UKSFD7AGPMPPLUHC"),
        ("ns1/svc1:p80", "tcp", "10.0.0.0:80", "KUBE-SEP-DKGQUZGBKLTPAR56"),
        ("ns3/svc3:p8081", "tcp", "203.0.113.4:8081", "KUBE-SEP-RUVVH7YV3PHQBDOS"),
    ],
)
def test_chain_names_match_kube_proxy(spn, proto, endpoint, chain):
    if endpoint is None:
        assert port_proto_hash(spn, proto) == chain
    else:
        assert endpoint_chain_name(spn, proto, endpoint) == chain


def test_probabilities_match_compute_probability():
    # TestComputeProbability
    expected = {1: "1.0000000000", 2: "0.5000000000", 10: "0.1000000000", 100: "0.0100000000",
                1000: "0.0010000000", 10000: "0.0001000000", 100000: "0.0000100000", 100001: "0.0000099999"}
    assert {n: probability(n) for n in expected} == expected
    values = [float(probability(n)) for n in range(100000, 1, -1)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_jump_rules_are_kube_proxys():
    # one list of kube-proxy's jumps (names.JUMPS), as iptables -S prints them without the quotes
    as_cli = [(j.table, j.chain, j.rule().replace('"', "")) for j in JUMPS]
    assert ("filter", "INPUT", "-m conntrack --ctstate NEW -m comment --comment kubernetes externally-visible "
            "service portals -j KUBE-EXTERNAL-SERVICES") in as_cli
    assert ("nat", "PREROUTING", "-m comment --comment kubernetes service portals -j KUBE-SERVICES") in as_cli
    assert ("nat", "POSTROUTING", "-m comment --comment kubernetes postrouting rules -j KUBE-POSTROUTING") in as_cli
    assert ("filter", "OUTPUT", "-j KUBE-FIREWALL") in as_cli
    assert len(JUMPS) == 14


# --- fixed rules ----------------------------------------------------------------------------------


def test_real_masquerade_mark_and_fixed_rules():
    # A live kube-proxy formats the mark with %#08x: 0x00004000 (its unit tests hard-code 0x4000).
    from podnet.proxy.config import HostFacts, KubeProxyConfiguration
    from podnet.proxy.settings import resolve_settings

    s = resolve_settings(KubeProxyConfiguration(), HostFacts(nodeName="n"))
    text = render(state([]), s).text
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000" in text
    assert "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN" in text
    bit5 = resolve_settings(KubeProxyConfiguration.model_validate({"iptables": {"masqueradeBit": 5}}), None)
    assert "--or-mark 0x00000020" in render(state([]), bit5).text


def test_drop_invalid_rule_variants():
    # TestDropInvalidRule
    def forward(**kw):
        s = dataclasses.replace(DEFAULT, **kw)
        return [r for r in render(state([]), s).text.splitlines() if r.startswith("-A KUBE-FORWARD")]

    assert forward(nfacct_invalid=False)[0] == "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    assert forward()[0] == (
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP"
    )
    assert len(forward(conntrack_tcp_liberal=True)) == 2


# --- partial syncs ------------------------------------------------------------------------------


def test_partial_sync_writes_only_changed_services_and_counts_all_rules():
    s1 = state([svc("ns1", "a", "172.30.0.1"), svc("ns2", "b", "172.30.0.2"),
                eps("ns1", "a", ["10.0.1.1"]), eps("ns2", "b", ["10.0.2.1", "10.0.2.2"])])
    full = render(s1, DEFAULT)
    s2 = state([svc("ns1", "a", "172.30.0.1"), svc("ns2", "b", "172.30.0.2"),
                eps("ns1", "a", ["10.0.1.1"]), eps("ns2", "b", ["10.0.2.1"])])
    part = render(s2, DEFAULT, previous=s1, full=False)
    assert part.written_services == {"ns2/b"}
    assert "KUBE-SVC-" + port_proto_hash("ns1/a:p80", "tcp") not in part.nat_chains
    assert part.deleted_chains == (endpoint_chain_name("ns2/b:p80", "tcp", "10.0.2.2:80"),)
    # the nat total counts the skipped service's rules as kube-proxy's metric does: 3 fewer than before
    assert part.nat_rules_total == full.nat_rules_total - 3
    assert part.nat_rules_total == render(s2, DEFAULT).nat_rules_total
    # filter table and KUBE-SERVICES are always complete
    assert part.rules_by_chain("nat")["KUBE-SERVICES"] == render(s2, DEFAULT).rules_by_chain("nat")["KUBE-SERVICES"]
    kernel = FakeIPTables()
    kernel.restore(full.text)
    kernel.restore(part.text)
    assert {c for c in kernel.chains("nat") if c.startswith(("KUBE-SVC", "KUBE-SEP"))} == set(part.active_nat_chains)


def test_partial_sync_without_previous_writes_everything():
    s1 = state([svc("ns1", "a", "172.30.0.1"), eps("ns1", "a", ["10.0.1.1"])])
    assert render(s1, DEFAULT, full=False).written_services == {"ns1/a"}


def test_no_change_partial_sync_writes_no_service_chains():
    s1 = state([svc("ns1", "a", "172.30.0.1"), eps("ns1", "a", ["10.0.1.1"])])
    part = render(s1, DEFAULT, previous=s1, full=False)
    assert part.written_services == frozenset()
    assert not [c for c in part.nat_chains if c.startswith("KUBE-S") and c != "KUBE-SERVICES"]
    assert part.deleted_chains == ()


def test_existing_chains_from_the_kernel_drive_deletion_and_foreign_chains_survive():
    s1 = state([svc("ns1", "a", "172.30.0.1"), eps("ns1", "a", ["10.0.1.1"])])
    existing = {"KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-BBBBBBBBBBBBBBBB", "DOCKER", "KUBE-SOMETHING-ELSE",
                "FLANNEL-POSTRTG", *active_nat_chains(s1, DEFAULT)}
    r = render(s1, DEFAULT, existing_nat_chains=existing)
    assert r.deleted_chains == ("KUBE-SEP-BBBBBBBBBBBBBBBB", "KUBE-SVC-AAAAAAAAAAAAAAAA")
    assert "-X DOCKER" not in r.text and ":DOCKER" not in r.text and ":KUBE-SOMETHING-ELSE" not in r.text
    assert render(s1, DEFAULT, existing_nat_chains=existing, cleanup_stale=False).deleted_chains == ()


# --- large clusters ---------------------------------------------------------------------------------


def _sep_dnat_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("-A KUBE-SEP-") and "-j DNAT" in ln]


def test_large_cluster_mode_like_kube_proxy():
    # TestSyncProxyRulesLargeClusterMode: > 1000 endpoints drops per-endpoint comments.
    s = dataclasses.replace(DEFAULT, masquerade_all=True)
    half = 1000 // 2 - 1
    base = [svc("ns1", "svc1", "172.30.0.41"), svc("ns2", "svc2", "172.30.0.42", "p8080", 8080),
            svc("ns3", "svc3", "172.30.0.43", "p8081", 8081),
            eps("ns1", "svc1", [f"10.0.{i % 256}.{i // 256}" for i in range(half)]),
            eps("ns2", "svc2", [f"10.1.{i % 256}.{i // 256}" for i in range(half)], "p8080", 8080)]
    s1 = state(base)
    r1 = render(s1, s)
    dnat = _sep_dnat_lines(r1.text)
    assert len(dnat) == 2 * half and all("--comment" in ln for ln in dnat)
    assert ("-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT "
            "--to-destination 10.0.0.0:80") in dnat

    s2 = state(base + [eps("ns3", "svc3", ["203.0.113.4", "203.0.113.8", "203.0.113.12"], "p8081", 8081)])
    r2 = render(s2, s, previous=s1, full=False)
    dnat = _sep_dnat_lines(r2.text)
    assert len(dnat) == 3 and not any("--comment" in ln for ln in dnat)
    assert "-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT --to-destination 203.0.113.4:8081" in dnat
    assert r2.large_cluster_mode and not r1.large_cluster_mode

    r3 = render(s2, s, full=True)
    dnat = _sep_dnat_lines(r3.text)
    assert len(dnat) == 2 * half + 3 and not any("--comment" in ln for ln in dnat)
    assert "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80" in dnat
    assert check_rule_jumps(r3.text) == []

    s4 = state(base + [eps("ns3", "svc3", ["203.0.113.4", "203.0.113.8", "203.0.113.12"], "p8081", 8081),
                       svc("ns4", "svc4", "172.30.0.44", "p8082", 8082), eps("ns4", "svc4", ["10.4.0.1"], "p8082", 8082)])
    r4 = render(s4, s, previous=s2, full=False)
    assert _sep_dnat_lines(r4.text) == [
        "-A KUBE-SEP-SU5STNODRYEWJAUF -m tcp -p tcp -j DNAT --to-destination 10.4.0.1:8082"]
    # deleting svc4 in large-cluster mode: cleanup skipped until syncPeriod passed (cleanup_stale=False) ...
    s5 = state(base + [eps("ns3", "svc3", ["203.0.113.4", "203.0.113.8", "203.0.113.12"], "p8081", 8081),
                       eps("ns4", "svc4", ["10.4.0.1"], "p8082", 8082)])
    r5 = render(s5, s, previous=s4, full=False, cleanup_stale=False)
    assert "-X " not in r5.text and not _sep_dnat_lines(r5.text)
    # ... and done on a later sync
    r6 = render(s5, s, previous=s4, full=False)
    assert "-X KUBE-SVC-EBDQOQU5SJFXRIL3" in r6.text and "-X KUBE-SEP-SU5STNODRYEWJAUF" in r6.text


# --- metrics data -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "itp,etp,nodes,internal,external",
    [  # TestNoEndpointsMetric
        ("Local", None, ["test-node", "node1", "node2"], 0, 0),
        (None, "Local", ["test-node", "node1", "node2"], 0, 0),
        ("Local", "Local", ["test-node", "node1", "node2"], 0, 0),
        ("Local", None, ["node0", "node1", "node2"], 1, 0),
        (None, "Local", ["node0", "node1", "node2"], 0, 1),
        ("Local", "Local", ["node0", "node1", "node2"], 1, 1),
        ("Local", "Local", [], 0, 0),
    ],
)
def test_no_local_endpoints_counts(itp, etp, nodes, internal, external):
    spec = {"clusterIP": "172.30.1.1", "ports": [{"name": "", "port": 80, "protocol": "TCP", "nodePort": 123}]}
    if itp:
        spec["internalTrafficPolicy"] = itp
    if etp:
        spec.update(type="NodePort", externalTrafficPolicy=etp)
    objs = [{"kind": "Service", "metadata": {"namespace": "ns1", "name": "svc1"}, "spec": spec},
            {"kind": "EndpointSlice", "metadata": {"namespace": "ns1", "name": "svc1-1",
                                                   "labels": {"kubernetes.io/service-name": "svc1"}},
             "addressType": "IPv4", "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
             "endpoints": [{"addresses": [f"10.0.1.{i + 1}"], "nodeName": n, "conditions": {"ready": True}}
                           for i, n in enumerate(nodes)]}]
    r = render(state(objs), DEFAULT)
    assert r.no_local_endpoints == {"internal": internal, "external": external}


def test_rule_counts_match_text():
    # TestProxierMetricsIPTablesTotalRules
    objs = [svc("ns1", "svc1", "172.30.0.41", type="NodePort")]
    objs[0]["spec"]["ports"][0]["nodePort"] = 31201
    r = render(state(objs), DEFAULT)
    filter_text, nat_text = r.text.split("*nat")
    assert r.filter_rules == filter_text.count("\n-A ")
    assert r.nat_rules_total == nat_text.count("\n-A ")
    r = render(state(objs + [eps("ns1", "svc1", ["10.0.0.2", "10.0.0.5"])]), DEFAULT)
    filter_text, nat_text = r.text.split("*nat")
    assert r.filter_rules == filter_text.count("\n-A ")
    assert r.nat_rules_total == nat_text.count("\n-A ")


def test_output_is_deterministic_and_independent_of_input_order():
    objs = [svc("ns1", "a", "172.30.0.1"), svc("ns2", "b", "172.30.0.2"),
            eps("ns1", "a", ["10.0.1.2", "10.0.1.1"]), eps("ns2", "b", ["10.0.2.1"])]
    one = render(state(objs), DEFAULT).text
    assert one == render(state(list(reversed(objs))), DEFAULT).text


def test_output_cache_is_invisible():
    objs = [svc("ns1", "a", "172.30.0.1", type="NodePort"), eps("ns1", "a", ["10.0.1.1", "10.0.1.2"])]
    objs[0]["spec"]["ports"][0]["nodePort"] = 30001
    st = state(objs)
    first = render(st, DEFAULT).text
    other = render(st, dataclasses.replace(DEFAULT, masquerade_all=True, nfacct_localhost=False)).text
    assert other != first and "! -s 10.0.0.0/8" not in other and "nfacct-name localhost" not in other
    assert render(st, DEFAULT).text == first
    # a partial render first (chains not built), then a full one from the same objects
    part = render(st, DEFAULT, previous=st, full=False)
    assert part.nat_rules_total == render(st, DEFAULT).nat_rules_total
    assert render(st, DEFAULT).text == first
    # large-cluster mode is part of the cache key
    large = _sep_dnat_lines(render(st, DEFAULT, large_cluster=True).text)
    assert len(large) == 2 and not any("--comment" in ln for ln in large)
    assert render(st, DEFAULT).text == first


def test_structured_output_is_what_the_text_says():
    """RenderResult.ruleset() (built from `tables`, the applied model and partial plan input) equals the
    parse of the restore text derived from the same tables."""
    from podnet.proxy.iptables.ruleset import parse

    objs = [svc("ns1", "a", "172.30.0.1", type="NodePort"), eps("ns1", "a", ["10.0.1.1", "10.0.1.2"]),
            svc("ns2", "b", "172.30.0.2")]
    objs[0]["spec"]["ports"][0]["nodePort"] = 30001
    for result in (render(state(objs), DEFAULT),
                   render(state(objs[:2]), DEFAULT, existing_nat_chains=["KUBE-SEP-GONE", "KUBE-SVC-GONE"])):
        assert result.ruleset() == parse(result.text)
