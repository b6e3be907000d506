"""Run one backend in the current namespace, driven by JSON lines on stdin (no store, no daemon).

Used by the integration tests and benchmarks/overlay_throughput.py to put a backend inside a node's
namespace (`ip netns exec NODE python -m podnet.testing.backend_runner`) with hand-made leases, and
handy to poke at a backend by hand. One request per line, one JSON answer per line:

  {"op": "init", "type": "vxlan", "iface": "eth0", "options": {"VNI": 1}}  -> {"ok": true, "backend_data": ..., "mtu": 1450}
  {"op": "configure", "lease": LEASE, "network": "10.244.0.0/16"}         -> {"ok": true}
  {"op": "add", "lease": LEASE} / {"op": "remove", "lease": LEASE}        -> {"ok": true}
  {"op": "stats"}                                                          -> {"ok": true, "stats": {...}}
  {"op": "close"}                                                          -> {"ok": true}, then exit
LEASE = {"subnet": "10.244.2.0/24", "public_ip": "192.168.77.2", "backend_type": "vxlan", "backend_data": {...}}
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from typing import Any

from podnet.net import netns as nsmod
from podnet.net.iface import lookup_external_interface
from podnet.overlay.backends import create_backend
from podnet.overlay.backends.base import Backend
from podnet.overlay.lease import Lease


def lease_from_json(obj: dict[str, Any]) -> Lease:
    return Lease(
        subnet=ipaddress.IPv4Network(obj["subnet"]), public_ip=ipaddress.IPv4Address(obj["public_ip"]),
        backend_type=obj.get("backend_type"), backend_data=obj.get("backend_data"),
    )


def _stats(backend: Backend) -> dict[str, int]:
    fwd = getattr(backend, "forwarder", None)
    if fwd is None:
        return {}
    return {k: getattr(fwd, k) for k in ("tx_packets", "tx_bytes", "tx_no_route", "tx_errors",
                                         "rx_packets", "rx_bytes", "rx_errors", "tx_sends", "rx_writes")}


def serve(lines: Any, out: Any) -> None:
    backend: Backend | None = None
    for line in lines:
        if not line.strip():
            continue
        req = json.loads(line)
        op = req.get("op")
        reply: dict[str, Any] = {"ok": True}
        try:
            if op == "init":
                with nsmod.ipr(None) as ipr:
                    ext = lookup_external_interface(ipr, req.get("iface"), req.get("public_ip"))
                backend = create_backend(req["type"], ext, req.get("options") or {})
                reply["backend_data"] = backend.register()
                reply["mtu"] = backend.mtu
            elif backend is None:
                raise RuntimeError(f"op {op!r} before init")
            elif op == "configure":
                backend.configure(lease_from_json(req["lease"]), ipaddress.IPv4Network(req["network"]))
            elif op == "add":
                backend.add_remote(lease_from_json(req["lease"]))
            elif op == "remove":
                backend.remove_remote(lease_from_json(req["lease"]))
            elif op == "resync":
                backend.resync()
            elif op == "stats":
                reply["stats"] = _stats(backend)
            elif op == "close":
                backend.close()
                out.write(json.dumps(reply) + "\n")
                out.flush()
                return
            else:
                raise ValueError(f"op: {op!r}: unknown")
        except Exception as exc:  # reported to the driver, which decides
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    if backend is not None:
        backend.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
