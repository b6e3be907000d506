"""KubeProxyConfiguration and host facts: kube-proxy's defaults, strictness and resolution."""

from __future__ import annotations

import pytest

from podnet.errors import ValidationError
from podnet.proxy.config import (
    HostFacts,
    KubeProxyConfiguration,
    load_host_facts,
    load_proxy_config,
    parse_duration,
)
from podnet.proxy.settings import resolve_settings


def test_defaults_are_kube_proxys():
    c = load_proxy_config(None)
    assert c.iptables.masquerade_bit == 14 and c.iptables.localhost_node_ports and not c.iptables.masquerade_all
    assert c.effective_sync_period == 30.0
    assert c.healthz_bind_address == "0.0.0.0:10256" and c.metrics_bind_address == "127.0.0.1:10249"
    assert c.effective_min_sync_period == 0.0  # podnet: a change applies at once (issue 3)


def test_real_kube_proxy_file_parses(tmp_path):
    p = tmp_path / "kp.yaml"
    p.write_text("""
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.244.0.0/16,fd00:10::/64
detectLocalMode: ClusterCIDR
hostnameOverride: " Node-A "
clientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 5}
iptables: {masqueradeAll: false, masqueradeBit: 14, localhostNodePorts: true, syncPeriod: 1m0s, minSyncPeriod: 1s}
ipvs: {scheduler: rr}
nodePortAddresses: [primary]
conntrack: {maxPerCore: 32768, min: 131072, tcpEstablishedTimeout: 24h0m0s, tcpCloseWaitTimeout: 1h0m0s, tcpBeLiberal: true}
featureGates: {PreferSameTrafficDistribution: true}
""")
    c = load_proxy_config(p)
    assert c.effective_sync_period == 60 and c.effective_min_sync_period == 1
    assert c.conntrack.tcp_established_timeout == 86400
    s = resolve_settings(c, HostFacts(nodeName="ignored", nodeIPs=["192.168.0.2", "fd00::2"]))
    assert s.node_name == "node-a"
    assert s.local_detector.if_not_local == ("!", "-s", "10.244.0.0/16")
    assert s.node_port_cidrs == ("192.168.0.2/32",) and not s.localhost_node_ports
    assert s.conntrack_tcp_liberal and s.prefer_same_node
    s6 = resolve_settings(c, HostFacts(nodeName="x", nodeIPs=["192.168.0.2", "fd00::2"]), ip_family="IPv6")
    assert s6.local_detector.if_local == ("-s", "fd00:10::/64") and s6.node_port_cidrs == ("fd00::2/128",)


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"kind": "Config"}, "kind: 'Config': must be KubeProxyConfiguration"),
        ({"apiVersion": "v1"}, "apiVersion: 'v1'"),
        ({"mode": "userspace"}, "mode: 'userspace'"),
        ({"iptables": {"masqueradeBit": 40}}, "iptables.masqueradeBit: 40"),
        ({"iptables": {"syncPeriod": "soon"}}, "iptables.syncPeriod: 'soon'"),
        ({"clusterCIDR": "10.0.0.0/40"}, "clusterCIDR: '10.0.0.0/40'"),
        ({"nodePortAddresses": ["eth0"]}, "nodePortAddresses: ['eth0']"),
        ({"iptables": {"masqueradeAl": True}}, "iptables.masqueradeAl: True: unknown field"),
        ({"detectLocalMode": "Magic"}, "detectLocalMode: 'Magic'"),
    ],
)
def test_bad_config_names_the_field(data, fragment):
    with pytest.raises(ValidationError) as e:
        load_proxy_config(data)
    assert fragment in str(e.value), str(e.value)


def test_host_facts_exact_keys(tmp_path):
    f = load_host_facts({"nodeName": "n1", "nodeIPs": ["192.168.000.002"], "nfacct": True, "randomFully": False})
    assert f.node_ips == ["192.168.0.2"] and f.nfacct and not f.random_fully
    for bad, frag in (({"nodeIPs": []}, "nodeName"), ({"nodeName": "n", "nodeIP": "1.2.3.4"}, "nodeIP: '1.2.3.4': unknown"),
                      ({"nodeName": "n", "nfacct": "yes please"}, "nfacct"),
                      ({"nodeName": "n", "nodeIPs": ["300.1.1.1"]}, "300.1.1.1")):
        with pytest.raises(ValidationError) as e:
            load_host_facts(bad)
        assert frag in str(e.value), str(e.value)
    (tmp_path / "f.yaml").write_text("- a list\n")
    with pytest.raises(ValidationError, match="mapping"):
        load_host_facts(tmp_path / "f.yaml")
    with pytest.raises(ValidationError, match="No such file"):
        load_host_facts(tmp_path / "missing.yaml")


def test_detect_local_modes():
    facts = HostFacts(nodeName="n", nodeIPs=["10.1.0.5"])
    mk = KubeProxyConfiguration.model_validate
    assert resolve_settings(mk({}), facts).local_detector.implemented is False  # no clusterCIDR: no detector
    node = resolve_settings(mk({"detectLocalMode": "NodeCIDR"}), facts, node_pod_cidrs=("10.244.3.0/24",))
    assert node.local_detector.if_local == ("-s", "10.244.3.0/24")
    br = resolve_settings(mk({"detectLocalMode": "BridgeInterface", "detectLocal": {"bridgeInterface": "cni0"}}), facts)
    assert br.local_detector.if_not_local == ("!", "-i", "cni0")
    pre = resolve_settings(mk({"detectLocalMode": "InterfaceNamePrefix", "detectLocal": {"interfaceNamePrefix": "veth"}}), facts)
    assert pre.local_detector.if_local == ("-i", "veth+")


def test_node_port_addresses_resolution():
    facts = HostFacts(nodeName="n", nodeIPs=["192.168.0.2", "10.0.0.5"])
    mk = KubeProxyConfiguration.model_validate
    s = resolve_settings(mk({"nodePortAddresses": ["192.168.0.0/24", "127.0.0.0/8"]}), facts)
    assert s.localhost_node_ports and s.node_port_ips() == ("127.0.0.1", "192.168.0.2")
    s = resolve_settings(mk({"nodePortAddresses": ["0.0.0.0/0"]}), facts)
    assert s.node_ports_match_all and s.localhost_node_ports
    s = resolve_settings(mk({"iptables": {"localhostNodePorts": False}}), facts)
    assert s.node_ports_match_all and not s.localhost_node_ports
    assert not resolve_settings(mk({}), facts, ip_family="IPv6").localhost_node_ports


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("1m0s", 60), ("500ms", 0.5), ("1h2m3s", 3723), ("0", 0), (2, 2)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
