"""The overlay daemon (flanneld's job on one node). Runs inside the node's network namespace.

Start-up follows flanneld's order, and everything that can be refused is checked before anything is
changed, so a bad net-conf or interface leaves the node exactly as it was:

  1. net-conf from the store (wait while missing; invalid -> refuse)      2. external interface
  3. backend: create + register (device; BackendData)                       4. lease: acquire (reuse first)
  5. backend.configure(lease)     6. FLANNEL-POSTRTG / FLANNEL-FWD rules     7. subnet.env (atomic)
  8. list + watch the other leases -> backend.add_remote / remove_remote    9. renew before expiry

Threads: the lease watch (feeds the backend), the renewer, and a resync loop (rules and backend entries
someone deleted come back). SIGTERM stops them and leaves devices, routes, rules and the lease in place:
a restart finds its lease by PublicIP, reuses the device, and so changes nothing on the wire. Losing our
lease (revoked, expired, taken over) stops the daemon with an error, like flanneld's "Lease has been
revoked. Shutting down daemon.": peers have already dropped our routes, so carrying on would blackhole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podnet.errors import PodnetError, Problem, ValidationError
from podnet.overlay import masq, netconf, subnetenv
from podnet.overlay.health import HealthServer, OverlayMetrics
from podnet.overlay.lease import Lease, LeaseEvent
from podnet.overlay.netconf import ConfigNotFound, NetConf, load_netconf
from podnet.overlay.storesubnet import (
    RENEW_MARGIN,
    SUBNET_TTL,
    LeaseLost,
    LeaseRenewer,
    LeaseWatch,
    SubnetManager,
    choose_subnet,
)
from podnet.store import Store

log = logging.getLogger(__name__)


@dataclass
class DaemonOptions:
    node: str
    iface: str | None = None
    public_ip: str | None = None
    public_ipv6: str | None = None  # flannel's --public-ipv6 (default: the interface's global IPv6 address)
    ip_masq: bool = False
    subnet_file: str = subnetenv.DEFAULT_PATH
    lease_ttl: float = SUBNET_TTL
    renew_margin: float = RENEW_MARGIN
    resync_period: float = 5.0  # flannel's --iptables-resync
    forward_rules: bool = True  # flannel's --iptables-forward-rules
    netns: str | None = None  # run kernel work in this namespace (tests); the daemon itself leaves it None
    healthz_ip: str = "0.0.0.0"  # flannel's --healthz-ip
    healthz_port: int = 0  # flannel's --healthz-port: 0 = no endpoint
    # flannel's --kube-subnet-mgr: lease = our Node's podCIDR, peers = annotated Nodes (overlay/kubesubnet.py),
    # net-conf from a file (the kube-flannel-cfg ConfigMap mounted there) instead of the store.
    kube_subnet_mgr: bool = False
    net_config_path: str = "/etc/kube-flannel/net-conf.json"
    annotation_prefix: str = "flannel.alpha.coreos.com"


class OverlayDaemon:
    def __init__(
        self, store: Store | None, opts: DaemonOptions, *,
        source: Any = None,
        backend_factory: Callable[..., Any] | None = None,
        interface_lookup: Callable[[str | None, str | None], Any] | None = None,
        rules_factory: Callable[[list[masq.TableRules]], Any] | None = None,
    ) -> None:
        if not 0 < opts.renew_margin < opts.lease_ttl:
            raise ValidationError([Problem(
                "--renew-margin", opts.renew_margin, f"must be between 0 and the lease TTL ({opts.lease_ttl}s)")])
        self.store = store
        self.opts = opts
        self.source = source  # kube subnet manager mode: where Nodes come from (podnet.source)
        self.manager = SubnetManager(store, ttl=opts.lease_ttl) if store is not None else None  # None: kube mode
        self.kube: Any = None
        self._backend_factory = backend_factory
        self._interface_lookup = interface_lookup
        self._rules_factory = rules_factory or (lambda want: masq.MasqRules(want, netns=opts.netns))
        self.stopping = threading.Event()
        self.lost: LeaseLost | None = None
        self.failure: BaseException | None = None
        self.lease: Lease | None = None
        self.conf: NetConf | None = None
        self.backend: Any = None
        self.rules: masq.MasqRules | None = None
        self._watch: LeaseWatch | None = None
        self._renewer: LeaseRenewer | None = None
        self._threads: list[threading.Thread] = []
        self._backend_lock = threading.Lock()
        self.metrics = OverlayMetrics()
        self.health: HealthServer | None = None
        self._peers: set[object] = set()

    # ---- start-up -------------------------------------------------------------------------------

    def _store_mode(self) -> tuple[Store, SubnetManager]:
        """The store and its subnet manager: every mode but --kube-subnet-mgr needs them."""
        if self.store is None or self.manager is None:
            raise PodnetError("the overlay daemon needs a store unless it runs with --kube-subnet-mgr")
        return self.store, self.manager

    def wait_for_config(self, timeout: float | None = None) -> NetConf:
        """flanneld polls every second until the config exists; an invalid one is refused at once."""
        store, _ = self._store_mode()
        deadline = None if timeout is None else time.monotonic() + timeout
        announced = False
        while True:
            try:
                conf, _ = load_netconf(store)
                return conf
            except ConfigNotFound as e:
                if not announced:
                    log.warning("%s; waiting for it", e)
                    announced = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise PodnetError(str(e)) from e
                if self.stopping.wait(1.0):
                    raise PodnetError("stopped while waiting for the network config") from e

    @staticmethod
    def check_supported(conf: NetConf) -> None:
        netconf.check_supported(conf)

    def _lookup_interface(self, conf: NetConf) -> Any:
        """The external interface; with IPv6 enabled also its global IPv6 address and the public IPv6."""
        v6: dict[str, Any] = {}
        if conf.enable_ipv6:
            v6 = {"ipv6": True, "public_ipv6": self.opts.public_ipv6, "ipv4": conf.enable_ipv4}
        if self._interface_lookup is not None:
            return self._interface_lookup(self.opts.iface, self.opts.public_ip, **v6)
        from podnet.net import netns as nsmod
        from podnet.net.iface import lookup_external_interface

        with nsmod.ipr(self.opts.netns) as ipr:
            return lookup_external_interface(ipr, self.opts.iface, self.opts.public_ip, **v6)

    def _create_backend(self, conf: NetConf, ext: Any) -> Any:
        families = {"ipv4": conf.enable_ipv4, "ipv6": conf.enable_ipv6}
        if self._backend_factory is not None:
            return self._backend_factory(conf.backend_type, ext, conf.backend, netns=self.opts.netns, **families)
        from podnet.overlay.backends import create_backend

        return create_backend(conf.backend_type, ext, conf.backend, netns=self.opts.netns, **families)

    def _configure_and_publish(self, conf: NetConf, lease: Lease) -> None:
        """Steps 5-7: the backend's own side, the traffic rules of each family, subnet.env."""
        v4 = conf.enable_ipv4 and lease.has_v4
        if conf.enable_ipv6:
            self.backend.configure(lease, conf.network if v4 else None, conf.ipv6_network)
        else:
            self.backend.configure(lease, conf.network)
        self.rules = self._rules_factory(masq.desired(
            conf.network if v4 else None, lease.subnet if v4 else None, ip_masq=self.opts.ip_masq,
            forward=self.opts.forward_rules, network_v6=conf.ipv6_network if conf.enable_ipv6 else None,
            subnet_v6=lease.subnet_v6 if conf.enable_ipv6 else None))
        self.rules.sync()
        subnetenv.write(self.opts.subnet_file, subnetenv.SubnetEnv(
            network=conf.network if v4 else None, subnet=lease.subnet if v4 else None, mtu=self.backend.mtu,
            ipmasq=self.opts.ip_masq, ipv6_network=conf.ipv6_network if conf.enable_ipv6 else None,
            ipv6_subnet=lease.subnet_v6 if conf.enable_ipv6 else None))

    def start(self, config_timeout: float | None = None) -> Lease:
        """Steps 1-9. Returns our lease once subnet.env is written and the watch and renewal run."""
        if self.opts.kube_subnet_mgr:
            return self._start_kube(config_timeout)
        store, manager = self._store_mode()
        conf = self.wait_for_config(config_timeout)
        self.check_supported(conf)
        if self.opts.healthz_port:
            try:
                self.health = HealthServer(self.opts.healthz_ip, self.opts.healthz_port, self.metrics).start()
            except OSError as e:
                raise ValidationError([Problem("--healthz-port", self.opts.healthz_port,
                                               f"cannot listen on {self.opts.healthz_ip}: {e.strerror}")]) from e
        self.conf = conf
        previous = subnetenv.previous_subnet(self.opts.subnet_file)
        previous_v6 = subnetenv.previous_subnet_v6(self.opts.subnet_file)
        ext = self._lookup_interface(conf)
        public_ipv6 = getattr(ext, "public_ipv6", None)
        log.info("node %s: external interface %s (%s), public IP %s, public IPv6 %s, backend %s",
                 self.opts.node, ext.name, ext.address, ext.public_ip, public_ipv6, conf.backend_type)

        # Would acquisition fail (network full)? Find out before the backend creates any device.
        leases, _ = manager.list_leases()
        choose_subnet(conf, leases, ext.public_ip, previous, public_ipv6=public_ipv6, previous_v6=previous_v6)

        self.backend = self._create_backend(conf, ext)
        backend_data = self.backend.register()
        lease = manager.acquire(
            conf, ext.public_ip, backend_type=self.backend.backend_type, backend_data=backend_data,
            previous=previous, public_ipv6=public_ipv6,
            backend_v6_data=getattr(self.backend, "backend_v6_data", None), previous_v6=previous_v6,
        )
        self.lease = lease
        self._configure_and_publish(conf, lease)
        log.info("node %s: lease %s, wrote %s (MTU %d)", self.opts.node, lease.describe(), self.opts.subnet_file,
                 self.backend.mtu)
        self._lease_metrics(lease)
        if self.health is not None:
            self.health.ready.set()

        self._watch = LeaseWatch(store, lease, self._on_events, self._on_lost)
        self._renewer = LeaseRenewer(
            manager, lease, margin=self.opts.renew_margin, retry=min(60.0, self.opts.renew_margin / 4),
            on_renewed=self._renewed,
        )
        self._spawn("lease-watch", self._watch.run)
        self._spawn("lease-renew", self._renew)
        self._spawn("resync", self._resync_loop)
        return lease

    def _start_kube(self, node_timeout: float | None) -> Lease:
        """flanneld --kube-subnet-mgr's start: net-conf file, our Node's podCIDR, annotations, peers."""
        from pathlib import Path

        from podnet.overlay.kubesubnet import KubeSubnetManager
        from podnet.overlay.netconf import parse_netconf

        try:
            data = Path(self.opts.net_config_path).read_bytes()
        except OSError as e:
            raise ValidationError([Problem("--net-config-path", self.opts.net_config_path,
                                           f"cannot read: {e.strerror}")]) from e
        conf = parse_netconf(data)
        self.check_supported(conf)
        assert self.source is not None
        self.conf = conf
        self.kube = kube = KubeSubnetManager(self.source, self.opts.node, prefix=self.opts.annotation_prefix)
        kube.start()
        own = kube.wait_for_node(self.stopping, node_timeout, conf)
        public_ip = kube.public_ip(own, self.opts.public_ip)
        if public_ip != self.opts.public_ip:
            log.info("node %s: public IP %s from its node-public-ip annotation", self.opts.node, public_ip)
            self.opts.public_ip = public_ip
        if self.opts.healthz_port:
            try:
                self.health = HealthServer(self.opts.healthz_ip, self.opts.healthz_port, self.metrics).start()
            except OSError as e:
                raise ValidationError([Problem("--healthz-port", self.opts.healthz_port,
                                               f"cannot listen on {self.opts.healthz_ip}: {e.strerror}")]) from e
        public_ipv6 = kube.public_ipv6(own, self.opts.public_ipv6)
        if public_ipv6 != self.opts.public_ipv6:
            log.info("node %s: public IPv6 %s from its node-public-ipv6 annotation", self.opts.node, public_ipv6)
            self.opts.public_ipv6 = public_ipv6
        ext = self._lookup_interface(conf)
        log.info("node %s: external interface %s (%s), public IP %s, backend %s, subnets from %s",
                 self.opts.node, ext.name, ext.address, ext.public_ip, conf.backend_type, self.source.describe())
        self.backend = self._create_backend(conf, ext)
        backend_data = self.backend.register()
        lease = kube.acquire(conf, own, ext.public_ip, backend_type=self.backend.backend_type,
                             backend_data=backend_data, public_ipv6=getattr(ext, "public_ipv6", None),
                             backend_v6_data=getattr(self.backend, "backend_v6_data", None))
        self.lease = lease
        self._configure_and_publish(conf, lease)
        log.info("node %s: lease %s (spec.podCIDRs), wrote %s (MTU %d)", self.opts.node, lease.describe(),
                 self.opts.subnet_file, self.backend.mtu)
        if self.health is not None:
            self.health.ready.set()

        def own_changed(node: Any) -> None:
            from podnet.overlay.kubesubnet import NodeLeaseError, pod_cidrs

            try:
                now = pod_cidrs(node, conf)
            except NodeLeaseError:
                now = None
            if now != lease.ident:
                self._on_lost(LeaseLost(f"node {self.opts.node}: spec.podCIDRs are now {now}, not our lease "
                                        f"{lease.describe()}"))

        kube.on_own = own_changed
        kube.watch(self._on_events)
        kube.mark_network_available()
        self._spawn("resync", self._resync_loop)
        return lease

    def _spawn(self, name: str, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except LeaseLost as e:
                self._on_lost(e)
            except BaseException as e:  # a dead worker must stop the daemon, not leave it half-working
                log.exception("%s failed", name)
                self.failure = e
                self.stopping.set()

        t = threading.Thread(target=guarded, name=f"overlay-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    # ---- running --------------------------------------------------------------------------------

    def _lease_metrics(self, lease: Lease) -> None:
        self.metrics.lease_expiration.set(lease.expiration or 0)

    def _renewed(self, lease: Lease) -> None:
        self.metrics.renewals.inc()
        self._lease_metrics(lease)

    def _on_events(self, events: list[LeaseEvent]) -> None:
        with self._backend_lock:
            for ev in events:
                self.metrics.peer_events.labels(ev.type).inc()
                if ev.type == "added":
                    self._peers.add(ev.lease.ident)
                else:
                    self._peers.discard(ev.lease.ident)
                self.metrics.peers.set(len(self._peers))
                try:
                    if ev.type == "added":
                        log.info("peer lease %s added (PublicIP %s, PublicIPv6 %s)", ev.lease.describe(),
                                 ev.lease.public_ip, ev.lease.public_ipv6)
                        self.backend.add_remote(ev.lease)
                    else:
                        log.info("peer lease %s removed (PublicIP %s)", ev.lease.describe(), ev.lease.public_ip)
                        self.backend.remove_remote(ev.lease)
                except Exception:  # one peer's failure must not stop the others
                    log.exception("backend failed on %s of %s", ev.type, ev.lease.describe())

    def _on_lost(self, err: LeaseLost) -> None:
        if self.stopping.is_set():
            return
        log.error("%s. Shutting down daemon.", err)
        self.lost = err
        self.stopping.set()

    def _renew(self) -> None:
        assert self._renewer is not None
        self._renewer.run()

    def _resync_loop(self) -> None:
        while not self.stopping.wait(self.opts.resync_period):
            try:
                if self.rules is not None and self.rules.sync():
                    self.metrics.rules_restored.inc()
                    log.warning("traffic rules had drifted; restored")
            except PodnetError as e:
                log.warning("traffic rules check failed: %s", e)
            with self._backend_lock:
                try:
                    resync = getattr(self.backend, "resync", None)
                    if resync is not None:
                        resync()
                except Exception:
                    log.exception("backend resync failed")

    def wait(self) -> int:
        """Block until stopped. Exit code: 0 after stop(), 1 when the lease was lost or a worker failed."""
        while not self.stopping.wait(1.0):  # a timed wait keeps signal handlers running promptly
            pass
        self.shutdown()
        return 1 if (self.lost is not None or self.failure is not None) else 0

    def stop(self) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        """Stop the workers and release the backend; kernel state, rules and the lease stay."""
        self.stopping.set()
        if self._watch is not None:
            self._watch.stop()
        if self._renewer is not None:
            self._renewer.stop()
        if self.kube is not None:
            self.kube.stop()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        self._threads.clear()
        if self.health is not None:
            self.health.close()
            self.health = None
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:
                log.exception("backend close failed")
            self.backend = None


__all__ = ["DaemonOptions", "OverlayDaemon"]
