"""kube-proxy's golden cases through both sources: the objects are put into the store of a running
`podnet apiserver`; one Proxier reads them from the store (the store source), another from the API server
over HTTPS with lightkube (the Kubernetes source). Both full syncs must render byte-for-byte the same rules,
and those must be kube-proxy's expected text (iptables) and podnet's nftables golden script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from podnet.proxy.config import HostFacts, KubeProxyConfiguration
from podnet.proxy.iptables.render import render
from podnet.proxy.model import DesiredState
from podnet.proxy.nftables.layout import render as render_nft
from podnet.proxy.proxier import Proxier
from podnet.proxy.settings import settings_from_proxier_block
from podnet.proxy.tracker import desired_state_from_objects
from podnet.source.kube import KubeSource
from podnet.source.kubeconfig import KubeOptions
from podnet.source.store import StoreSource
from podnet.store import keys, open_store
from tests.unit.proxy.proxy_golden_support import GOLDEN_DIR, SHARED_GOLDEN, load_case, sort_like_kube_proxy

from .conftest import Api

NFT_GOLDEN = Path(__file__).resolve().parents[2] / "unit" / "proxy" / "golden_nftables"
# Each case's family is the proxier's (a dual-stack node runs one per family: proxy/metaproxier.py).
FULL_CASES = sorted(GOLDEN_DIR.glob("*.input.yaml"))
SYNCREPEATED = sorted(SHARED_GOLDEN.glob("*-syncrepeated-*.input.yaml")) if SHARED_GOLDEN.exists() else []
KINDS = {"services": ("Service", "v1"), "endpointSlices": ("EndpointSlice", "discovery.k8s.io/v1"),
         "nodes": ("Node", "v1")}


class Capture:
    """A backend that keeps what the proxier asks to sync instead of writing rules."""

    mode = "capture"
    needs_full = True
    checks_drift = False

    def __init__(self) -> None:
        self.desired: DesiredState | None = None

    def full_sync(self, desired: DesiredState, settings: Any) -> dict[str, int]:
        self.desired = desired
        return {}

    def partial_sync(self, *a: Any) -> dict[str, int]:
        raise AssertionError("a first sync is full")

    def rules_total(self) -> dict[str, int]:
        return {}

    @staticmethod
    def adjust_config(config: Any) -> Any:
        return config


class Nothing:
    def sync(self, wanted: Any) -> dict[str, Any]:
        return {}

    def cleanup(self, services: Any) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def _objects(case: dict[str, Any]) -> list[dict[str, Any]]:
    st = case.get("stateAfterEvent") or {"services": case.get("services"), "endpointSlices": case.get("endpointSlices")}
    out = []
    for field, (kind, api_version) in KINDS.items():
        for o in st.get(field) or []:
            out.append({"apiVersion": api_version, "kind": kind, **o})
    return out


def _load_into(api: Api, objs: list[dict[str, Any]]) -> None:
    """Replace every Service, EndpointSlice and Node of the API server's store with objs."""
    store = open_store(api.store_url)
    try:
        for kind in ("Service", "EndpointSlice", "Node"):
            for kv in store.list(keys.kind_prefix(kind)).items:
                store.delete(kv.key)
        for o in objs:
            meta = o.get("metadata") or {}
            ns = None if o["kind"] == "Node" else meta.get("namespace") or "default"
            store.put(keys.resource(o["kind"], ns, meta["name"]), json.dumps(o).encode())
    finally:
        store.close()


def _desired_via(source: Any, node: str, ip_family: str = "IPv4") -> DesiredState:
    backend = Capture()
    node_ip = "2001:db8::1" if ip_family == "IPv6" else "192.168.0.2"
    p = Proxier(source, node, KubeProxyConfiguration(), backend=backend, port_holder=Nothing(),  # type: ignore[arg-type]
                conntrack=Nothing(), facts=HostFacts(nodeName=node, nodeIPs=[node_ip]),  # type: ignore[arg-type]
                ip_family=ip_family)
    try:
        p.start_informers()
        assert p.sync(full=True)
    finally:
        p.close()
    assert backend.desired is not None
    return backend.desired


def _both(api: Api, path: Path) -> tuple[dict[str, Any], Any, DesiredState, DesiredState]:
    case = load_case(path)
    settings = settings_from_proxier_block(case["proxier"])
    _load_into(api, _objects(case))
    store = open_store(api.store_url)
    try:
        via_store = _desired_via(StoreSource(store), settings.node_name, settings.ip_family)
    finally:
        store.close()
    kube = KubeSource(KubeOptions(kubeconfig=str(api.kubeconfig)))
    try:
        via_kube = _desired_via(kube, settings.node_name, settings.ip_family)
    finally:
        kube.close()
    return case, settings, via_store, via_kube


@pytest.mark.parametrize("path", FULL_CASES, ids=[p.name.removesuffix(".input.yaml") for p in FULL_CASES])
def test_golden_case_renders_the_same_from_store_and_api(api: Api, path: Path) -> None:
    case, settings, via_store, via_kube = _both(api, path)
    text_store, text_kube = render(via_store, settings, full=True).text, render(via_kube, settings, full=True).text
    assert text_kube == text_store
    expected = Path(str(path).replace(".input.yaml", ".expected.txt")).read_text()
    assert sort_like_kube_proxy(text_kube) == expected
    cidrs = case["proxier"].get("serviceCIDRs")
    nft_kube = render_nft(via_kube, settings, service_cidrs=[cidrs] if cidrs else []).text
    assert nft_kube == render_nft(via_store, settings, service_cidrs=[cidrs] if cidrs else []).text
    assert nft_kube == (NFT_GOLDEN / (path.name.removesuffix(".input.yaml") + ".nft")).read_text()


@pytest.mark.skipif(not SYNCREPEATED, reason="shared/ golden folder absent")
def test_syncrepeated_states_render_the_same_from_store_api_and_files(api: Api) -> None:
    """Each state of kube-proxy's TestSyncProxyRulesRepeated (iptables and nftables) as a full sync: store
    source, API source and the objects rendered straight from the case file agree byte for byte."""
    for path in SYNCREPEATED:
        case, settings, via_store, via_kube = _both(api, path)
        direct = desired_state_from_objects(_objects(case), settings.node_name, ip_family=settings.ip_family)
        texts = {render(d, settings, full=True).text for d in (via_store, via_kube, direct)}
        assert len(texts) == 1, path.name
        nft = {render_nft(d, settings).text for d in (via_store, via_kube, direct)}
        assert len(nft) == 1, path.name


def test_selected_out_services_and_slices_are_ignored_by_both_sources(api: Api) -> None:
    """kube-proxy's informer selectors: a Service with service.kubernetes.io/service-proxy-name (another
    proxy's) or a headless-labelled slice gets no rules from either source."""
    case = yaml.safe_load((GOLDEN_DIR / "overall.input.yaml").read_text())
    objs = _objects({"stateAfterEvent": case["stateAfterEvent"]})
    for o in objs:
        if o["kind"] == "Service" and o["metadata"]["name"] == "svc1":
            o["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "other-proxy"}
        if o["kind"] == "EndpointSlice" and o["metadata"]["name"] == "svc3-1":
            o["metadata"]["labels"]["service.kubernetes.io/headless"] = ""
    _load_into(api, objs)
    store = open_store(api.store_url)
    try:
        via_store = _desired_via(StoreSource(store), "test-node")
    finally:
        store.close()
    kube = KubeSource(KubeOptions(kubeconfig=str(api.kubeconfig)))
    try:
        via_kube = _desired_via(kube, "test-node")
    finally:
        kube.close()
    for d in (via_store, via_kube):
        names = {str(k) for k in d.services}
        assert "ns1/svc1:p80" not in names and "ns2/svc2:p80" in names
        svc3 = next(sp for k, sp in d.services.items() if str(k) == "ns3/svc3:p80")
        assert svc3.endpoints == ()  # its only slice is selected out
    assert via_store.services == via_kube.services
