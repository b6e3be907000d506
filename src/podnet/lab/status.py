"""`podnet lab status`: nodes with their subnets, pods, services, and the health of the lab's processes."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from podnet.console import console as podnet_console
from podnet.lab import procs
from podnet.lab.state import LabState, list_labs
from podnet.store import StoreError, keys, open_store


def show(name: str, console: Console | None = None) -> None:
    console = console or podnet_console()
    st = LabState.load(name)
    if st is None:
        labs = ", ".join(list_labs()) or "none"
        from podnet.errors import PodnetError

        raise PodnetError(f"lab {name!r} is not up (labs: {labs})")
    spec = st.spec
    console.print(f"[bold]lab {spec.name}[/]: backend {spec.backend}, proxy {spec.proxy_mode}, store {st.store_url}")
    console.print(f"LoadBalancer pool: {spec.load_balancer_pool or 'none'}")
    sup = "running" if st.supervisor and procs.alive(st.supervisor) else "[red]dead[/]"
    console.print(f"supervisor: {sup}")
    for role, rec in sorted(st.procs.items()):
        if "/" not in role:  # lab-wide roles (control plane, store); node roles are in the table below
            console.print(f"{role}: {'pid ' + str(rec.pid) if procs.alive(rec) else '[red]down[/]'}")

    nodes = Table("NODE", "NETNS", "INTERNAL-IP", "SUBNET", "OVERLAY", "PROXY", "SPEAKER", "AGENT", title="nodes")
    for n in spec.node_specs:
        subnet = "-"
        try:
            env = dict(line.split("=", 1) for line in st.subnet_file(n.name).read_text().splitlines() if "=" in line)
            subnet = ",".join(v for k in ("FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET") if (v := env.get(k))) or "-"
        except OSError:
            pass
        health = []
        for role in ("overlay", "proxy", "speaker", "agent"):
            proc = st.procs.get(f"{n.name}/{role}")
            if role == "speaker" and not spec.lb_addresses():
                health.append("-")  # no pool, no speaker
                continue
            health.append(f"pid {proc.pid}" if proc and procs.alive(proc) else "[red]down[/]")
        nodes.add_row(n.name, n.netns, n.underlay_ip, subnet, *health)
    console.print(nodes)

    try:
        store = open_store(st.store_url)
        pods = Table("NAMESPACE", "POD", "NODE", "IP", "READY", title="pods")
        for kv in store.list(keys.kind_prefix("Pod")).items:
            p = json.loads(kv.value)
            status = p.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            pods.add_row(p["metadata"].get("namespace", "default"), p["metadata"]["name"],
                         (p.get("spec") or {}).get("nodeName") or "<pending>", status.get("podIP") or "-",
                         "1/1" if ready else "0/1")
        console.print(pods)
        svcs = Table("NAMESPACE", "SERVICE", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORTS", title="services")
        for kv in store.list(keys.kind_prefix("Service")).items:
            s = json.loads(kv.value)
            sp = s.get("spec") or {}
            ports = ",".join(
                f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
                for p in sp.get("ports") or []
            )
            ingress = ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            external = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress) or (
                "<pending>" if sp.get("type") == "LoadBalancer" else "-")
            svcs.add_row(s["metadata"].get("namespace", "default"), s["metadata"]["name"], sp.get("type", "ClusterIP"),
                         sp.get("clusterIP") or "-", external, ports)
        console.print(svcs)
        store.close()
    except StoreError as e:
        console.print(f"[red]store unreachable[/]: {e}")
