"""kube-proxy's packet-flow unit tests, replayed against podnet's rendered rules.

Each test names the upstream test in pkg/proxy/iptables/proxier_test.go it comes from; the packets
and expected outcomes (endpoints reached, masquerade or not, REJECT/DROP/ACCEPT) are upstream's.
The rules are traced by tests/unit/proxy/proxy_tracer.py: upstream's tracePacket driving podnet's own walker
(podnet.trace.ipt, what `podnet trace` uses on live rules).
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from podnet.proxy.iptables.render import render
from podnet.proxy.settings import LocalDetector, settings_from_proxier_block
from podnet.proxy.tracker import desired_state_from_objects
from tests.unit.proxy.proxy_golden_support import GOLDEN_DIR
from tests.unit.proxy.proxy_tracer import Tracer

NODE = "test-node"
NODE_IP = "192.168.0.2"
NODE_IP_ALT = "192.168.1.2"
EXTERNAL_CLIENT = "203.0.113.2"
EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"
TEST_NODE_IPS = [NODE_IP, NODE_IP_ALT, "192.168.99.11", "2001:db8::1", "2001:db8:1::2"]
DEFAULT = yaml.safe_load((GOLDEN_DIR / "_proxier_default.yaml").read_text())


def svc(ns: str, name: str, *, ports=(("p80", 80, "TCP", 0),), lb_ips=(), **spec) -> dict:
    spec = dict(spec)
    spec["ports"] = [
        {"name": n, "port": p, "protocol": proto, **({"nodePort": np} if np else {})} for n, p, proto, np in ports
    ]
    status = {"loadBalancer": {"ingress": [i if isinstance(i, dict) else {"ip": i} for i in lb_ips]}}
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": spec, "status": status}


def ep(ip: str, node: str | None = None, ready=None, serving=None, terminating=None) -> dict:
    cond = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None}
    out: dict = {"addresses": [ip], "conditions": cond}
    if node:
        out["nodeName"] = node
    return out


def eps(ns: str, name: str, endpoints: list[dict], ports=(("p80", 80, "TCP"),), family="IPv4") -> dict:
    return {
        "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def tracer(objects: list[dict], **overrides) -> Tracer:
    block = {**DEFAULT, **{k: v for k, v in overrides.items() if k in DEFAULT or k == "nodePortAddresses"}}
    settings = settings_from_proxier_block(block)
    if overrides.get("no_local_detector"):
        settings = dataclasses.replace(settings, local_detector=LocalDetector())
    desired = desired_state_from_objects(objects, NODE, ip_family=settings.ip_family)
    return Tracer(render(desired, settings).text, TEST_NODE_IPS)


def check(t: Tracer, flows: list[tuple]) -> None:
    """flows: (name, src, dst, dport, output, masq[, proto])."""
    failures = []
    for name, src, dst, dport, output, masq, *proto in flows:
        got, got_masq, matches = t.trace(src, dst, dport, (proto[0] if proto else "tcp"))
        if got != output or got_masq != masq:
            failures.append(f"{name}: got {got!r} masq={got_masq}, want {output!r} masq={masq}\n  " + "\n  ".join(matches))
    assert not failures, "\n".join(failures)


# TestNoEndpointsReject
def test_no_endpoints_reject():
    t = tracer([svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", externalIPs=["192.168.99.11"],
                    ports=(("p80", 80, "TCP", 3001),), lb_ips=["1.2.3.4"])])
    check(t, [
        ("pod to cluster IP with no endpoints", "10.0.0.2", "172.30.0.41", 80, "REJECT", False),
        ("external to external IP with no endpoints", EXTERNAL_CLIENT, "192.168.99.11", 80, "REJECT", False),
        ("pod to NodePort with no endpoints", "10.0.0.2", NODE_IP, 3001, "REJECT", False),
        ("external to NodePort with no endpoints", EXTERNAL_CLIENT, NODE_IP, 3001, "REJECT", False),
        ("pod to LoadBalancer IP with no endpoints", "10.0.0.2", "1.2.3.4", 80, "REJECT", False),
        ("external to LoadBalancer IP with no endpoints", EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT", False),
    ])


# TestClusterIPGeneral
def test_cluster_ip_general():
    ports2 = (("http", 80, "TCP", 0), ("https", 443, "TCP", 0), ("dns-udp", 53, "UDP", 0),
              ("dns-tcp", 53, "TCP", 0), ("dns-sctp", 53, "SCTP", 0))
    t = tracer([
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=(("http", 80, "TCP", 0),)),
        svc("ns2", "svc2", clusterIP="172.30.0.42", ports=ports2),
        eps("ns1", "svc1", [ep("10.180.0.1", NODE)], ports=(("http", 80, "TCP"),)),
        eps("ns2", "svc2", [ep("10.180.0.1", NODE), ep("10.180.2.1", "node2")],
            ports=(("http", 80, "TCP"), ("https", 8443, "TCP"), ("dns-udp", 53, "UDP"), ("dns-tcp", 5353, "TCP"),
                   ("dns-sctp", 53, "SCTP"))),
    ])
    check(t, [
        ("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80", False),
        ("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
        ("clusterIP with multiple endpoints", "10.180.0.2", "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80", False),
        ("clusterIP with TargetPort", "10.180.0.2", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443", False),
        ("same port TCP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353", False, "tcp"),
        ("same port UDP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "udp"),
        ("same port SCTP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "sctp"),
        ("TCP-only port does not match UDP traffic", "10.180.0.2", "172.30.0.42", 80, "", False, "udp"),
        ("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "", False),
    ])


# TestLoadBalancer
def test_load_balancer_source_ranges():
    t = tracer([
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=(("p80", 80, "TCP", 3001),),
            lb_ips=["1.2.3.4", "5.6.7.8"], loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"]),
        eps("ns1", "svc1", [ep("10.180.0.1")]),
    ])
    e = "10.180.0.1:80"
    check(t, [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, e, False),
        ("external to nodePort", EXTERNAL_CLIENT, NODE_IP, 3001, e, True),
        ("nodePort bypasses LoadBalancerSourceRanges", EXTERNAL_CLIENT_BLOCKED, NODE_IP, 3001, e, True),
        ("accepted external to LB1", EXTERNAL_CLIENT, "1.2.3.4", 80, e, True),
        ("accepted external to LB2", EXTERNAL_CLIENT, "5.6.7.8", 80, e, True),
        ("blocked external to LB1", EXTERNAL_CLIENT_BLOCKED, "1.2.3.4", 80, "DROP", False),
        ("blocked external to LB2", EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP", False),
        ("pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "1.2.3.4", 80, "DROP", False),
        ("pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "5.6.7.8", 80, "DROP", False),
        ("node to LB1 (allowed by LoadBalancerSourceRanges)", NODE_IP, "1.2.3.4", 80, e, True),
        ("node to LB2 (allowed by LoadBalancerSourceRanges)", NODE_IP, "5.6.7.8", 80, e, True),
        ("same node to LB1, SNATted to LB1 (implicitly allowed)", "1.2.3.4", "1.2.3.4", 80, e, True),
        ("same node to LB2, SNATted to LB2 (implicitly allowed)", "5.6.7.8", "5.6.7.8", 80, e, True),
    ])


# TestNodePorts
@pytest.mark.parametrize(
    "family,localhost,npa,allow_alt,expect_firewall",
    [
        ("IPv4", True, None, True, True),
        ("IPv4", False, None, True, False),
        ("IPv4", False, ["192.168.0.0/24", "127.0.0.1/32"], False, False),
        ("IPv4", False, ["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"], True, False),
        ("IPv6", True, None, True, False),
        ("IPv6", False, None, True, False),
        ("IPv6", False, ["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"], False, False),
    ],
)
def test_node_ports(family, localhost, npa, allow_alt, expect_firewall):
    if family == "IPv4":
        svc_ip, ep1, ep2, pod, client, node_ip, alt, lo = (
            "172.30.0.41", "10.180.0.1", "10.180.2.1", "10.0.0.2", EXTERNAL_CLIENT, NODE_IP, NODE_IP_ALT, "127.0.0.1")
        detector = {"mode": "ClusterCIDR", "cidr": "10.0.0.0/8"}
        fmt = "{}:80"
    else:
        svc_ip, ep1, ep2, pod, client, node_ip, alt, lo = (
            "fd00:172:30::41", "fd00:10:180::1", "fd00:10:180::2:1", "fd00:10::2", "2600:5200::1",
            "2001:db8::1", "2001:db8:1::2", "::1")
        detector = {"mode": "ClusterCIDR", "cidr": "fd00:10::/64"}
        fmt = "[{}]:80"
    objs = [
        svc("ns1", "svc1", type="NodePort", clusterIP=svc_ip, ports=(("p80", 80, "TCP", 3001),)),
        eps("ns1", "svc1", [ep(ep1), ep(ep2, NODE)], family=family),
    ]
    t = tracer(objs, ipFamily=family, localhostNodePorts=localhost, nodePortAddresses=npa, localDetector=detector,
               nodeIP=node_ip, nodeIPs=TEST_NODE_IPS)
    out = fmt.format(ep1) + ", " + fmt.format(ep2)
    flows = [
        ("pod to cluster IP", pod, svc_ip, 80, out, False),
        ("external to nodePort", client, node_ip, 3001, out, True),
        ("node to nodePort", node_ip, node_ip, 3001, out, True),
    ]
    if family == "IPv4" and localhost:
        flows.append(("localhost to nodePort gets masqueraded", lo, lo, 3001, out, True))
    else:
        flows.append(("localhost to nodePort is ignored", lo, lo, 3001, "", False))
    if allow_alt:
        flows.append(("external to nodePort on secondary IP", client, alt, 3001, out, True))
    else:
        flows.append(("secondary nodeIP ignores NodePorts", client, alt, 3001, "", False))
    check(t, flows)
    firewall = t.tables["filter"].get("KUBE-FIREWALL", [])
    want = (['-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
             "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"] if expect_firewall else [])
    assert [r.line for r in firewall] == want


# TestHealthCheckNodePort
def test_health_check_node_port():
    lb = svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.42", ports=(("p80", 80, "TCP", 3001),),
             healthCheckNodePort=30000, externalTrafficPolicy="Local")
    t = tracer([lb], nodePortAddresses=["127.0.0.0/8"])
    check(t, [("firewall accepts HealthCheckNodePort", "1.2.3.4", NODE_IP, 30000, "ACCEPT", False)])
    t = tracer([], nodePortAddresses=["127.0.0.0/8"])
    check(t, [("HealthCheckNodePort no longer has any rule", "1.2.3.4", NODE_IP, 30000, "", False)])


def _etp_service(policy: str) -> list[dict]:
    return [
        svc("ns1", "svc1", type="LoadBalancer", externalTrafficPolicy=policy, clusterIP="172.30.0.41",
            externalIPs=["192.168.99.11"], ports=(("p80", 80, "TCP", 3001),), healthCheckNodePort=30000,
            lb_ips=["1.2.3.4"]),
        eps("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)]),
    ]


# TestExternalTrafficPolicyLocal
def test_external_traffic_policy_local():
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    check(tracer(_etp_service("Local")), [
        ("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, both, False),
        ("pod to external IP hits both endpoints, unmasqueraded", "10.0.0.2", "192.168.99.11", 80, both, False),
        ("external to external IP hits only local endpoint", EXTERNAL_CLIENT, "192.168.99.11", 80, local, False),
        ("pod to LB IP hits only both endpoints, unmasqueraded", "10.0.0.2", "1.2.3.4", 80, both, False),
        ("external to LB IP hits only local endpoint, unmasqueraded", EXTERNAL_CLIENT, "1.2.3.4", 80, local, False),
        ("pod to NodePort hits both endpoints, unmasqueraded", "10.0.0.2", NODE_IP, 3001, both, False),
        ("external to NodePort hits only local endpoint, unmasqueraded", EXTERNAL_CLIENT, NODE_IP, 3001, local, False),
    ])


# TestExternalTrafficPolicyCluster
def test_external_traffic_policy_cluster():
    both = "10.180.0.1:80, 10.180.2.1:80"
    check(tracer(_etp_service("Cluster")), [
        ("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, both, False),
        ("pod to external IP hits both endpoints, masqueraded", "10.0.0.2", "192.168.99.11", 80, both, True),
        ("external to external IP hits both endpoints, masqueraded", EXTERNAL_CLIENT, "192.168.99.11", 80, both, True),
        ("pod to LB IP hits both endpoints, masqueraded", "10.0.0.2", "1.2.3.4", 80, both, True),
        ("external to LB IP hits both endpoints, masqueraded", EXTERNAL_CLIENT, "1.2.3.4", 80, both, True),
        ("pod to NodePort hits both endpoints, masqueraded", "10.0.0.2", NODE_IP, 3001, both, True),
        ("external to NodePort hits both endpoints, masqueraded", EXTERNAL_CLIENT, NODE_IP, 3001, both, True),
    ])


# TestInternalTrafficPolicy
@pytest.mark.parametrize(
    "itp,nodes,output",
    [
        ("Cluster", [NODE, "node1", "node2"], "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"),
        ("Local", [NODE, "node1", "node2"], "10.0.1.1:80"),
        ("Local", [NODE, NODE, "node2"], "10.0.1.1:80, 10.0.1.2:80"),
        ("Local", ["node0", "node1", "node2"], "DROP"),
    ],
)
def test_internal_traffic_policy(itp, nodes, output):
    service = svc("ns1", "svc1", clusterIP="172.30.1.1", internalTrafficPolicy=itp, ports=(("", 80, "TCP", 0),))
    endpoints = [ep(f"10.0.1.{i + 1}", n, ready=True) for i, n in enumerate(nodes)]
    t = tracer([service, eps("ns1", "svc1", endpoints, ports=(("", 80, "TCP"),))])
    check(t, [("pod to ClusterIP", "10.0.0.2", "172.30.1.1", 80, output, False)])
    check(tracer([service]), [("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT", False)])


_TERMINATING_CASES = {
    "ready endpoints exist": [
        ep("10.0.1.1", NODE, True, True, False), ep("10.0.1.2", NODE, True, True, False),
        ep("10.0.1.3", NODE, False, True, True), ep("10.0.1.4", NODE, False, False, True),
        ep("10.0.1.5", "node-1", True, True, False)],
    "only terminating endpoints exist": [
        ep("10.0.1.2", NODE, False, True, True), ep("10.0.1.3", NODE, False, True, True),
        ep("10.0.1.4", NODE, False, False, True), ep("10.0.1.5", "node-1", True, True, False)],
    "terminating endpoints on remote node": [ep("10.0.1.5", "node-1", False, True, True)],
    "no usable endpoints on any node": [
        ep("10.0.1.5", NODE, False, False, True), ep("10.0.1.5", "node-1", False, False, True)],
}


# TestTerminatingEndpointsTrafficPolicyLocal
@pytest.mark.parametrize(
    "case,cluster_out,lb_out",
    [
        ("ready endpoints exist", "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", "10.0.1.1:80, 10.0.1.2:80"),
        ("only terminating endpoints exist", "10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80"),
        ("terminating endpoints on remote node", "10.0.1.5:80", "DROP"),
        ("no usable endpoints on any node", "REJECT", "REJECT"),
    ],
)
def test_terminating_endpoints_traffic_policy_local(case, cluster_out, lb_out):
    service = svc("ns1", "svc1", clusterIP="172.30.1.1", type="LoadBalancer", externalTrafficPolicy="Local",
                  ports=(("", 80, "TCP", 0),), healthCheckNodePort=30000, lb_ips=["1.2.3.4"])
    t = tracer([service, eps("ns1", "svc1", _TERMINATING_CASES[case], ports=(("", 80, "TCP"),))])
    check(t, [
        ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, cluster_out, False),
        ("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, lb_out, False),
    ])


# TestTerminatingEndpointsTrafficPolicyCluster
@pytest.mark.parametrize(
    "endpoints,out",
    [
        ([ep("10.0.1.1", NODE, True, True, False), ep("10.0.1.2", NODE, True, True, False),
          ep("10.0.1.3", "another-node", False, True, True), ep("10.0.1.4", "another-node", False, False, True),
          ep("10.0.1.5", "another-node", True, True, False)], "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80"),
        ([ep("10.0.1.2", NODE, False, True, True), ep("10.0.1.3", NODE, False, True, True),
          ep("10.0.1.4", "another-node", False, False, True), ep("10.0.1.5", "another-node", False, True, True)],
         "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80"),
        ([ep("10.0.1.5", "node-1", False, True, True)], "10.0.1.5:80"),
        ([ep("10.0.1.5", NODE, False, False, True), ep("10.0.1.5", "node-1", False, False, True)], "REJECT"),
    ],
)
def test_terminating_endpoints_traffic_policy_cluster(endpoints, out):
    service = svc("ns1", "svc1", clusterIP="172.30.1.1", type="LoadBalancer", externalTrafficPolicy="Cluster",
                  ports=(("", 80, "TCP", 0),), healthCheckNodePort=30000, lb_ips=["1.2.3.4"])
    t = tracer([service, eps("ns1", "svc1", endpoints, ports=(("", 80, "TCP"),))])
    masq = out != "REJECT"
    check(t, [
        ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, out, False),
        ("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, out, masq),
    ])


# TestInternalExternalMasquerade
_IEM_BASE = [
    ("pod to ClusterIP", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", False),
    ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("pod to LB", "10.0.0.2", "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    ("node to ClusterIP", NODE_IP, "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    ("node to NodePort", NODE_IP, NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("localhost to NodePort", "127.0.0.1", "127.0.0.1", 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("node to LB", NODE_IP, "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    ("external to ClusterIP", EXTERNAL_CLIENT, "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    ("pod to ClusterIP with eTP:Local", "10.0.0.2", "172.30.0.42", 80, "10.180.0.2:80, 10.180.1.2:80", False),
    ("pod to NodePort with eTP:Local", "10.0.0.2", NODE_IP, 3002, "10.180.0.2:80, 10.180.1.2:80", False),
    ("pod to LB with eTP:Local", "10.0.0.2", "5.6.7.8", 80, "10.180.0.2:80, 10.180.1.2:80", False),
    ("node to ClusterIP with eTP:Local", NODE_IP, "172.30.0.42", 80, "10.180.0.2:80, 10.180.1.2:80", True),
    ("node to NodePort with eTP:Local", NODE_IP, NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("localhost to NodePort with eTP:Local", "127.0.0.1", "127.0.0.1", 3002, "10.180.0.2:80, 10.180.1.2:80", True),
    ("node to LB with eTP:Local", NODE_IP, "5.6.7.8", 80, "10.180.0.2:80, 10.180.1.2:80", True),
    ("external to ClusterIP with eTP:Local", EXTERNAL_CLIENT, "172.30.0.42", 80, "10.180.0.2:80, 10.180.1.2:80", True),
    ("external to NodePort with eTP:Local", EXTERNAL_CLIENT, NODE_IP, 3002, "10.180.0.2:80", False),
    ("external to LB with eTP:Local", EXTERNAL_CLIENT, "5.6.7.8", 80, "10.180.0.2:80", False),
    ("pod to ClusterIP with iTP:Local", "10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", False),
    ("pod to NodePort with iTP:Local", "10.0.0.2", NODE_IP, 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    ("pod to LB with iTP:Local", "10.0.0.2", "9.10.11.12", 80, "10.180.0.3:80, 10.180.1.3:80", True),
    ("node to ClusterIP with iTP:Local", NODE_IP, "172.30.0.43", 80, "10.180.0.3:80", True),
    ("node to NodePort with iTP:Local", NODE_IP, NODE_IP, 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    ("localhost to NodePort with iTP:Local", "127.0.0.1", "127.0.0.1", 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    ("node to LB with iTP:Local", NODE_IP, "9.10.11.12", 80, "10.180.0.3:80, 10.180.1.3:80", True),
    ("external to ClusterIP with iTP:Local", EXTERNAL_CLIENT, "172.30.0.43", 80, "10.180.0.3:80", True),
    ("external to NodePort with iTP:Local", EXTERNAL_CLIENT, NODE_IP, 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    ("external to LB with iTP:Local", EXTERNAL_CLIENT, "9.10.11.12", 80, "10.180.0.3:80, 10.180.1.3:80", True),
]
_NO_DETECTOR = {
    "node to ClusterIP": (None, False), "node to ClusterIP with eTP:Local": (None, False),
    "node to ClusterIP with iTP:Local": (None, False), "external to ClusterIP": (None, False),
    "external to ClusterIP with eTP:Local": (None, False), "external to ClusterIP with iTP:Local": (None, False),
    "pod to NodePort with eTP:Local": ("10.180.0.2:80", None), "pod to LB with eTP:Local": ("10.180.0.2:80", None),
}
_MASQ_ALL = {
    "pod to ClusterIP": (None, True), "pod to ClusterIP with eTP:Local": (None, True),
    "pod to ClusterIP with iTP:Local": (None, True),
}


@pytest.mark.parametrize(
    "masquerade_all,detector,overrides",
    [
        (False, True, {}),
        (False, False, _NO_DETECTOR),
        (True, True, _MASQ_ALL),
        (True, False, {**_MASQ_ALL, **{k: v for k, v in _NO_DETECTOR.items() if k.startswith("pod to")}}),
    ],
    ids=["base", "no LocalTrafficDetector", "masqueradeAll", "masqueradeAll, no LocalTrafficDetector"],
)
def test_internal_external_masquerade(masquerade_all, detector, overrides):
    objs = [
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", ports=(("p80", 80, "TCP", 3001),),
            healthCheckNodePort=30001, lb_ips=["1.2.3.4"]),
        svc("ns2", "svc2", type="LoadBalancer", clusterIP="172.30.0.42", ports=(("p80", 80, "TCP", 3002),),
            healthCheckNodePort=30002, externalTrafficPolicy="Local", lb_ips=["5.6.7.8"]),
        svc("ns3", "svc3", type="LoadBalancer", clusterIP="172.30.0.43", ports=(("p80", 80, "TCP", 3003),),
            healthCheckNodePort=30003, internalTrafficPolicy="Local", lb_ips=["9.10.11.12"]),
        eps("ns1", "svc1", [ep("10.180.0.1", NODE), ep("10.180.1.1", "remote")]),
        eps("ns2", "svc2", [ep("10.180.0.2", NODE), ep("10.180.1.2", "remote")]),
        eps("ns3", "svc3", [ep("10.180.0.3", NODE), ep("10.180.1.3", "remote")]),
    ]
    t = tracer(objs, masqueradeAll=masquerade_all, no_local_detector=not detector)
    flows = []
    for name, src, dst, port, out, masq in _IEM_BASE:
        o_out, o_masq = overrides.get(name, (None, None))
        flows.append((name, src, dst, port, out if o_out is None else o_out, masq if o_masq is None else o_masq))
    check(t, flows)


# TestLoadBalancerIngressRouteTypeProxy (LoadBalancerIPMode is GA in v1.33: always on)
@pytest.mark.parametrize("ip_mode,expect_rule", [("Proxy", False), ("VIP", True), (None, True)])
def test_load_balancer_ingress_ip_mode(ip_mode, expect_rule):
    ingress = {"ip": "1.2.3.4", **({"ipMode": ip_mode} if ip_mode else {})}
    t = tracer([
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="10.20.30.41", ports=(("p80", 80, "TCP", 3001),),
            lb_ips=[ingress]),
        eps("ns1", "svc1", [ep("10.180.0.1")]),
    ])
    has = any(" -d 1.2.3.4" in r.line and "! -d 1.2.3.4" not in r.line for r in t.tables["nat"]["KUBE-SERVICES"])
    assert has is expect_rule
