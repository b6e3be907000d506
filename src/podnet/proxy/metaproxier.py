"""A dual-stack node's proxy: one Proxier per IP family, as kube-proxy's metaproxier.

kube-proxy runs dual-stack when the node has addresses of both families, and otherwise a single proxier of
the primary family. Each family's proxier has its own change tracker, sync runner, backend (iptables or
ip6tables; nft table `ip podnet` or `ip6 podnet`), NodePort sockets and conntrack cleaner. Every proxier sees
every Service (it takes the clusterIPs, externalIPs and load-balancer IPs of its family) and the
EndpointSlices of its addressType, from one set of informers (`SharedInformers`: one watch per kind for the
node, whatever its families; a Service is decoded once per family, a slice once and handed to the proxier of
its addressType, the Node to all). They share one metrics registry and one
ProxyHealth (/healthz), and only the primary family's proxier serves healthCheckNodePorts: those listen on
the node once, not once per family.

The primary family is the family of a specific bindAddress, else of the first clusterCIDR entry (the lab
and kubeadm list the cluster's primary family first), else IPv4 when the node has IPv4 addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from podnet.api.defaults import IPV4, IPV6
from podnet.api.ipaddr import parse_cidr
from podnet.errors import Problem, ValidationError
from podnet.proxy.backend import Backend
from podnet.proxy.config import HostFacts, KubeProxyConfiguration
from podnet.proxy.healthcheck import Opener, ProxyHealth
from podnet.proxy.informers import SliceChange, start_informers
from podnet.proxy.iptables.restore import Runner
from podnet.proxy.metrics import ProxyMetrics
from podnet.proxy.proxier import Proxier, _is_source
from podnet.proxy.tracker import ParsedService, parse_service
from podnet.source.base import Source
from podnet.store import Store
from podnet.store.informer import Informer

log = logging.getLogger(__name__)


def family_of(ip: str) -> str:
    return IPV6 if ipaddress.ip_address(ip).version == 6 else IPV4


def primary_family(config: KubeProxyConfiguration, node_ips: Sequence[str]) -> str:
    """The family the node's single-stack proxy uses, and the one serving healthCheckNodePorts."""
    bind = config.bind_address.strip()
    if bind and bind not in ("0.0.0.0", "::"):
        try:
            return family_of(bind)
        except ValueError:
            pass
    first = next(filter(None, (p.strip() for p in config.cluster_cidr.split(","))), "")
    net = parse_cidr(first) if first else None
    if net is not None:
        return IPV6 if net.version == 6 else IPV4
    have = {family_of(ip) for ip in node_ips}
    return IPV4 if IPV4 in have or not have else IPV6


def node_families(config: KubeProxyConfiguration, node_ips: Sequence[str]) -> list[str]:
    """The families this node proxies, primary first: both when it has addresses of both, as kube-proxy."""
    primary = primary_family(config, node_ips)
    have = {family_of(ip) for ip in node_ips}
    other = IPV6 if primary == IPV4 else IPV4
    return [primary, other] if {IPV4, IPV6} <= have else [primary]


class SharedInformers:
    """One Service, EndpointSlice and Node informer for every family's proxier (kube-proxy's metaproxier
    receives the events once and dispatches them). A Service any family cannot decode is skipped whole."""

    def __init__(self, source: Source, node_name: str, proxiers: Mapping[str, Proxier], metrics: ProxyMetrics) -> None:
        self.source = source
        self.node_name = node_name
        self.proxiers = proxiers
        self.metrics = metrics
        self._informers: list[Informer[Any]] = []

    def decode_service(self, doc: dict[str, Any]) -> dict[str, tuple[str, ParsedService]]:
        try:
            parsed = {fam: parse_service(doc, fam) for fam in self.proxiers}
        except Exception:
            self.metrics.invalid_objects.labels("Service").inc()
            raise
        return {fam: (svc.namespaced_name, svc) for fam, svc in parsed.items()}

    def decode_slice(self, doc: dict[str, Any]) -> SliceChange:
        return next(iter(self.proxiers.values())).informers.decode_slice(doc)

    def on_service(self, kind: str, old: dict[str, tuple[str, ParsedService]] | None,
                   new: dict[str, tuple[str, ParsedService]] | None) -> None:
        for fam, p in self.proxiers.items():
            p.informers.on_service(kind, old[fam] if old else None, new[fam] if new else None)

    def on_slice(self, kind: str, old: SliceChange | None, new: SliceChange | None) -> None:
        change = new or old
        p = self.proxiers.get(change[1].address_type) if change else None
        if p is not None:  # an FQDN slice, or one of a family this node does not proxy: nobody's
            p.informers.on_slice(kind, old, new)

    def on_node(self, kind: str, old: Any, new: Any) -> None:
        for p in self.proxiers.values():
            p.informers.on_node(kind, old, new)

    def start(self, stopped: Callable[[], bool]) -> None:
        """Start the three informers and wait for their first lists (or until `stopped()`)."""
        self._informers = start_informers(self.source, self.node_name, self, stopped)

    def stop(self) -> None:
        for inf in self._informers:
            inf.stop()


class MetaProxier:
    """The proxiers of a node's families, started and stopped together."""

    def __init__(
        self,
        source: Source | Store,
        node_name: str,
        config: KubeProxyConfiguration,
        families: Sequence[str],
        *,
        backends: Mapping[str, Backend] | None = None,
        make_backend: Callable[[str], Backend] | None = None,
        runner: Runner | None = None,
        metrics: ProxyMetrics | None = None,
        facts: HostFacts | None = None,
        health_listener: Opener | None = None,
    ) -> None:
        if not families:
            raise ValidationError([Problem("families", [], "at least one IP family")])
        if not _is_source(source):  # one store source for every family's informers
            from podnet.source.store import StoreSource

            source = StoreSource(source)
        self.metrics = metrics or ProxyMetrics()
        self.health = ProxyHealth(config.effective_sync_period)
        self.families = list(families)
        self.proxiers: dict[str, Proxier] = {}
        for i, fam in enumerate(self.families):
            backend = (backends or {}).get(fam) or (make_backend(fam) if make_backend else None)
            self.proxiers[fam] = Proxier(
                source, node_name, config, backend=backend, runner=runner, metrics=self.metrics,
                ip_family=fam, health=self.health, serve_health_checks=i == 0, facts=facts,
                health_listener=health_listener,
            )
        self.informers = SharedInformers(source, node_name, self.proxiers, self.metrics)
        self._threads: list[threading.Thread] = []

    @property
    def primary(self) -> Proxier:
        return self.proxiers[self.families[0]]

    def run(self) -> None:
        """Sync every family until stop(): the secondary families in threads, the primary in this one."""
        log.info("proxying %s", " and ".join(self.families))
        self.informers.start(stopped=lambda: self.primary.sync_runner.stopped)
        for fam in self.families[1:]:
            t = threading.Thread(target=self.proxiers[fam].run, kwargs={"informers": False}, name=f"proxier-{fam}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        self.primary.run(informers=False)

    def stop(self) -> None:
        for p in self.proxiers.values():
            p.stop()

    def close(self) -> None:
        self.informers.stop()
        for p in self.proxiers.values():
            p.close()
        for t in self._threads:
            t.join(10)
