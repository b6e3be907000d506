"""What the proxy learns from the host it runs on: node IPs, and what its iptables and kernel support.

Read once at start and at every full sync (HostFacts in proxy/config.py says what each fact changes).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess

from podnet.net import nfacct
from podnet.proxy.config import HostFacts
from podnet.proxy.iptables.restore import Runner

NFACCT_COUNTERS = ("ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts")


def usable_node_ip(ip: str, exclude_loopback: bool = True) -> bool:
    """An address the proxy answers NodePorts on: not IPv6 link-local (fe80::/10: kube-proxy never uses
    them as node IPs, they are per-link), and not loopback unless asked."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.is_link_local:
        return False
    return not (exclude_loopback and addr.is_loopback)


def detect_node_ips(exclude_loopback: bool = True) -> list[str]:
    """IPv4 then IPv6 addresses of this namespace's interfaces (the proxy runs inside the node's namespace).

    Both families: each family's proxier keeps the addresses of its own (settings.resolve_settings).
    Through net/rtnl.py, not pyroute2: this runs before the first sync of a (re)started proxy, and
    importing pyroute2 would add ~0.1 s to every restart for one address dump.
    """
    import socket

    from podnet.net.rtnl import Rtnl

    with Rtnl() as nl:
        found = [a.address for fam in (socket.AF_INET, socket.AF_INET6) for a in nl.addrs(family=fam)]
    return [ip for ip in found if usable_node_ip(ip, exclude_loopback)]


def detect_random_fully(runner: Runner) -> bool:
    """kube-proxy's rule: MASQUERADE --random-fully is used when iptables is 1.6.2 or newer."""
    try:
        out = runner.run(["iptables", "--version"], timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return m is not None and tuple(int(x) for x in m.groups()) >= (1, 6, 2)


def detect_nfacct(runner: Runner) -> bool:
    """Whether kube-proxy's nfacct counters can be used: create them (as kube-proxy does) and check that a rule
    matching one loads. Kernels without nfnetlink_acct or xt_nfacct answer False, never a broken rule."""
    if any(nfacct.create(name) != 0 for name in NFACCT_COUNTERS):
        return False
    probe = "PODNET-NFACCT-PROBE"
    ok = runner.run(["iptables-restore", "-w", "5", "--noflush"], timeout=30, input=(
        f"*filter\n:{probe} - [0:0]\n-A {probe} -m nfacct --nfacct-name {NFACCT_COUNTERS[0]}\nCOMMIT\n"
    )).returncode == 0
    runner.run(["iptables-restore", "-w", "5", "--noflush"], timeout=30,
               input=f"*filter\n:{probe} - [0:0]\n-X {probe}\nCOMMIT\n")
    return ok


def detect(node_name: str, runner: Runner) -> HostFacts:
    """This host's facts, probed."""
    return HostFacts(
        node_name=node_name,
        node_ips=detect_node_ips(),
        nfacct=detect_nfacct(runner),
        random_fully=detect_random_fully(runner),
    )
