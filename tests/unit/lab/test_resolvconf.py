"""A pod's resolv.conf as the kubelet makes it (pkg/kubelet/network/dns GetPodDNS), per dnsPolicy."""

from __future__ import annotations

import pytest

from podnet.api import Pod
from podnet.lab.resolvconf import pod_resolv_conf


def _pod(ns: str = "default", **spec: object) -> Pod:
    return Pod.model_validate({"metadata": {"name": "p", "namespace": ns},
                               "spec": {"containers": [{"name": "c"}], **spec}})


def test_cluster_first_is_the_default() -> None:
    assert pod_resolv_conf(_pod("shop"), "10.96.0.10", "cluster.local") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n")


@pytest.mark.parametrize(("spec", "want"), [
    # a host-network pod falls back to the node's resolver, which the lab's kubelet (--resolv-conf "") has not
    ({"hostNetwork": True}, "search .\nnameserver 127.0.0.1\n"),
    ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"},
     "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"),
    ({"dnsPolicy": "Default"}, "search .\nnameserver 127.0.0.1\n"),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.53"], "searches": ["corp.example"],
                                          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     "search corp.example\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"),
    # dnsConfig is appended to ClusterFirst: new servers and searches after the cluster's, options merged by name
    ({"dnsConfig": {"nameservers": ["10.96.0.10", "192.0.2.53"], "searches": ["corp.example", "cluster.local"],
                    "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "2"}]}},
     "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
     "nameserver 10.96.0.10\nnameserver 192.0.2.53\noptions ndots:1 timeout:2\n"),
])
def test_dns_policies(spec, want) -> None:  # type: ignore[no-untyped-def]
    assert pod_resolv_conf(_pod(**spec), "10.96.0.10", "cluster.local") == want


def test_a_dns_policy_none_without_nameservers_is_refused_at_apply() -> None:
    import json

    from podnet.api import load

    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"dnsPolicy": "None", "containers": [{"name": "c"}]}}
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
           "spec": {"dnsPolicy": "Cluster", "dnsConfig": {"nameservers": ["x"]}, "containers": [{"name": "c"}]}}
    fields = [(p.field, p.value) for p in load(json.dumps(doc) + "\n---\n" + json.dumps(bad)).problems]
    assert fields == [("spec.dnsConfig", None), ("spec.dnsPolicy", "Cluster"), ("spec.dnsConfig.nameservers[0]", "x")]
