"""A pod's /etc/resolv.conf, as the kubelet computes it (pkg/kubelet/network/dns) and containerd writes it.

The lab's agent is the kubelet with `--cluster-dns=<kube-dns ClusterIP> --cluster-domain=cluster.local
--resolv-conf=""`: the machine's own resolver is not the lab's (the lab has no upstream), so no host
search paths are appended, and a pod with dnsPolicy Default gets the kubelet's "no DNS" configuration
(nameserver 127.0.0.1, search .) instead of this machine's. The file lands in /etc/netns/<pod netns>/,
which `ip netns exec` (how every pod process and `lab exec` start) bind-mounts over /etc/resolv.conf.
"""

from __future__ import annotations

from podnet.api.pod import Pod

NDOTS = "ndots:5"  # the kubelet's defaultDNSOptions
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))  # first appearance order


def _merge_options(base: list[str], pod: list[tuple[str, str | None]]) -> list[str]:
    """mergeDNSOptions: a pod's option replaces the one of the same name; order of first appearance."""
    merged: dict[str, str | None] = {}
    for opt in base:
        name, _, given = opt.partition(":")
        merged[name] = given or None
    for name, value in pod:
        merged[name] = value
    return [name if value is None else f"{name}:{value}" for name, value in merged.items()]


def pod_resolv_conf(pod: Pod, cluster_dns: str, domain: str) -> str:
    """The text of the pod's resolv.conf."""
    spec = pod.spec
    policy = spec.dns_policy or "ClusterFirst"
    if policy == "ClusterFirst" and spec.host_network:
        policy = "Default"  # a host-network pod falls back to the node's resolver
    servers: list[str]
    searches: list[str]
    options: list[str]
    if policy == "None":
        servers, searches, options = [], [], []
    elif policy == "Default":
        servers, searches, options = ["127.0.0.1"], ["."], []
    else:  # ClusterFirst, ClusterFirstWithHostNet
        ns = pod.namespace or "default"
        servers, searches, options = [cluster_dns], [f"{ns}.svc.{domain}", f"svc.{domain}", domain], [NDOTS]
    cfg = spec.dns_config
    if cfg is not None:
        servers = _unique([*servers, *cfg.nameservers])
        searches = _unique([*searches, *cfg.searches])
        options = _merge_options(options, [(o.name, o.value) for o in cfg.options])
    servers, searches = servers[:MAX_NAMESERVERS], searches[:MAX_SEARCHES]
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {s}" for s in servers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
