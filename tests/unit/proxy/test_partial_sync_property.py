"""Property: any sequence of partial syncs leaves the kernel exactly as one full sync of the last state.

This is what makes KEP-3453 partial syncs safe: the in-memory iptables applies every restore the way
`iptables-restore --noflush` does (refusing dangling jumps and deletions of chains still in use).
"""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.proxy.iptables.render import render
from podnet.proxy.settings import settings_from_proxier_block
from podnet.proxy.tracker import desired_state_from_objects
from tests.unit.proxy.proxy_fake_iptables import FakeIPTables
from tests.unit.proxy.proxy_golden_support import GOLDEN_DIR, check_rule_jumps

SETTINGS = settings_from_proxier_block(yaml.safe_load((GOLDEN_DIR / "_proxier_default.yaml").read_text()))

endpoint = st.tuples(st.integers(1, 4), st.sampled_from(["test-node", "other", None]),
                     st.sampled_from([(None, None, None), (False, True, True), (False, False, True)]))
service = st.fixed_dictionaries({
    "type": st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]),
    "etp": st.sampled_from(["Cluster", "Local"]),
    "itp": st.sampled_from(["Cluster", "Local"]),
    "affinity": st.booleans(),
    "ranges": st.booleans(),
    "external_ip": st.booleans(),
    "endpoints": st.lists(endpoint, max_size=3),
})
cluster = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), service, max_size=4)


def objects(spec: dict) -> list[dict]:
    out = []
    for i, (name, s) in enumerate(sorted(spec.items())):
        port = {"name": "p", "port": 80, "protocol": "TCP"}
        svc_spec = {"clusterIP": f"172.30.0.{i + 1}", "type": s["type"], "ports": [port],
                    "internalTrafficPolicy": s["itp"]}
        status = {}
        if s["type"] != "ClusterIP":
            port["nodePort"] = 30000 + i
            svc_spec["externalTrafficPolicy"] = s["etp"]
        if s["type"] == "LoadBalancer":
            status = {"loadBalancer": {"ingress": [{"ip": f"1.2.3.{i + 1}"}]}}
            svc_spec["healthCheckNodePort"] = 32000 + i
            if s["ranges"]:
                svc_spec["loadBalancerSourceRanges"] = ["192.168.0.0/24"]
        if s["affinity"]:
            svc_spec["sessionAffinity"] = "ClientIP"
        if s["external_ip"]:
            svc_spec["externalIPs"] = [f"192.168.99.{i + 1}"]
        out.append({"kind": "Service", "metadata": {"namespace": "ns", "name": name}, "spec": svc_spec,
                    "status": status})
        eps = []
        for host, node, (ready, serving, terminating) in s["endpoints"]:
            cond = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
                    if v is not None}
            eps.append({"addresses": [f"10.0.{i}.{host}"], "conditions": cond, **({"nodeName": node} if node else {})})
        out.append({"kind": "EndpointSlice", "metadata": {"namespace": "ns", "name": f"{name}-1",
                                                          "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "p", "port": 8080}]})
    return out


def kube_chains(kernel: FakeIPTables) -> dict:
    return {t: {c: r for c, r in chains.items() if c.startswith("KUBE-")} for t, chains in kernel.tables.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(cluster, min_size=1, max_size=4))
def test_partial_syncs_converge_to_the_full_sync(states):
    kernel = FakeIPTables()
    previous = None
    for i, spec in enumerate(states):
        desired = desired_state_from_objects(objects(spec), "test-node")
        result = render(desired, SETTINGS, previous=previous, full=(i == 0),
                        existing_nat_chains=kernel.chains("nat"))
        kernel.restore(result.text)
        previous = desired
        fresh = FakeIPTables()
        full = render(desired, SETTINGS)
        assert check_rule_jumps(full.text) == []
        fresh.restore(full.text)
        assert kube_chains(kernel) == kube_chains(fresh)
        assert result.nat_rules_total == full.nat_rules_total
