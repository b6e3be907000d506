"""Turn `--from` / `--to` words into a source and a packet, against the lab's snapshot (clear errors otherwise)."""

from __future__ import annotations

import ipaddress

from podnet.trace.errors import TraceError
from podnet.trace.model import Packet
from podnet.trace.snapshot import Cluster, PodInfo
from podnet.trace.walk import Source

PROTOS = ("tcp", "udp", "icmp")


def _port(field: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise TraceError(f"{field}: {text!r}: port must be a number from 1 to 65535")
    return int(text)


def _pod(c: Cluster, field: str, word: str) -> PodInfo | None:
    ns, _, name = word.rpartition("/")
    return next((p for p in c.pods if p.name == name and p.namespace == (ns or "default")), None)


def _lab_ips(c: Cluster) -> set[str]:
    ips = {p.ip for p in c.pods} | set(c.node_ips.values())
    for s in c.services:
        spec = s.get("spec") or {}
        ips |= {spec.get("clusterIP") or ""} | set(spec.get("externalIPs") or [])
        ips |= {i.get("ip", "") for i in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []}
    ips.discard("")
    return ips


def source(c: Cluster, word: str) -> tuple[Source, str]:
    if word in c.nodes:
        return Source("node", word), ""  # the kernel picks the source address by route (walk.walk does too)
    try:
        ip = str(ipaddress.ip_address(word))
    except ValueError:
        pod = _pod(c, "--from", word)
        if pod is None:
            raise TraceError(f"--from: {word!r}: no such pod or node in lab {c.lab} "
                             f"(nodes: {', '.join(sorted(c.nodes))}; pods: "
                             f"{', '.join(sorted(p.ref for p in c.pods)) or 'none'})") from None
        return Source("pod", pod.ref), pod.ip
    pod = c.pod_by_ip(ip)
    if pod is not None:
        return Source("pod", pod.ref), ip
    node = c.node_by_ip(ip)
    if node is not None:
        return Source("node", node), ip
    raise TraceError(f"--from: {word!r}: address outside the lab (no pod or node has it)")


def destination(c: Cluster, word: str, proto: str) -> tuple[str, int]:
    if word.startswith("svc/"):
        name, _, port_text = word[4:].partition(":")
        ns, _, name = name.rpartition("/")
        svc = next((s for s in c.services if s["metadata"]["name"] == name
                    and (s["metadata"].get("namespace") or "default") == (ns or "default")), None)
        if svc is None:
            raise TraceError(f"--to: {word!r}: no Service {ns or 'default'}/{name} in lab {c.lab}")
        spec = svc.get("spec") or {}
        if not spec.get("clusterIP") or spec.get("clusterIP") == "None":
            raise TraceError(f"--to: {word!r}: the Service has no clusterIP")
        ports = spec.get("ports") or []
        if port_text:
            if port_text.isdigit():
                port = _port("--to", port_text)
            else:
                match = next((p for p in ports if p.get("name") == port_text), None)
                if match is None:
                    raise TraceError(f"--to: {word!r}: the Service has no port named {port_text!r}")
                port = int(match["port"])
        elif ports:
            port = int(ports[0]["port"])
        else:
            raise TraceError(f"--to: {word!r}: the Service has no ports")
        return str(spec["clusterIP"]), port
    host, sep, port_text = word.rpartition(":")
    if not sep:
        host, port_text = word, ""
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        pod = _pod(c, "--to", host)
        if pod is None:
            raise TraceError(f"--to: {word!r}: not IP:PORT, svc/NAME[:PORT] or a pod of lab {c.lab}") from None
        ip = pod.ip
    if ip not in _lab_ips(c):
        raise TraceError(f"--to: {word!r}: address outside the lab (no pod, node or Service has {ip})")
    if proto == "icmp":
        return ip, 0
    if not port_text:
        raise TraceError(f"--to: {word!r}: a port is needed for {proto} (IP:PORT)")
    if not port_text.isdigit():
        raise TraceError(f"--to: {word!r}: port {port_text!r} is not a number from 1 to 65535")
    return ip, _port("--to", port_text)


def flow(c: Cluster, src: str, dst: str, proto: str, sport: int | None) -> tuple[Source, Packet]:
    if proto not in PROTOS:
        raise TraceError(f"--proto: {proto!r}: one of {', '.join(PROTOS)}")
    if sport is not None and not 1 <= sport <= 65535:
        raise TraceError(f"--sport: {sport!r}: port must be a number from 1 to 65535")
    s, sip = source(c, src)
    dip, dport = destination(c, dst, proto)
    return s, Packet(sip, dip, proto, sport or 0, dport)
