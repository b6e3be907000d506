"""The proxy daemon's sync loop: store -> desired state -> rules, NodePort sockets, conntrack, metrics.

Tracking is apart from realising (as in kube-proxy): informer handlers only record which services changed
("ns/name"); the loop recomputes those services' ports, asks the backend to sync, then holds NodePorts and
cleans UDP conntrack. A full sync runs at start, every syncPeriod, when node facts change and after any
failure; otherwise changes go out as partial syncs that touch only the changed services, so a one-service
change costs the same at 10 or 10,000 services. minSyncPeriod (default 0) bounds how often syncs run.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from podnet.proxy.config import HostFacts, KubeProxyConfiguration, ProxierSettings, resolve_settings
from podnet.proxy.conntrack import ConntrackCleaner, UdpServicePort
from podnet.proxy.healthcheck import (
    HTTPListener,
    Opener,
    ProxyHealth,
    ServiceHealthServer,
    health_check_ports,
    local_ready_endpoints,
)
from podnet.proxy.metrics import ProxyMetrics
from podnet.proxy.nodeports import PortHolder, local_ports
from podnet.proxy.restore import RestoreError, Restorer, Runner
from podnet.proxy.state import (
    IPV4,
    DesiredState,
    ParsedService,
    ParsedSlice,
    ServicePort,
    ServicePortName,
    build_desired_state,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from podnet.source.base import Selector, Source
from podnet.store import Store
from podnet.store.informer import Informer

log = logging.getLogger(__name__)

LARGE_CLUSTER_ENDPOINTS = 1000  # kube-proxy's largeClusterEndpointsThreshold (per-endpoint comments dropped)
TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
# kube-proxy's informers skip Services (and their EndpointSlices) that another proxy implements, and
# headless ones (the EndpointSlice controller labels their slices): a server-side label selector there,
# the same selector evaluated by the store source here.
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
PROXY_SELECTOR = Selector(absent=(SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL))


# --------------------------------------------------------------------------------------------------------
# Backends: how rules reach the kernel (iptables now; nftables plugs in the same way)


class Backend(Protocol):
    mode: str

    @property
    def needs_full(self) -> bool: ...

    def full_sync(self, desired: DesiredState, settings: ProxierSettings) -> dict[str, int]:
        """Rewrite everything; returns rules written per table. Raises on failure (kernel keeps old rules)."""
        ...

    def partial_sync(self, old: DesiredState, new: DesiredState, settings: ProxierSettings,
                     large_cluster: bool) -> dict[str, int]:
        """Move the given services from `old` (as last applied) to `new`. Raises on failure."""
        ...

    def rules_total(self) -> dict[str, int]: ...


class IptablesBackend:
    """kube-proxy's rules (proxy/iptables.py) loaded by proxy/restore.py."""

    mode = "iptables"

    def __init__(self, restorer: Restorer | None = None) -> None:
        self.restorer = restorer or Restorer()

    @property
    def needs_full(self) -> bool:
        return self.restorer.needs_full

    def full_sync(self, desired: DesiredState, settings: ProxierSettings) -> dict[str, int]:
        from podnet.proxy.iptables import render

        # Stale chains are found in the kernel by the restorer (it survives restarts), not from memory.
        text = render(desired, settings, full=True, cleanup_stale=False).text
        return self.restorer.sync(text, full=True).written

    def partial_sync(self, old: DesiredState, new: DesiredState, settings: ProxierSettings,
                     large_cluster: bool) -> dict[str, int]:
        from podnet.proxy.iptables import render

        r_old = render(old, settings, full=True, cleanup_stale=False, large_cluster=large_cluster)
        r_new = render(new, settings, full=True, cleanup_stale=False, large_cluster=large_cluster)
        gone = sorted(r_old.active_nat_chains - r_new.active_nat_chains)
        return self.restorer.sync_delta(r_old.text, r_new.text, gone).written

    def rules_total(self) -> dict[str, int]:
        applied = self.restorer.applied or {}
        return {t: sum(len(r) for r in chains.values()) for t, chains in applied.items()}


def make_backend(mode: str, runner: Runner) -> Backend:
    """The backend of a proxy mode ("" means iptables, as kube-proxy on Linux)."""
    if mode in ("", "iptables"):
        return IptablesBackend(Restorer(runner))
    if mode == "nftables":
        try:
            from podnet.proxy.nft_backend import NftablesBackend  # type: ignore[import-not-found]
        except ImportError:
            raise ValueError("mode: 'nftables': the nftables backend is not available yet") from None
        return NftablesBackend(runner)  # type: ignore[no-any-return]
    raise ValueError(f"mode: {mode!r}: podnet supports iptables (and nftables)")


# --------------------------------------------------------------------------------------------------------
# Host facts


def detect_node_ips(exclude_loopback: bool = True) -> list[str]:
    """IPv4 addresses of this namespace's interfaces (the proxy runs inside the node's namespace).

    Through net/rtnl.py, not pyroute2: this runs before the first sync of a (re)started proxy, and
    importing pyroute2 would add ~0.1 s to every restart for one address dump.
    """
    import socket

    from podnet.net.rtnl import Rtnl

    with Rtnl() as nl:
        return [a.address for a in nl.addrs(family=socket.AF_INET)
                if not (exclude_loopback and a.address.startswith("127."))]


def detect_random_fully(runner: Runner) -> bool:
    """kube-proxy's rule: MASQUERADE --random-fully is used when iptables is 1.6.2 or newer."""
    try:
        out = runner.run(["iptables", "--version"], timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return bool(m) and tuple(int(x) for x in m.groups()) >= (1, 6, 2)  # type: ignore[union-attr]


NFACCT_COUNTERS = ("ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts")


def _nfacct_new(name: str) -> int:
    """Create an nfacct counter over nfnetlink (NFNL_SUBSYS_ACCT); returns 0 or the kernel's errno."""
    import errno
    import socket
    import struct

    netlink_netfilter, subsys_acct, msg_new, attr_name = 12, 7, 0, 1
    flags = 0x1 | 0x4 | 0x400  # NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
    data = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(data), attr_name) + data
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0) + attr
    msg = struct.pack("=IHHII", 16 + len(body), (subsys_acct << 8) | msg_new, flags, 1, 0) + body
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_netfilter) as sk:
            sk.settimeout(2)
            sk.send(msg)
            reply = sk.recv(4096)
    except OSError as e:
        return e.errno or errno.EIO
    if len(reply) >= 20 and struct.unpack_from("=H", reply, 4)[0] == 2:  # NLMSG_ERROR
        code = -struct.unpack_from("=i", reply, 16)[0]
        return 0 if code in (0, errno.EEXIST, errno.EBUSY) else code
    return 0


def detect_nfacct(runner: Runner) -> bool:
    """Whether kube-proxy's nfacct counters can be used: create them (as kube-proxy does) and check that a rule
    matching one loads. Kernels without nfnetlink_acct or xt_nfacct answer False, never a broken rule."""
    if any(_nfacct_new(name) != 0 for name in NFACCT_COUNTERS):
        return False
    probe = "PODNET-NFACCT-PROBE"
    ok = runner.run(["iptables-restore", "-w", "5", "--noflush"], timeout=30, input=(
        f"*filter\n:{probe} - [0:0]\n-A {probe} -m nfacct --nfacct-name {NFACCT_COUNTERS[0]}\nCOMMIT\n"
    )).returncode == 0
    runner.run(["iptables-restore", "-w", "5", "--noflush"], timeout=30,
               input=f"*filter\n:{probe} - [0:0]\n-X {probe}\nCOMMIT\n")
    return ok


# --------------------------------------------------------------------------------------------------------
# The proxier


@dataclass
class _Tracked:
    """What the informers have delivered, indexed for per-service recomputation."""

    services: dict[str, ParsedService] = field(default_factory=dict)  # "ns/name" -> parsed
    service_keys: dict[str, str] = field(default_factory=dict)  # store key -> "ns/name"
    slices: dict[str, ParsedSlice] = field(default_factory=dict)  # store key -> parsed
    slices_by_service: dict[str, set[str]] = field(default_factory=dict)  # "ns/name" -> slice keys
    node_zone: str = ""
    node_pod_cidrs: tuple[str, ...] = ()


class Proxier:
    def __init__(
        self,
        store: Source | Store,  # a source (podnet.source), or a Store, read through the store source
        node_name: str,
        config: KubeProxyConfiguration | None = None,
        *,
        backend: Backend | None = None,
        runner: Runner | None = None,
        metrics: ProxyMetrics | None = None,
        port_holder: PortHolder | None = None,
        conntrack: ConntrackCleaner | None = None,
        facts: HostFacts | None = None,
        health_listener: Opener | None = None,
    ) -> None:
        if not hasattr(store, "informer"):  # a Store: the daemon's source before sources existed
            from podnet.source.store import StoreSource

            store = StoreSource(store)  # type: ignore[arg-type]
        self.source: Source = store  # type: ignore[assignment]
        self.node_name = node_name
        self.config = config or KubeProxyConfiguration()
        self.runner = runner or Runner()
        self.backend: Backend = backend or IptablesBackend(Restorer(self.runner))
        # nftables mode: a backend may change config defaults (NodePorts on the primary IP only).
        adjust = getattr(self.backend, "adjust_config", None)
        if adjust is not None:
            self.config = adjust(self.config)
        self.metrics = metrics or ProxyMetrics()
        self.health = ProxyHealth(self.config.effective_sync_period)
        # healthCheckNodePort listeners; tests give a fake opener (nothing listens in the root namespace)
        self.service_health = ServiceHealthServer(self.health, health_listener or HTTPListener)
        self.ports_holder = port_holder or PortHolder()
        self.conntrack = conntrack or ConntrackCleaner(self.runner)
        self.sync_period = self.config.effective_sync_period
        self.min_sync_period = self.config.effective_min_sync_period
        self._fixed_facts = facts
        self._facts: HostFacts | None = None
        self._settings: ProxierSettings | None = None

        self._cond = threading.Condition()
        self._tracked = _Tracked()
        self._dirty: dict[str, float] = {}  # "ns/name" -> time of the change that made it dirty
        self._node_changed = True
        self._stop = threading.Event()

        # state of the sync loop (its thread only)
        self._ports: dict[ServicePortName, ServicePort] = {}
        self._ports_by_service: dict[str, list[ServicePortName]] = {}
        self._applied: dict[ServicePortName, ServicePort] = {}
        self._applied_by_service: dict[str, list[ServicePortName]] = {}
        self._next_full = 0.0
        self._retry_at: float | None = None
        self._backoff = 1.0
        self._last_sync_start = -1e9
        self._large = False
        self.syncs = {"full": 0, "partial": 0, "failed": 0}
        self._hc_failed: dict[str, int] = {}  # healthcheck listeners that could not open -> their port
        self._informers: list[Informer[Any]] = []

    # ---- informer side ------------------------------------------------------------------------------

    def _decode_service(self, doc: dict[str, Any]) -> tuple[str, ParsedService]:
        try:
            svc = parse_service(doc, IPV4)
            return svc.namespaced_name, svc
        except Exception:
            self.metrics.invalid_objects.labels("Service").inc()
            raise

    def _decode_slice(self, doc: dict[str, Any]) -> tuple[str, ParsedSlice, float | None]:
        try:
            sl = parse_endpoint_slice(doc)
            return f"{sl.namespace}/{sl.name}", sl, _trigger_time(doc)
        except Exception:
            self.metrics.invalid_objects.labels("EndpointSlice").inc()
            raise

    def _on_service(self, kind: str, old: tuple[str, ParsedService] | None,
                    new: tuple[str, ParsedService] | None) -> None:
        now = time.time()
        with self._cond:
            t = self._tracked
            if old is not None:
                name = t.service_keys.pop(old[0], None)
                if name is not None:
                    t.services.pop(name, None)
                    self._dirty.setdefault(name, now)
            if new is not None:
                key, svc = new
                t.service_keys[key] = svc.namespaced_name
                t.services[svc.namespaced_name] = svc
                self._dirty.setdefault(svc.namespaced_name, now)
            self.health.queued()
            self.metrics.last_queued.set(now)
            self._cond.notify_all()

    def _on_slice(self, kind: str, old: tuple[str, ParsedSlice, float | None] | None,
                  new: tuple[str, ParsedSlice, float | None] | None) -> None:
        now = time.time()
        with self._cond:
            t = self._tracked
            if old is not None:
                key, sl, _ = old
                prev = t.slices.pop(key, None)
                if prev is not None:
                    name = f"{prev.namespace}/{prev.service}"
                    t.slices_by_service.get(name, set()).discard(key)
                    self._dirty.setdefault(name, now)
            if new is not None:
                key, sl, trigger = new
                name = f"{sl.namespace}/{sl.service}"
                t.slices[key] = sl
                t.slices_by_service.setdefault(name, set()).add(key)
                self._dirty[name] = min(self._dirty.get(name, now), trigger or now)
            self.health.queued()
            self.metrics.last_queued.set(now)
            self._cond.notify_all()

    def _on_node(self, kind: str, old: Any, new: Any) -> None:
        obj = new if new is not None else None
        name, zone, cidrs = parse_node(obj) if obj is not None else ("", "", ())
        if obj is not None and name != self.node_name:
            return
        if obj is None and old is not None and parse_node(old)[0] != self.node_name:
            return
        self.health.sync_node(obj)  # /healthz: is this node being deleted or drained?
        with self._cond:
            if (zone, tuple(cidrs)) != (self._tracked.node_zone, self._tracked.node_pod_cidrs):
                self._tracked.node_zone, self._tracked.node_pod_cidrs = zone, tuple(cidrs)
                self._node_changed = True
                self._cond.notify_all()

    def start_informers(self) -> None:
        src = self.source
        svc = src.informer("Service", self._decode_service, self._on_service, selector=PROXY_SELECTOR,
                           name="proxy services")
        sl = src.informer("EndpointSlice", self._decode_slice, self._on_slice, selector=PROXY_SELECTOR,
                          name="proxy endpointslices")
        node = src.informer("Node", dict, self._on_node, selector=Selector(fields={"metadata.name": self.node_name}),
                            name="proxy nodes")
        self._informers = [svc, sl, node]
        for inf in self._informers:
            inf.start()
        for inf in self._informers:
            while not inf.wait_synced(5):
                if self._stop.is_set():
                    return
                log.warning("%s: waiting for the first list from the %s", inf.name, self.source.describe())

    # ---- sync loop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        for inf in self._informers:
            inf.stop()
        self.ports_holder.close()
        self.service_health.close()

    def run(self) -> None:
        """Sync until stop(). Starts the informers first; the first sync is a full one."""
        self.start_informers()
        while not self._stop.is_set():
            work = self._wait_for_work()
            if work is None:
                return
            full, dirty = work
            try:
                self.sync(full=full, dirty=dirty)
            except Exception as e:  # noqa: BLE001 - a bug in one sync must not take the node's proxy down
                log.exception("sync crashed; retrying with a full sync")
                self._failed(e, full=True, dirty=dirty)

    def _wait_for_work(self) -> tuple[bool, dict[str, float]] | None:
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                due_full = now >= self._next_full or self._node_changed
                retrying = self._retry_at is not None
                if retrying and now >= self._retry_at:  # type: ignore[operator]
                    due_full = True
                pending = bool(self._dirty) and not retrying
                earliest = self._last_sync_start + self.min_sync_period
                if (due_full or pending) and now >= earliest:
                    dirty, self._dirty = self._dirty, {}
                    node_changed, self._node_changed = self._node_changed, False
                    return due_full or node_changed or self.backend.needs_full, dirty
                wake = self._next_full
                if retrying:
                    wake = min(wake, self._retry_at)  # type: ignore[type-var]
                if due_full or pending:
                    wake = min(wake, earliest)
                self._cond.wait(timeout=max(0.01, min(wake - now, 60.0)))
        return None

    def _current_settings(self, refresh: bool) -> ProxierSettings:
        if refresh or self._settings is None:
            facts = self._fixed_facts or HostFacts(
                nodeName=self.node_name,
                nodeIPs=detect_node_ips(),
                nfacct=detect_nfacct(self.runner),
                randomFully=detect_random_fully(self.runner),
            )
            self._facts = facts
            with self._cond:
                cidrs = self._tracked.node_pod_cidrs
            self._settings = resolve_settings(self.config, facts, ip_family=IPV4, node_pod_cidrs=cidrs)
        return self._settings

    def _recompute(self, names: Iterable[str]) -> None:
        """Rebuild the service ports of these services from what the informers hold."""
        with self._cond:
            t = self._tracked
            inputs = {
                n: (t.services.get(n), [t.slices[k] for k in t.slices_by_service.get(n, ()) if k in t.slices])
                for n in names
            }
            zone, cidrs = t.node_zone, t.node_pod_cidrs
        for name, (svc, slices) in inputs.items():
            for spn in self._ports_by_service.pop(name, ()):
                self._ports.pop(spn, None)
            if svc is None:
                continue
            st = build_desired_state([svc], slices, self.node_name, ip_family=IPV4, topology_zone=zone,
                                     node_pod_cidrs=cidrs)
            self._ports.update(st.services)
            self._ports_by_service[name] = list(st.services)

    def _state(self, ports: dict[ServicePortName, ServicePort], *, ordered: bool) -> DesiredState:
        with self._cond:
            zone, cidrs = self._tracked.node_zone, self._tracked.node_pod_cidrs
        if ordered:
            ports = {k: ports[k] for k in sorted(ports, key=lambda n: (str(n), n.protocol))}
        return DesiredState(node_name=self.node_name, ip_family=IPV4, services=ports, topology_zone=zone,
                            node_pod_cidrs=cidrs)

    def sync(self, *, full: bool, dirty: dict[str, float] | None = None) -> bool:
        """One sync. Returns True on success; on failure schedules a retry (full)."""
        dirty = dirty or {}
        start = time.monotonic()
        self._last_sync_start = start
        if full:
            with self._cond:
                names = set(self._tracked.services) | set(self._tracked.slices_by_service) | set(self._ports_by_service)
            self._recompute(names | set(dirty))
        else:
            self._recompute(dirty)
        settings = self._current_settings(refresh=full)
        try:
            if full or self.backend.needs_full:
                full = True
                self._large = sum(len(sp.endpoints) for sp in self._ports.values()) > LARGE_CLUSTER_ENDPOINTS
                written = self.backend.full_sync(self._state(self._ports, ordered=True), settings)
                self._applied = dict(self._ports)
                self._applied_by_service = {k: list(v) for k, v in self._ports_by_service.items()}
            else:
                old = {spn: self._applied[spn] for n in dirty for spn in self._applied_by_service.get(n, ())}
                new = {spn: self._ports[spn] for n in dirty for spn in self._ports_by_service.get(n, ())}
                large = sum(len(sp.endpoints) for sp in self._ports.values()) > LARGE_CLUSTER_ENDPOINTS
                if large != self._large:
                    # every SEP/SVC chain's comments change with largeClusterMode: rewrite them all
                    self._large = large
                    return self.sync(full=True, dirty=dirty)
                written = {}
                if old != new:
                    written = self.backend.partial_sync(self._state(old, ordered=False),
                                                        self._state(new, ordered=False), settings, large)
                for n in dirty:
                    for spn in self._applied_by_service.pop(n, ()):
                        self._applied.pop(spn, None)
                    for spn in self._ports_by_service.get(n, ()):
                        self._applied[spn] = self._ports[spn]
                    if n in self._ports_by_service:
                        self._applied_by_service[n] = list(self._ports_by_service[n])
        except (RestoreError, OSError, ValueError) as e:
            return self._failed(e, full=full, dirty=dirty)
        elapsed = time.monotonic() - start
        for table, n in (written or {}).items():
            self.metrics.iptables_last.labels(table).set(n)
        self._succeeded(full, dirty, elapsed, settings)
        return True

    def _failed(self, e: Exception, *, full: bool, dirty: dict[str, float]) -> bool:
        self.syncs["failed"] += 1
        with self._cond:
            for n, t in dirty.items():
                self._dirty[n] = min(self._dirty.get(n, t), t)
            if not full:
                # kube-proxy: a failed partial restore is followed by a full one (right away here).
                self.metrics.partial_restore_failures.inc()
                log.error("partial sync failed, falling back to a full sync: %s", e)
                self._node_changed = True  # forces the next sync to be full
                self._retry_at = None
            else:
                self.metrics.restore_failures.inc()
                self._retry_at = time.monotonic() + self._backoff
                log.error("full sync failed (previous rules stay in place), retrying in %.0fs: %s",
                          self._backoff, e)
                self._backoff = min(self._backoff * 2, max(self.sync_period, 1.0))
            self._cond.notify_all()
        return False

    def _succeeded(self, full: bool, dirty: dict[str, float], elapsed: float, settings: ProxierSettings) -> None:
        now = time.time()
        self.syncs["full" if full else "partial"] += 1
        if full:
            self._next_full = time.monotonic() + self.sync_period
        self._retry_at = None
        self._backoff = 1.0
        m = self.metrics
        m.sync_duration.observe(elapsed)
        (m.sync_full_duration if full else m.sync_partial_duration).observe(elapsed)
        m.last_sync.set(now)
        for table, n in self.backend.rules_total().items():
            m.iptables_total.labels(table).set(n)
        for t in dirty.values():
            m.programming.observe(max(0.0, now - t))
        self.health.updated()
        log.info("%s sync of %d service ports took %.3fs", "full" if full else "partial", len(self._ports), elapsed)
        self._hold_node_ports(settings)
        self._sync_service_health(settings)
        self._clean_conntrack()

    def _hold_node_ports(self, settings: ProxierSettings) -> None:
        if settings.node_ports_match_all:
            ips = settings.node_ips
        else:
            ips = tuple(ip for ip in settings.node_port_ips() if not ip.startswith("127."))
        wanted = local_ports(ips, {(sp.node_port, sp.protocol) for sp in self._ports.values()
                                   if sp.node_port and sp.protocol in ("TCP", "UDP")})
        self.ports_holder.sync(wanted)

    def _sync_service_health(self, settings: ProxierSettings) -> None:
        """healthCheckNodePort listeners where NodePorts listen: everywhere, or on the nodePortAddresses."""
        ips = ("0.0.0.0",) if settings.node_ports_match_all else settings.node_port_ips()
        ports = list(self._ports.values())
        wanted = health_check_ports(ports)
        failed = self.service_health.sync_services(wanted, ips)
        for nsn, err in failed.items():
            if self._hc_failed.get(nsn) != wanted[nsn]:  # one event per failure, not one per sync
                self._health_check_failed(nsn, wanted[nsn], err)
        self._hc_failed = {nsn: wanted[nsn] for nsn in failed}
        self.service_health.sync_endpoints(local_ready_endpoints(ports))

    def _health_check_failed(self, nsn: str, port: int, err: OSError) -> None:
        """kube-proxy's FailedToStartServiceHealthcheck event on the Service (retried at the next sync)."""
        from podnet.api.service import Service
        from podnet.controllers.events import record

        ns, _, name = nsn.partition("/")
        svc = Service.model_validate({"metadata": {"name": name, "namespace": ns}})
        record(self.store, svc, "FailedToStartServiceHealthcheck",
               f"node {self.node_name} failed to start healthcheck \"{nsn}\" on port {port}: {err}",
               type="Warning", component="kube-proxy", host=self.node_name)

    def _clean_conntrack(self) -> None:
        udp = [
            UdpServicePort(
                ips=[sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips],
                port=sp.port,
                node_port=sp.node_port,
                serving={ep.ip for ep in sp.endpoints if ep.serving},
            )
            for sp in self._ports.values()
            if sp.protocol == "UDP"
        ]
        if not udp:
            return
        start = time.monotonic()
        try:
            self.conntrack.cleanup(udp)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("conntrack cleanup failed: %s", e)
        self.metrics.conntrack_duration.observe(time.monotonic() - start)


def _trigger_time(d: dict[str, Any]) -> float | None:
    ann = ((d.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_ANNOTATION)
    if not ann:
        return None
    try:
        return datetime.fromisoformat(str(ann).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
