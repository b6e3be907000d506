"""`lab up` / `lab down`: build the lab from its topology, start its supervisor, register it in the store.

Order in `up`: namespaces, then the supervisor (which starts the lab's own etcd first, if any), then the
registration (Node objects, net-conf, and the store reconciled with the nodes that exist: lifecycle.py),
then the REGISTERED marker, which lets the supervisor start the control plane and the node processes.
`down` tears the kernel side down first, then marks the lab's pods as no longer running (the store may
outlive the lab).

Either the whole lab comes up or nothing is left: any failure during `up` tears down what was made.
"""

from __future__ import annotations

import json
import time

from podnet.errors import PodnetError
from podnet.lab import apiserver, etcd, procs, registry, supervisor, teardown, underlay
from podnet.lab.state import LabState, lab_dir
from podnet.lab.topology import LabSpec
from podnet.net import netns

UP_TIMEOUT = 30.0


class LabError(PodnetError):
    pass


def kube_proxy_config(spec: LabSpec, node: str) -> str:
    """kube-proxy's own configuration file for a lab node (clusterCIDR drives the masquerade rule)."""
    return "\n".join([
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
        "kind: KubeProxyConfiguration",
        f"mode: {spec.proxy_mode}",
        f"clusterCIDR: {','.join(spec.pod_networks)}",
        "detectLocalMode: ClusterCIDR",
        f"hostnameOverride: {node}",
        "",
    ])


def up(spec: LabSpec, store_url: str, *, wait: bool = True) -> LabState:
    existing = teardown.lab_namespaces(spec.name)
    if LabState.load(spec.name) is not None or existing or lab_dir(spec.name).exists():
        raise LabError(f"lab {spec.name!r} already exists ({', '.join(existing) or lab_dir(spec.name)}); "
                       f"run `podnet lab down --name {spec.name}` first")
    st = LabState(spec, store_url)
    try:
        st.save()
        underlay.build(spec)
        for n in spec.node_specs:
            st.node_dir(n.name).mkdir(parents=True, exist_ok=True)
            (st.node_dir(n.name) / "kube-proxy.yaml").write_text(kube_proxy_config(spec, n.name))
        if spec.store == "etcd":
            etcd.argv(st)  # refuses at once if etcd is not installed
            st.store_url = etcd.url(st)
            st.save()
        # The supervisor starts the lab's own store first (if any); everything else waits for REGISTERED.
        apiserver.prepare(st)
        if spec.source == "kube":  # flanneld --kube-subnet-mgr reads net-conf from a file (kube-flannel-cfg)
            (st.dir / "net-conf.json").write_bytes(registry.net_conf(spec))
        st.supervisor = procs.spawn(
            [supervisor.podnet_exe(), "lab", "supervise", "--name", spec.name], st.log("supervisor"),
            nice=supervisor.NICE,
        )
        st.save()
        if spec.store == "etcd":
            sup = st.supervisor
            etcd.wait(st.store_url, alive=lambda: procs.alive(sup))
        registry.register(st)
        (st.dir / supervisor.REGISTERED).touch()
        if wait:
            wait_ready(st)
    except BaseException:
        teardown.teardown(spec.name)
        try:
            registry.unregister_spec(spec, store_url)
        except Exception:  # the store may be what failed; the kernel side is already clean
            pass
        raise
    return st


def wait_ready(st: LabState, timeout: float = UP_TIMEOUT) -> None:
    """Until every node has its subnet (overlay up), every agent is alive and the API server answers."""
    deadline = time.monotonic() + timeout
    missing: list[str] = []
    while time.monotonic() < deadline:
        missing = [n.name for n in st.spec.node_specs if not st.subnet_file(n.name).exists()]
        if not apiserver.listening(st):
            missing.append("apiserver")
        if st.supervisor is not None and not procs.alive(st.supervisor):
            raise LabError(f"lab {st.spec.name}: the supervisor died; see {st.log('supervisor')}")
        if not missing:
            return
        time.sleep(0.05)
    logs = ", ".join(str(st.log("apiserver" if m == "apiserver" else f"{m}/overlay")) for m in missing)
    raise LabError(f"lab {st.spec.name}: nodes {', '.join(missing)} got no subnet within {timeout:.0f} s; see {logs}")


def down(name: str) -> list[str]:
    st = LabState.load(name)
    removed = teardown.teardown(name)
    # A store inside the lab's own directory went with it; reopening it would only recreate the file.
    if st is not None and str(lab_dir(name)) not in st.store_url:
        try:
            registry.unregister(st)
        except Exception as e:  # store gone or unreachable: the kernel side is clean, say so and go on
            removed.append(f"(store not cleaned: {e})")
    return removed


def resolve_target(name: str, target: str) -> str:
    """node1 -> pn-<lab>.node1; [ns/]pod -> that pod's namespace; underlay -> the underlay's namespace (a
    client outside the cluster: it has the bridge's address and no route to pods or Services)."""
    st = LabState.load(name)
    if st is None:
        raise LabError(f"lab {name!r} is not up")
    if target == "underlay":
        return st.spec.underlay_netns
    for n in st.spec.node_specs:
        if n.name == target:
            return n.netns
    ns, _, pod = target.rpartition("/")
    pod_ns = st.spec.pod_netns(ns or "default", pod)
    if netns.exists(pod_ns):
        return pod_ns
    nodes = ", ".join(n.name for n in st.spec.node_specs)
    raise LabError(f"{target!r}: no such node ({nodes}), running pod or `underlay` in lab {name}")


def dumps(st: LabState) -> str:
    return json.dumps(st.spec.to_dict())
