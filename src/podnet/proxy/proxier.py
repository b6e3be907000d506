"""The proxy daemon: informers -> change tracker -> bounded-frequency runner -> backend, then the side pieces.

Tracking is apart from realising (as in kube-proxy): the informers (proxy/informers.py) decode objects and tell
the tracker (proxy/tracker.py) which services changed; the runner (proxy/runner.py) decides when to sync; a
sync recomputes the changed services' ports, asks the backend to write them, then holds NodePorts
(proxy/nodeports.py), serves health checks (proxy/healthcheck.py), cleans UDP conntrack (proxy/conntrack.py)
and records metrics (proxy/metrics.py). This module only wires them.

A full sync runs at start, when node facts change and after any failure; otherwise changes go out as partial
syncs that touch only the changed services, so a one-service change costs the same at 10 or 10,000 services.
minSyncPeriod (default 0) bounds how often syncs run. Every syncPeriod the node facts are read again and, in
nftables mode, the table is rewritten whole (one atomic `nft -f`). In iptables mode a whole rewrite takes ~20 s
at 10k services, and a change arriving meanwhile would wait for it; there a thread of its own reads the kernel
every syncPeriod instead (the backend's check_drift) and a full sync follows only when the kernel no longer
holds what was applied.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from podnet.api.defaults import IPV4, IPV6
from podnet.errors import Problem, ValidationError
from podnet.proxy.backend import Backend, SyncError
from podnet.proxy.config import HostFacts, KubeProxyConfiguration
from podnet.proxy.conntrack import ConntrackCleaner, udp_service_ports
from podnet.proxy.healthcheck import (
    HealthCheckNodePorts,
    HTTPListener,
    Opener,
    ProxyHealth,
    ServiceHealthServer,
)
from podnet.proxy.hostfacts import detect
from podnet.proxy.informers import PROXY_SELECTOR, TRIGGER_ANNOTATION, ProxyInformers
from podnet.proxy.iptables.backend import IptablesBackend
from podnet.proxy.iptables.restore import Restorer, Runner
from podnet.proxy.metrics import ProxyMetrics
from podnet.proxy.nodeports import PortHolder, node_port_sockets
from podnet.proxy.runner import BoundedFrequencyRunner, Clock
from podnet.proxy.settings import ProxierSettings, resolve_settings
from podnet.proxy.tracker import ChangeTracker
from podnet.source.base import Source
from podnet.store import Store

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is 3.13; only mypy reads it here

__all__ = ["PROXY_SELECTOR", "TRIGGER_ANNOTATION", "Proxier"]

log = logging.getLogger(__name__)

LARGE_CLUSTER_ENDPOINTS = 1000  # kube-proxy's largeClusterEndpointsThreshold (per-endpoint comments dropped)


def _is_source(store: Source | Store) -> TypeIs[Source]:
    """Source and Store are both protocols (not runtime-checkable): a source is what has informer()."""
    return hasattr(store, "informer")


# --------------------------------------------------------------------------------------------------------
# The proxier


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
        clock: Clock | None = None,
        ip_family: str = IPV4,
        health: ProxyHealth | None = None,
        serve_health_checks: bool = True,
    ) -> None:
        if ip_family not in (IPV4, IPV6):
            raise ValidationError([Problem("ip_family", ip_family, "must be IPv4 or IPv6")])
        self.ip_family = ip_family
        if _is_source(store):
            self.source: Source = store
        else:  # a Store: the daemon's source before sources existed
            from podnet.source.store import StoreSource

            self.source = StoreSource(store)
        self.node_name = node_name
        self.config = config or KubeProxyConfiguration()
        self.runner = runner or Runner()
        self.backend: Backend = backend or IptablesBackend(Restorer(self.runner, ip_family=ip_family))
        # nftables mode: a backend may change config defaults (NodePorts on the primary IP only).
        self.config = self.backend.adjust_config(self.config)
        self.metrics = metrics or ProxyMetrics()
        # one per node process: a dual-stack node's two proxiers share it (metaproxier.py)
        self.health = health or ProxyHealth(self.config.effective_sync_period)
        # healthCheckNodePorts are served once per node: by the primary family's proxier
        self.serve_health_checks = serve_health_checks
        # healthCheckNodePort listeners; tests give a fake opener (nothing listens in the root namespace)
        self.service_health = ServiceHealthServer(self.health, health_listener or HTTPListener)
        self.health_checks = HealthCheckNodePorts(self.service_health, self._health_check_failed)
        self.ports_holder = port_holder or PortHolder()
        self.conntrack = conntrack or ConntrackCleaner(self.runner, ip_family=ip_family)
        self.sync_period = self.config.effective_sync_period
        self.min_sync_period = self.config.effective_min_sync_period
        self._fixed_facts = facts
        self._facts: HostFacts | None = None
        self._settings: ProxierSettings | None = None

        self.tracker = ChangeTracker(node_name, ip_family)
        self.informers = ProxyInformers(self.source, node_name, self.tracker, self.metrics, self.health,
                                        self._changed, ip_family=ip_family)
        self.sync_runner = BoundedFrequencyRunner(self._run_sync, min_interval=self.min_sync_period,
                                                  max_interval=self.sync_period, clock=clock)
        self._backoff = 1.0
        self._large = False
        self._synced_settings: ProxierSettings | None = None
        self._stopping = threading.Event()
        self.syncs = {"full": 0, "partial": 0, "failed": 0}

    # ---- wiring -------------------------------------------------------------------------------------

    def _changed(self) -> None:
        self.sync_runner.run()

    def start_informers(self) -> None:
        self.informers.start(stopped=lambda: self.sync_runner.stopped)

    def stop(self) -> None:
        self._stopping.set()
        self.sync_runner.stop()

    def close(self) -> None:
        self.stop()
        self.informers.stop()
        self.ports_holder.close()
        self.service_health.close()

    def run(self, *, informers: bool = True) -> None:
        """Sync until stop(). Starts the informers first (unless a metaproxier's shared ones feed this proxier:
        `informers=False`); the first sync is a full one."""
        if informers:
            self.start_informers()
        if self.backend.checks_drift:
            threading.Thread(target=self._watch_drift, name="drift-check", daemon=True).start()
        self.sync_runner.loop()

    def _watch_drift(self) -> None:
        while not self._stopping.wait(self.sync_period):
            self.check_drift()

    def check_drift(self) -> str | None:
        """One periodic kernel check (iptables mode): on a drift, log it and run a full sync soon."""
        if self.backend.needs_full:
            return None  # a full sync is due anyway
        try:
            found = self.backend.check_drift()
        except (OSError, subprocess.SubprocessError) as e:
            log.error("could not read the kernel's rules to check them: %s", e)
            self.metrics.drift_checks.labels("error").inc()
            return None
        if found is None:
            self.metrics.drift_checks.labels("ok").inc()
            return None
        self.metrics.drift_checks.labels("drift").inc()
        log.warning("the kernel no longer holds the rules podnet applied (%s): a full sync follows", found)
        self.sync_runner.run()
        return found

    def _run_sync(self, overdue: bool) -> bool:
        """The runner's function: one sync of what changed (all of it when overdue). True after a full one."""
        node_changed, dirty = self.tracker.take()
        full = (overdue and not self.backend.checks_drift) or node_changed or self.backend.needs_full
        try:
            done = self._sync(full=full, dirty=dirty, refresh=overdue)
            # a periodic run is complete when it succeeded: in drift-checking modes it is partial
            return done == "full" or (overdue and done != "")
        except Exception as e:  # noqa: BLE001 - a bug in one sync must not take the node's proxy down
            log.exception("sync crashed; retrying with a full sync")
            self._failed(e, full=True, dirty=dirty)
            return False

    # ---- one sync -----------------------------------------------------------------------------------

    def _current_settings(self, refresh: bool) -> ProxierSettings:
        if refresh or self._settings is None:
            facts = self._fixed_facts or detect(self.node_name, self.runner)
            self._facts = facts
            self._settings = resolve_settings(self.config, facts, ip_family=self.ip_family,
                                              node_pod_cidrs=self.tracker.node_pod_cidrs)
        return self._settings

    def sync(self, *, full: bool, dirty: dict[str, float] | None = None) -> bool:
        """One sync. Returns True on success; on failure schedules a retry (full)."""
        return self._sync(full=full, dirty=dirty or {}) != ""

    def _sync(self, *, full: bool, dirty: dict[str, float], refresh: bool = False) -> str:
        """One sync: "full" or "partial" when it succeeded, "" when it failed. `refresh` reads the node facts
        again (a full sync always does); settings that changed since the last sync make it a full one."""
        t = self.tracker
        start = time.monotonic()
        settings = self._current_settings(refresh=full or refresh)
        if settings != self._synced_settings:
            full = True
        t.update(t.known_services() | set(dirty) if full else dirty)
        try:
            if full or self.backend.needs_full:
                full = True
                self._large = t.total_endpoints > LARGE_CLUSTER_ENDPOINTS
                written = self.backend.full_sync(t.state(t.ports, ordered=True), settings)
                t.applied_all()
            else:
                old, new = t.previous(dirty), t.current(dirty)
                large = t.total_endpoints > LARGE_CLUSTER_ENDPOINTS
                if large != self._large:
                    # every SEP/SVC chain's comments change with largeClusterMode: rewrite them all
                    self._large = large
                    return self._sync(full=True, dirty=dirty)
                written = {}
                if old != new:
                    written = self.backend.partial_sync(t.state(old, ordered=False), t.state(new, ordered=False),
                                                        settings, large)
                t.applied(dirty)
        except (SyncError, OSError, ValueError) as e:
            self._failed(e, full=full, dirty=dirty)
            return ""
        elapsed = time.monotonic() - start
        for table, n in (written or {}).items():
            self.metrics.iptables_last.labels(table).set(n)
        self._succeeded(full, dirty, elapsed, settings)
        return "full" if full else "partial"

    def _failed(self, e: Exception, *, full: bool, dirty: dict[str, float]) -> None:
        self.syncs["failed"] += 1
        if not full:
            # kube-proxy: a failed partial restore is followed by a full one (right away here).
            self.metrics.partial_restore_failures.inc()
            log.error("partial sync failed, falling back to a full sync: %s", e)
            self.tracker.requeue(dirty, node_changed=True)  # forces the next sync to be full
            self.sync_runner.run()
        else:
            self.metrics.restore_failures.inc()
            self.tracker.requeue(dirty)
            self.sync_runner.retry_after(self._backoff)
            log.error("full sync failed (previous rules stay in place), retrying in %.0fs: %s", self._backoff, e)
            self._backoff = min(self._backoff * 2, max(self.sync_period, 1.0))

    def _succeeded(self, full: bool, dirty: dict[str, float], elapsed: float, settings: ProxierSettings) -> None:
        self.syncs["full" if full else "partial"] += 1
        self._backoff = 1.0
        self._synced_settings = settings
        self.metrics.synced(full=full, elapsed=elapsed, now=time.time(), rules_total=self.backend.rules_total(),
                            change_times=dirty.values())
        self.health.updated(self.ip_family)
        ports = self.tracker.ports.values()
        log.info("%s %s sync of %d service ports took %.3fs", self.ip_family, "full" if full else "partial",
                 len(ports), elapsed)
        self.ports_holder.sync(node_port_sockets(settings, ports))
        if self.serve_health_checks:
            self.health_checks.sync(settings, ports)
        self._clean_conntrack()

    # ---- after a sync -------------------------------------------------------------------------------

    def _health_check_failed(self, nsn: str, port: int, err: OSError) -> None:
        """kube-proxy's FailedToStartServiceHealthcheck event on the Service (retried at the next sync)."""
        from podnet.api.service import Service
        from podnet.controllers.events import make_event

        ns, _, name = nsn.partition("/")
        svc = Service.model_validate({"metadata": {"name": name, "namespace": ns}})
        ev = make_event(svc, "FailedToStartServiceHealthcheck",
                        f"node {self.node_name} failed to start healthcheck \"{nsn}\" on port {port}: {err}",
                        type="Warning", component="kube-proxy", host=self.node_name)
        self.source.record_event(ev.to_dict())

    def _clean_conntrack(self) -> None:
        udp = udp_service_ports(self.tracker.ports.values())
        if not udp:
            return
        start = time.monotonic()
        try:
            self.conntrack.cleanup(udp)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("conntrack cleanup failed: %s", e)
        self.metrics.conntrack_duration.observe(time.monotonic() - start)
