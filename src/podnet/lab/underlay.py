"""Build a lab's isolated underlay: a bridge in its own namespace and one veth per node namespace.

The underlay has no uplink: nothing connects it to the machine's own network, so no lab address can
ever be routed out of the VM. Node namespaces get only an on-link route for the underlay subnet and a
default route to the bridge's namespace, which forwards nothing. Labs of --ip-family ipv6 or dual have
the same on the IPv6 side (fd00:77::/64), without duplicate address detection.
"""

from __future__ import annotations

import ipaddress
import socket

from podnet.lab.topology import LabSpec, NodeSpec
from podnet.net import netns

IFA_F_NODAD = 0x02  # linux/if_addr.h


def _prefixlen6(spec: LabSpec) -> int:
    return ipaddress.ip_network(spec.underlay_cidr6).prefixlen


def _sysctl(ns: str, key: str, value: str) -> None:
    # sysctls are per network namespace for net.*; written through /proc inside the namespace.
    netns.run(ns, ["sysctl", "-q", "-w", f"{key}={value}"])


def create_underlay(spec: LabSpec) -> None:
    """The underlay namespace with its bridge, addressed with the gateway address of the CIDR."""
    ns = spec.underlay_netns
    netns.create(ns)
    with netns.ipr(ns) as ip:
        ip.link("add", ifname=spec.underlay_bridge, kind="bridge")
        idx = ip.link_lookup(ifname=spec.underlay_bridge)[0]
        ip.addr("add", index=idx, address=spec.underlay_gateway, prefixlen=spec.underlay_prefixlen)
        if spec.ip_family != "ipv4":
            ip.addr("add", index=idx, address=spec.underlay_gateway6, prefixlen=_prefixlen6(spec),
                    flags=IFA_F_NODAD)
        ip.link("set", index=idx, state="up")


def create_node(spec: LabSpec, node: NodeSpec) -> None:
    """A node namespace wired to the underlay bridge, with forwarding on (it routes for its pods)."""
    netns.create(node.netns)
    with netns.ipr(spec.underlay_netns) as ip:
        ip.link("add", ifname=node.bridge_port, kind="veth", peer={"ifname": node.iface, "net_ns_fd": node.netns})
        port = ip.link_lookup(ifname=node.bridge_port)[0]
        br = ip.link_lookup(ifname=spec.underlay_bridge)[0]
        ip.link("set", index=port, master=br, state="up")
    with netns.ipr(node.netns) as ip:
        idx = ip.link_lookup(ifname=node.iface)[0]
        ip.addr("add", index=idx, address=node.underlay_ip, prefixlen=spec.underlay_prefixlen)
        ip.link("set", index=idx, state="up")
        # Nodes in a cluster have a default route, and a node reaching a ClusterIP needs one: the route
        # lookup happens before kube-proxy's DNAT. It points at the underlay bridge's namespace, which
        # forwards nothing (ip_forward is off there and it has no uplink), so nothing leaves the lab.
        ip.route("add", dst="0.0.0.0/0", gateway=spec.underlay_gateway)
        if node.underlay_ip6:
            # no duplicate address detection: the address is usable at once (and the lab allocates it)
            ip.addr("add", index=idx, address=node.underlay_ip6, prefixlen=_prefixlen6(spec), flags=IFA_F_NODAD)
            ip.route("add", dst="::/0", gateway=spec.underlay_gateway6, family=socket.AF_INET6)
    _sysctl(node.netns, "net.ipv4.ip_forward", "1")
    if node.underlay_ip6:
        _sysctl(node.netns, "net.ipv6.conf.all.forwarding", "1")
    # route_localnet=1 accepts 127/8 from any interface: a pod routing 127.0.0.1 to its node would reach
    # the node's loopback-only servers (CVE-2020-8558). Only iptables mode sets it, for kube-proxy's
    # localhost NodePorts, and that mode's KUBE-FIREWALL drops 127/8 not from 127/8. nftables mode has no
    # localhost NodePorts and sets 0: the kernel then drops such packets as martians. Written either way,
    # since a new namespace inherits IPv4 conf from the root one (devconf_inherit_init_net=0); "default"
    # is what cni0 and the veths made later start with.
    localnet = "1" if spec.proxy_mode == "iptables" else "0"
    for conf in ("all", "default"):
        _sysctl(node.netns, f"net.ipv4.conf.{conf}.route_localnet", localnet)


def build(spec: LabSpec) -> None:
    create_underlay(spec)
    for node in spec.node_specs:
        create_node(spec, node)
