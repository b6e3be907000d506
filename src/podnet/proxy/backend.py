"""The contract between the proxier and a proxy mode: what a backend promises, and how one is chosen.

A proxy mode is a peer subpackage (`proxy/iptables/`, `proxy/nftables/`) made of two halves:

- a **renderer**: pure functions from the proxy model (`proxy/model.py`: DesiredState, ServicePort,
  Endpoint) and ProxierSettings to structured output (chains and their rules, sets and maps and their
  elements). No I/O, no module state; anything kept between renders (a per-service cache, the last
  applied objects) is an argument the backend owns and passes in.
- a **backend** (the class below): owns that state, turns renderer output into one kernel transaction
  (`iptables-restore --noflush`, `nft -f`) through `net/exec.py`, and remembers what the kernel holds so
  the next partial sync writes only what changed.

The proxier (`proxy/proxier.py`) calls only these methods. A backend raises its mode's error (a subclass
of `podnet.errors.PodnetError` carrying `partial`) when a transaction fails; the kernel then keeps the
rules it had, the backend forgets what it thought was applied (`needs_full` becomes True), and the
proxier retries with a full sync. A backend never half-applies a sync: each call is one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from podnet.errors import PodnetError

if TYPE_CHECKING:
    from podnet.proxy.config import KubeProxyConfiguration
    from podnet.proxy.model import DesiredState
    from podnet.proxy.settings import ProxierSettings


class SyncError(PodnetError):
    """A sync's kernel transaction failed; the kernel kept the rules it had.

    `partial` tells a failed partial sync (the proxier follows it with a full one at once) from a failed
    full sync (retried with backoff). Each mode raises its own subclass (RestoreError, NftError).
    """

    def __init__(self, message: str, *, partial: bool = False, stderr: str = "") -> None:
        super().__init__(message)
        self.partial = partial
        self.stderr = stderr


class Backend(Protocol):
    mode: str  # "iptables" or "nftables", as kube-proxy's --proxy-mode
    # True: the periodic sync (syncPeriod) reads the kernel with check_drift(), off the sync loop, and a full
    # sync follows only a drift; False: the periodic sync is a full one.
    checks_drift: bool

    @property
    def needs_full(self) -> bool:
        """True until a full sync succeeded, and again after any failed transaction."""
        ...

    def full_sync(self, desired: DesiredState, settings: ProxierSettings) -> dict[str, int]:
        """Rewrite every object the mode owns, removing stale ones found in the kernel.

        Returns rules written per table (for the sync metrics). Raises on failure (kernel unchanged).
        """
        ...

    def partial_sync(self, old: DesiredState, new: DesiredState, settings: ProxierSettings,
                     large_cluster: bool) -> dict[str, int]:
        """Move the services in `old` (as last applied) to their state in `new`; only those services.

        `old` and `new` hold just the changed services (a service absent from `new` was deleted);
        `large_cluster` is the whole state's largeClusterMode. Raises on failure (kernel unchanged).
        """
        ...

    def check_drift(self) -> str | None:
        """Compare the kernel with what was applied, writing nothing (from a thread other than the syncs').

        Returns what drifted, and then `needs_full` is True until a full sync; None when the kernel matches or
        nothing can be concluded. Only called when `checks_drift`.
        """
        ...

    def rules_total(self) -> dict[str, int]:
        """Rules the kernel holds per table after the last successful sync."""
        ...

    def adjust_config(self, config: KubeProxyConfiguration) -> KubeProxyConfiguration:
        """The mode's own configuration defaults (nftables serves NodePorts on the primary IP only)."""
        ...


MODES = ("iptables", "nftables")


def make_backend(mode: str, netns: str | None = None, ip_family: str = "IPv4") -> Backend:
    """The backend of a proxy mode ("" means iptables, as kube-proxy on Linux) for one IP family, acting in
    `netns`. Each family has its own: iptables or ip6tables; nftables' table `ip podnet` or `ip6 podnet` with
    its own ledger."""
    if mode in ("", "iptables"):
        from podnet.proxy.iptables.backend import IptablesBackend
        from podnet.proxy.iptables.restore import Restorer, Runner

        return IptablesBackend(Restorer(Runner(netns=netns), ip_family=ip_family))
    if mode == "nftables":
        from podnet.proxy.nftables.backend import NftablesBackend
        from podnet.proxy.nftables.nft import Nft

        return NftablesBackend(nft=Nft(netns))
    raise ValueError(f"mode: {mode!r}: podnet supports {' and '.join(MODES)}")
