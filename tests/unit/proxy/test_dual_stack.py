"""Dual-stack proxying without a kernel: one proxier per family, each seeing only its family.

The golden renders of a dual-stack Service set (golden/dualstack-v4|v6, golden_nftables/dualstack-v4|v6) run
with the other golden cases (test_golden_cases.py, test_nftables.py); here: how the objects are split by
family, the metaproxier's wiring, the clusterCIDR pair, and the per-family tools (ip6tables, conntrack -f).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.api.decode import decode_endpoint_slice
from podnet.api.defaults import IPV4, IPV6
from podnet.errors import ValidationError
from podnet.proxy.config import HostFacts, KubeProxyConfiguration, load_proxy_config
from podnet.proxy.conntrack import ConntrackCleaner, Deletion
from podnet.proxy.hostfacts import usable_node_ip
from podnet.proxy.iptables.render import render
from podnet.proxy.iptables.restore import Restorer, _parse_nft_chains
from podnet.proxy.metaproxier import MetaProxier, node_families, primary_family
from podnet.proxy.nftables.layout import render as nft_render
from podnet.proxy.settings import resolve_settings
from podnet.proxy.tracker import ChangeTracker, parse_service
from tests.unit.proxy.proxy_golden_support import GOLDEN_DIR, case_state, load_case
from tests.unit.proxy.test_proxier import FakeBackend, sync


def _family(ip: str) -> str:
    return IPV6 if ipaddress.ip_address(ip).version == 6 else IPV4


# ---- the golden dual-stack set: each family's render holds only its own addresses ---------------------------

def _addresses(text: str) -> set[str]:
    out = set()
    for tok in text.replace(",", " ").replace("{", " ").replace("}", " ").split():
        tok = tok.removeprefix("[").split("]")[0].split("/")[0]
        try:
            out.add(str(ipaddress.ip_address(tok)))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("family", [IPV4, IPV6])
def test_dual_stack_render_has_only_its_family(family: str) -> None:
    name = "dualstack-v6" if family == IPV6 else "dualstack-v4"
    desired, s = case_state(load_case(GOLDEN_DIR / f"{name}.input.yaml"))
    assert desired.ip_family == family
    for text in (render(desired, s, full=True).text, nft_render(desired, s).text):
        found = _addresses(text)
        assert found and {_family(ip) for ip in found} == {family}, found
    # single-stack services of the other family are absent, those of this family present
    names = {str(k) for k in desired.services}
    assert ("ns7/svc7:p80" in names) == (family == IPV6) and ("ns6/svc6:p80" in names) == (family == IPV4)


# ---- the tracker of each family splits Services and EndpointSlices by family ----------------------------

_V4 = st.integers(1, 250).map(lambda i: f"10.180.0.{i}")
_V6 = st.integers(1, 0xFFFF).map(lambda i: f"fd00:10:180::{i:x}")


@st.composite
def _service_with_slices(draw: Any, i: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    fams = draw(st.sampled_from([[IPV4], [IPV6], [IPV4, IPV6], [IPV6, IPV4]]))
    ips = [f"172.30.0.{i + 1}" if f == IPV4 else f"fd00:172:30::{i + 1:x}" for f in fams]
    svc = {"kind": "Service", "metadata": {"name": f"s{i}", "namespace": "ns"},
           "spec": {"type": "ClusterIP", "ipFamilies": fams, "clusterIP": ips[0], "clusterIPs": ips,
                    "ipFamilyPolicy": "SingleStack" if len(fams) == 1 else "RequireDualStack",
                    "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}}
    slices = []
    for fam in draw(st.lists(st.sampled_from([IPV4, IPV6]), max_size=3)):
        addrs = draw(st.lists(_V4 if fam == IPV4 else _V6, min_size=1, max_size=3, unique=True))
        slices.append({"kind": "EndpointSlice",
                       "metadata": {"name": f"s{i}-{len(slices)}", "namespace": "ns",
                                    "labels": {"kubernetes.io/service-name": f"s{i}"}},
                       "addressType": fam, "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
                       "endpoints": [{"addresses": [a]} for a in addrs]})
    return svc, slices


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=8, unique=True).flatmap(
    lambda idx: st.tuples(*[_service_with_slices(i) for i in idx])))
def test_each_family_tracker_takes_its_cluster_ips_and_slices(objs: tuple[Any, ...]) -> None:
    for fam in (IPV4, IPV6):
        t = ChangeTracker("n1", fam)
        for svc, slices in objs:
            parsed = parse_service(svc, fam)
            t.service_changed(None, (f"/s/{parsed.name}", parsed))
            for sl in slices:
                t.slice_changed(None, (f"/e/{sl['metadata']['name']}", decode_endpoint_slice(sl), None))
        t.update(t.known_services())
        want = {f"ns/{svc['metadata']['name']}" for svc, _ in objs if fam in svc["spec"]["ipFamilies"]}
        assert {sp.name.namespaced_name for sp in t.ports.values()} == want
        for sp in t.ports.values():
            assert _family(sp.cluster_ip) == fam
            svc, slices = next(o for o in objs if o[0]["metadata"]["name"] == sp.name.name)
            expect = {a for sl in slices if sl["addressType"] == fam for e in sl["endpoints"] for a in e["addresses"]}
            assert {ep.ip for ep in sp.endpoints} == expect


# ---- clusterCIDR: a dual-stack pair, one entry per family -----------------------------------------------

def test_cluster_cidr_pair_gives_each_family_its_own() -> None:
    cfg = load_proxy_config({"clusterCIDR": "10.244.0.0/16,fd00:10:244::/56"})
    assert cfg.cluster_cidr_of(IPV4) == "10.244.0.0/16" and cfg.cluster_cidr_of(IPV6) == "fd00:10:244::/56"
    facts = HostFacts(nodeName="n1", nodeIPs=["10.0.0.1", "fd00::1"])
    assert resolve_settings(cfg, facts, ip_family=IPV4).local_detector.if_local == ("-s", "10.244.0.0/16")
    assert resolve_settings(cfg, facts, ip_family=IPV6).local_detector.if_local == ("-s", "fd00:10:244::/56")
    assert load_proxy_config({"clusterCIDR": "10.244.0.0/16"}).cluster_cidr_of(IPV6) == ""


@pytest.mark.parametrize("value", ["10.244.0.0/16,10.245.0.0/16", "fd00::/64,fd01::/64", "10.0.0.0/8,fd00::/8,10.1.0.0/16"])
def test_cluster_cidr_with_two_of_one_family_is_refused(value: str) -> None:
    with pytest.raises(ValidationError) as e:
        load_proxy_config({"clusterCIDR": value})
    assert "clusterCIDR" in str(e.value) and "per IP family" in str(e.value)


# ---- which families a node proxies --------------------------------------------------------------------

def test_families_follow_the_node_addresses_primary_first() -> None:
    dual = load_proxy_config({"clusterCIDR": "fd00:10:244::/56,10.244.0.0/16"})
    assert node_families(dual, ["10.0.0.1", "fd00::1"]) == [IPV6, IPV4]
    assert node_families(KubeProxyConfiguration(), ["10.0.0.1", "fd00::1"]) == [IPV4, IPV6]
    assert node_families(KubeProxyConfiguration(), ["10.0.0.1"]) == [IPV4]
    assert node_families(KubeProxyConfiguration(), ["fd00::1"]) == [IPV6]
    assert primary_family(load_proxy_config({"bindAddress": "fd00::5"}), ["10.0.0.1", "fd00::1"]) == IPV6


def test_link_local_and_loopback_are_not_node_ips() -> None:
    assert [ip for ip in ("10.0.0.1", "127.0.0.1", "::1", "fe80::1", "fd00::1") if usable_node_ip(ip)] == [
        "10.0.0.1", "fd00::1"]


# ---- the metaproxier: one proxier per family over shared metrics and health --------------------------

def _dual_service(name: str, v4: str, v6: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"type": "ClusterIP", "ipFamilies": [IPV4, IPV6], "ipFamilyPolicy": "RequireDualStack",
                     "clusterIP": v4, "clusterIPs": [v4, v6], "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}}


def _slice(name: str, svc: str, fam: str, ips: list[str]) -> dict[str, Any]:
    return {"kind": "EndpointSlice", "metadata": {"name": name, "namespace": "ns",
                                                  "labels": {"kubernetes.io/service-name": svc}},
            "addressType": fam, "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


def test_metaproxier_syncs_each_family_with_its_own_backend(tmp_path: Path) -> None:
    from podnet.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/state.db")
    backends = {IPV4: FakeBackend(), IPV6: FakeBackend()}
    meta = MetaProxier(store, "n1", KubeProxyConfiguration(), [IPV4, IPV6], backends=backends,  # type: ignore[arg-type]
                       facts=HostFacts(nodeName="n1", nodeIPs=["10.0.0.1", "fd00::1"]))
    v4, v6 = meta.proxiers[IPV4], meta.proxiers[IPV6]
    assert v4.metrics is v6.metrics and v4.health is v6.health is meta.health
    assert v4.source is v6.source  # one source for both families' informers
    assert v4.serve_health_checks and not v6.serve_health_checks
    assert (v4.ip_family, v6.ip_family) == (IPV4, IPV6)
    for p in (v4, v6):
        inf = p.informers
        inf.on_service("add", None, inf.decode_service(_dual_service("web", "10.96.0.10", "fd00:96::10")))
        inf.on_slice("add", None, inf.decode_slice(_slice("web-4", "web", IPV4, ["10.244.1.2"])))
        inf.on_slice("add", None, inf.decode_slice(_slice("web-6", "web", IPV6, ["fd00:244:1::2"])))
        assert sync(p)
    for fam, p in meta.proxiers.items():
        (sp,) = p.tracker.ports.values()
        assert _family(sp.cluster_ip) == fam and [_family(e.ip) for e in sp.endpoints] == [fam]
        assert [c[0] for c in backends[fam].calls] == ["full"]
    store.close()


# ---- per-family tools -----------------------------------------------------------------------------------

class _Recorder:
    netns = None

    def __init__(self) -> None:
        self.argv: list[list[str]] = []

    def run(self, argv: list[str], **_: Any) -> Any:
        import subprocess

        self.argv.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_ipv6_restorer_runs_ip6tables() -> None:
    r6 = Restorer(_Recorder(), mode="legacy", ip_family=IPV6)  # type: ignore[arg-type]
    r4 = Restorer(_Recorder(), mode="legacy")  # type: ignore[arg-type]
    assert r6._bin("iptables-restore").startswith("ip6tables") and r6._bin("iptables-save").startswith("ip6tables")
    assert r4._bin("iptables-restore").startswith("iptables")
    assert (r6.nft_family, r4.nft_family) == ("ip6", "ip")
    text = "table ip6 nat {\n\tchain KUBE-SERVICES {\n\t}\n}\n"
    assert _parse_nft_chains(text, ["nat"]) == {"nat": {"KUBE-SERVICES"}}


def test_ipv6_conntrack_cleaner_asks_for_the_ipv6_family() -> None:
    rec = _Recorder()
    ConntrackCleaner(rec, ip_family=IPV6).list_udp()  # type: ignore[arg-type]
    ConntrackCleaner(rec, ip_family=IPV6).delete([Deletion("fd00:96::53", 53, "fd00:244::2")])  # type: ignore[arg-type]
    ConntrackCleaner(rec).list_udp()  # type: ignore[arg-type]
    assert rec.argv == [
        ["conntrack", "-L", "-f", "ipv6", "-p", "udp"],
        ["conntrack", "-D", "-f", "ipv6", "-p", "udp", "--orig-dst", "fd00:96::53", "--orig-port-dst", "53",
         "--reply-src", "fd00:244::2"],
        ["conntrack", "-L", "-p", "udp"],
    ]


def test_shared_health_is_unhealthy_while_one_family_lags() -> None:
    """kube-proxy's ProxyHealthServer keeps each family's times: one stuck proxier makes /healthz fail."""
    from podnet.proxy.healthcheck import ProxyHealth

    now = [1000.0]
    h = ProxyHealth(5, clock=lambda: now[0])  # timeout 10 s
    h.updated(IPV4)
    h.updated(IPV6)
    h.queued(IPV6)
    now[0] += 11
    h.queued(IPV4)
    h.updated(IPV4)  # IPv4 keeps syncing; IPv6 has had a change pending for 11 s
    st = h.status()
    assert st["healthy"] is False
    assert {f: s["healthy"] for f, s in st["status"].items()} == {IPV4: True, IPV6: False}
    assert list(st["status"]) == [IPV4, IPV6]
    h.updated(IPV6)
    assert h.healthy


@pytest.mark.parametrize(("args", "text"), [
    (("--cluster-cidr", "10.244.0.0/16,10.245.0.0/16"), "--cluster-cidr: '10.244.0.0/16,10.245.0.0/16'"),
    (("--cluster-cidr", "10.244.0.0/33"), "--cluster-cidr: '10.244.0.0/33'"),
    (("--mode", "ipvs"), "--mode: 'ipvs': podnet supports iptables and nftables"),
])
def test_proxy_run_refuses_a_bad_flag_by_name_before_starting(tmp_path: Path, args: tuple[str, ...], text: str) -> None:
    import subprocess
    import sys

    podnet = str(Path(sys.executable).with_name("podnet"))
    r = subprocess.run([podnet, "--store", f"sqlite:///{tmp_path}/s.db", "proxy", "run", "--node", "n1", *args],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 1 and text in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_shared_informers_dispatch_services_to_all_and_slices_by_address_type(tmp_path: Path) -> None:
    import json

    from podnet.store import keys, open_store

    store = open_store(f"sqlite:///{tmp_path}/state.db")
    objs = [_dual_service("web", "10.96.0.10", "fd00:96::10"),
            _slice("web-4", "web", IPV4, ["10.244.1.2"]), _slice("web-6", "web", IPV6, ["fd00:244:1::2"]),
            {**_slice("web-f", "web", IPV4, []), "addressType": "FQDN"}]
    for o in objs:
        store.put(keys.resource(o["kind"], "ns", o["metadata"]["name"]), json.dumps(o).encode())
    backends = {IPV4: FakeBackend(), IPV6: FakeBackend()}
    meta = MetaProxier(store, "n1", KubeProxyConfiguration(), [IPV4, IPV6], backends=backends,  # type: ignore[arg-type]
                       facts=HostFacts(nodeName="n1", nodeIPs=["10.0.0.1", "fd00::1"]))
    try:
        meta.informers.start(stopped=lambda: False)
        for fam, p in meta.proxiers.items():
            assert p.sync(full=True)
            (sp,) = p.tracker.ports.values()
            assert _family(sp.cluster_ip) == fam and [_family(e.ip) for e in sp.endpoints] == [fam]
            assert backends[fam].calls[0][0] == "full"
        # each family's tracker only ever saw the slices of its addressType (the FQDN one nobody's)
        seen = {fam: sorted(p.tracker._slices) for fam, p in meta.proxiers.items()}
        assert seen == {IPV4: ["ns/web-4"], IPV6: ["ns/web-6"]}
    finally:
        meta.close()
        store.close()
