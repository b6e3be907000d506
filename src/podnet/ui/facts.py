"""What only the lab knows: its topology (lab state), flannel's net-conf and the nodes' subnet leases (store).

Kubernetes' API has no object for a node's flannel device or lease, so the page reads them where flannel
keeps them: the store the lab's overlay daemons write. Leases are followed with the store's informer (a
node that re-acquires its subnet moves on the page); the net-conf is read once (a lab never changes it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from podnet.lab.state import LabState, list_labs
from podnet.net.vxlan import DEFAULT_PORT as VXLAN_PORT
from podnet.overlay.backends.udp import DEFAULT_PORT as UDP_PORT
from podnet.overlay.lease import Lease, decode_lease_kv
from podnet.store import keys, open_store
from podnet.store.informer import Informer
from podnet.ui.errors import UiError
from podnet.ui.model import LabFacts, LeaseFact

log = logging.getLogger(__name__)


def load_lab(name: str) -> LabState:
    st = LabState.load(name)
    if st is None:
        labs = ", ".join(list_labs()) or "none"
        raise UiError(f"--name: {name!r}: no such lab is up (labs: {labs}); run `podnet lab up --name {name}`")
    return st


def _subnet_env(st: LabState, node: str) -> str:
    try:
        text = st.subnet_file(node).read_text()
    except OSError:
        return ""
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return env.get("FLANNEL_SUBNET", "").strip()


def lease_fact(le: Lease) -> LeaseFact:
    data = le.backend_data if isinstance(le.backend_data, dict) else {}
    return LeaseFact(str(le.subnet), str(le.public_ip), le.backend_type or "", data)


def lab_facts(st: LabState, netconf: dict[str, Any], leases: list[LeaseFact]) -> LabFacts:
    spec = st.spec
    b = netconf.get("Backend")
    backend: dict[str, Any] = b if isinstance(b, dict) else {}
    p, v = backend.get("Port"), backend.get("VNI")
    port = p if isinstance(p, int) else 0
    vni = v if isinstance(v, int) else 1
    return LabFacts(
        name=spec.name, backend=spec.backend, proxy_mode=spec.proxy_mode, underlay_cidr=spec.underlay_cidr,
        underlay_netns=spec.underlay_netns, underlay_bridge=spec.underlay_bridge,
        underlay_gateway=spec.underlay_gateway, pod_network=str(netconf.get("Network") or spec.pod_network),
        node_netns={n.name: n.netns for n in spec.node_specs},
        node_ips={n.name: n.underlay_ip for n in spec.node_specs},
        subnet_env={n.name: _subnet_env(st, n.name) for n in spec.node_specs},
        vni=vni, udp_port=port or UDP_PORT, vxlan_port=port or VXLAN_PORT,
        leases=tuple(sorted(leases, key=lambda le: le.public_ip)),
    )


class LabWatch:
    """The lab's facts, kept current: an informer on flannel's subnet leases calls on_change from its thread."""

    def __init__(self, st: LabState, on_change: Callable[[], object] | None = None) -> None:
        self.st = st
        self.store = open_store(st.store_url)
        kv = self.store.get(keys.NETWORK_CONFIG)
        try:
            self.netconf: dict[str, Any] = json.loads(kv.value) if kv else {}
        except ValueError:
            self.netconf = {}
        self._on_change = on_change
        self.informer: Informer[Lease] = Informer(self.store, keys.SUBNETS_PREFIX, decode_kv=decode_lease_kv,
                                                  on_change=self._changed, name="ui leases")

    def _changed(self, *_: object) -> None:
        if self._on_change is not None:
            self._on_change()

    def start(self, timeout: float = 10.0) -> LabWatch:
        self.informer.start()
        if not self.informer.wait_synced(timeout):
            log.warning("subnet leases not listed within %.0f s; nodes show their subnet.env until then", timeout)
        return self

    def facts(self) -> LabFacts:
        return lab_facts(self.st, self.netconf, [lease_fact(le) for le in self.informer.snapshot().values()])

    def close(self) -> None:
        self.informer.stop()
        self.store.close()


def read_facts(st: LabState) -> LabFacts:
    """The facts once (the snapshot command needs no informer)."""
    store = open_store(st.store_url)
    try:
        kv = store.get(keys.NETWORK_CONFIG)
        netconf = json.loads(kv.value) if kv else {}
        leases = []
        for item in store.list(keys.SUBNETS_PREFIX).items:
            try:
                leases.append(lease_fact(decode_lease_kv(item.key, item.value)))
            except ValueError:
                continue
    finally:
        store.close()
    return lab_facts(st, netconf if isinstance(netconf, dict) else {}, leases)
