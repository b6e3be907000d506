"""The nftables mode's backend (the contract in proxy/backend.py): podnet's layout (layout.py, ledger.py)
loaded by nft.py.

Full syncs (start, every syncPeriod, after a failure) load the whole table in one transaction that flushes
and refills every chain and element container of `podnet` and removes chains and affinity sets the kernel
has but the desired state does not; dynamic affinity sets that stay keep their entries. If the existing
table cannot be converged (objects of an older layout with other types), the table is recreated in the same
transaction. Partial syncs are element-level transactions from the ledger of the last successful sync.
Only tables named `podnet` are ever touched; other programs' tables are never listed for writing.
Full loads run in an `nft -f -` child (nft.py: libnftables' memory for a whole table leaves with it); partial
syncs go through the persistent binding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from podnet.proxy.config import KubeProxyConfiguration
from podnet.proxy.model import DesiredState, ServicePort, ServicePortName
from podnet.proxy.nftables.layout import TABLE, Layout, render, stale_removal
from podnet.proxy.nftables.ledger import Ledger, render_delta
from podnet.proxy.nftables.nft import Nft, NftError
from podnet.proxy.settings import ProxierSettings

log = logging.getLogger(__name__)


class NftablesBackend:
    mode = "nftables"
    checks_drift = False  # the periodic sync is a full one: one atomic `nft -f`, ~2 s at 10k x 10

    def __init__(self, netns: str | None = None, *, nft: Nft | None = None,
                 service_cidrs: Iterable[str] = ()) -> None:
        self.nft = nft or Nft(netns)
        self.service_cidrs = tuple(service_cidrs)
        self.ledger: Ledger | None = None
        self._counts: dict[str, int] = {}
        self.last_partial_element_only = True
        log.info("nftables mode: transactions go through %s",
                 "one persistent libnftables context" if self.nft.uses_binding else "`nft -f -`")

    @staticmethod
    def adjust_config(config: KubeProxyConfiguration) -> KubeProxyConfiguration:
        """kube-proxy's nftables mode serves NodePorts on the node's primary IP unless told otherwise."""
        if not config.node_port_addresses:
            return config.model_copy(update={"node_port_addresses": ["primary"]})
        return config

    @property
    def needs_full(self) -> bool:
        return self.ledger is None

    def full_sync(self, desired: DesiredState, settings: ProxierSettings) -> dict[str, int]:
        # The old ledger goes first: it holds the last render's objects (~60 MB at 10k x 10), and keeping
        # it through the new render made each periodic full sync the daemon's memory peak.
        self.ledger = None
        lay = Layout.of(desired, settings, self.service_cidrs)
        r = render(desired, settings, service_cidrs=self.service_cidrs)
        family = lay.fam.nfproto
        existing = self.nft.list_table(family, TABLE)
        script = r.text
        if existing is not None:
            extra = stale_removal(lay.table, existing.chains, existing.sets, r.chains, r.sets)
            script += "\n".join(extra) + ("\n" if extra else "")
        try:
            self.nft.run(script, isolated=True)
        except NftError as e:
            if existing is None:
                raise
            # An older table whose objects cannot be converged in place: replace it atomically.
            log.warning("cannot update table %s %s in place (%s); recreating it", family, TABLE, e)
            self.nft.run(f"add table {lay.table}\ndelete table {lay.table}\n" + r.text, isolated=True)
        self.ledger = Ledger(lay, r)
        self._counts = {TABLE: r.text.count("\nadd rule ") + sum(len(o.elements) for o in r.objects.values())}
        return self.rules_total()

    def partial_sync(self, old: DesiredState, new: DesiredState, settings: ProxierSettings,
                     large_cluster: bool) -> dict[str, int]:
        ledger = self.ledger
        if ledger is None or ledger.lay != Layout.of(new, settings, self.service_cidrs):
            self.ledger = None
            raise NftError("node settings changed since the last full sync", partial=True)
        changes: dict[ServicePortName, ServicePort | None] = {spn: None for spn in old.services}
        changes.update(new.services)
        delta = render_delta(ledger, changes)
        try:
            self.nft.run(delta.text)
        except NftError as e:
            self.ledger = None  # the ledger already holds the new state: only a full sync can repair it
            e.partial = True
            raise
        self.last_partial_element_only = delta.element_only
        return {"written": delta.operations}

    def rules_total(self) -> dict[str, int]:
        return dict(self._counts)

    @staticmethod
    def check_drift() -> str | None:
        return None
