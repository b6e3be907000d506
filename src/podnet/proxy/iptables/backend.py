"""IptablesBackend: the iptables mode behind the proxy.backend contract.

It owns what lives between syncs (the Restorer with its applied model, the renderer's RenderCache) and turns
a sync into renders (render.py) loaded in one `iptables-restore --noflush` transaction (restore.py).
"""

from __future__ import annotations

from podnet.proxy.config import KubeProxyConfiguration
from podnet.proxy.iptables.render import FullStream, RenderCache, render
from podnet.proxy.iptables.restore import Restorer
from podnet.proxy.model import DesiredState
from podnet.proxy.settings import ProxierSettings


class IptablesBackend:
    """kube-proxy's rules (render.py) loaded by restore.py."""

    mode = "iptables"
    checks_drift = True  # a full rewrite takes ~20 s at 10k services x 10 endpoints; reading takes a few

    def __init__(self, restorer: Restorer | None = None) -> None:
        self.restorer = restorer or Restorer()
        self.cache = RenderCache()

    @property
    def needs_full(self) -> bool:
        return self.restorer.needs_full

    def full_sync(self, desired: DesiredState, settings: ProxierSettings) -> dict[str, int]:
        # Stale chains are found in the kernel by the restorer (it survives restarts), not from memory. The
        # render is streamed into iptables-restore as it is made (FullStream): only the kernel's listing (other
        # processes, 0.5 s into an empty node) comes before the load.
        stream = FullStream(desired, settings, cache=self.cache)
        return self.restorer.sync_full(stream, stream.ruleset, self.restorer.list_kernel()).written

    def partial_sync(self, old: DesiredState, new: DesiredState, settings: ProxierSettings,
                     large_cluster: bool) -> dict[str, int]:
        r_old = render(old, settings, full=True, cleanup_stale=False, large_cluster=large_cluster, cache=self.cache)
        r_new = render(new, settings, full=True, cleanup_stale=False, large_cluster=large_cluster, cache=self.cache)
        gone = sorted(r_old.active_nat_chains - r_new.active_nat_chains)
        return self.restorer.sync_partial(r_old.ruleset(), r_new.ruleset(), gone).written

    def check_drift(self) -> str | None:
        return self.restorer.check_drift()

    @staticmethod
    def adjust_config(config: KubeProxyConfiguration) -> KubeProxyConfiguration:
        return config

    def rules_total(self) -> dict[str, int]:
        return dict(self.restorer.rules)  # kept with the model: no walk over 110k chains per sync
