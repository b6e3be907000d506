"""Run nft transactions for the proxy: the one place that executes nftables scripts.

Incremental syncs are a handful of element operations; starting `nft` for each costs 3-4 ms and, when
the transaction deletes something, another 5-16 ms in the netlink socket's close() (the kernel waits for
deferred destruction there). One persistent libnftables context (Debian's python3-nftables) costs about
0.04 ms per call, so that is the default. Without the binding (or with PODNET_NFT=cli) scripts go through
`nft -f -`, which is also what runs them inside another namespace: libnftables acts in the caller's
namespace, the CLI is started with `ip netns exec`.

Every script is one transaction: nft applies all of it or nothing, so a failed sync leaves the previous
ruleset in place.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from podnet.net import exec as nexec
from podnet.proxy.backend import SyncError

log = logging.getLogger(__name__)


class NftError(SyncError):
    """nft rejected a transaction; the kernel still holds the previous ruleset (a SyncError: retried)."""

    def __init__(self, message: str, *, stderr: str = "", partial: bool = False) -> None:
        super().__init__(message, partial=partial, stderr=stderr)


@dataclass(frozen=True)
class TableObjects:
    """Names of the chains, sets and maps one table holds in the kernel."""

    chains: frozenset[str]
    sets: frozenset[str]
    maps: frozenset[str]


def _load_binding() -> ModuleType | None:
    """The python3-nftables module, or None (not installed, or PODNET_NFT=cli forces the CLI)."""
    if os.environ.get("PODNET_NFT") == "cli":
        return None
    try:
        import nftables
    except ImportError:
        return None
    return nftables


class Nft:
    """Executes nft scripts, in this process's namespace (binding) or in a named one (CLI)."""

    def __init__(self, netns: str | None = None, *, binding: bool | None = None, timeout: float = 600.0) -> None:
        self.netns = netns
        self.timeout = timeout
        self._lock = threading.Lock()
        # libnftables.Nftables contexts; the binding ships no types.
        self._ctx: Any = None
        self._json_ctx: Any = None
        mod = _load_binding() if netns is None and binding is not False else None
        if binding and mod is None:
            raise NftError("python3-nftables (libnftables binding) is not available")
        if mod is not None:
            try:
                self._ctx = mod.Nftables()
                self._json_ctx = mod.Nftables()
                self._json_ctx.set_json_output(True)
                self._json_ctx.set_terse_output(True)
            except OSError as e:  # libnftables.so cannot be loaded
                log.warning("libnftables unavailable (%s); using `nft -f -`", e)
                self._ctx = self._json_ctx = None

    @property
    def uses_binding(self) -> bool:
        return self._ctx is not None

    def _cli(self, *args: str, script: str | None = None) -> tuple[int, str, str]:
        """`nft ARGS` in this object's namespace (net/exec.py builds the command line)."""
        try:
            p = nexec.run(["nft", *args], netns=self.netns, input=script, timeout=self.timeout, check=False)
        except nexec.CommandError as e:  # not started, or timed out
            raise NftError(str(e)) from None
        return p.returncode, p.stdout, p.stderr

    def run(self, script: str, *, isolated: bool = False) -> None:
        """Apply a script as one transaction. Raises NftError (kernel unchanged) when nft refuses it.

        isolated: run it in an `nft -f -` process even when the binding is loaded. For a whole-table load:
        libnftables parses a 10k x 10 script with ~250 MB of its own allocations, which glibc keeps in this
        process's heap after the call; a child gives them back when it exits, for the ~4 ms a start costs.
        """
        if not script.strip():
            return
        with self._lock:
            if self._ctx is not None and not isolated:
                rc, _out, err = self._ctx.cmd(script)
            else:
                rc, _out, err = self._cli("-f", "-", script=script)
        if rc != 0:
            raise NftError(f"nft transaction failed: {_first_error(err)}", stderr=err)

    def list_table(self, family: str, table: str) -> TableObjects | None:
        """Chains, sets and maps of one table, or None when the table does not exist.

        Terse listing: without -t, `list sets` fetches every element (1.7 s for 200k elements), and
        `list tables` does too. A table of ours always has chains, so no chains means no table.
        """
        found: dict[str, set[str]] = {"chain": set(), "set": set(), "map": set()}
        for what in ("chains", "sets", "maps"):
            data = self._json(f"list {what} {family}")
            for item in data.get("nftables", []):
                for kind, obj in item.items():
                    if kind in found and obj.get("table") == table and obj.get("family") == family:
                        found[kind].add(obj["name"])
        if not found["chain"]:
            return None
        return TableObjects(frozenset(found["chain"]), frozenset(found["set"]), frozenset(found["map"]))

    def _json(self, command: str) -> dict:
        with self._lock:
            if self._json_ctx is not None:
                rc, out, err = self._json_ctx.cmd(command)
            else:
                rc, out, err = self._cli("-j", "-t", *command.split())
        if rc != 0:
            raise NftError(f"nft {command} failed: {_first_error(err)}", stderr=err)
        if not out.strip():
            return {"nftables": []}
        return json.loads(out)


def _first_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errs = [line for line in lines if "Error" in line]
    return (errs[0] if errs else (lines[0] if lines else "no error text")).strip()
