"""Cluster DNS in a 2-node lab, asked the way applications ask: glibc (getent), curl and dig run inside pods,
whose resolv.conf the agent wrote as a kubelet does; every query goes to the kube-dns ClusterIP and through
the node's proxy rules to one of the DNS servers."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from .conftest import REPO, DnsLab, wait_for

pytestmark = pytest.mark.integration

PETS = """
apiVersion: v1
kind: Service
metadata: {name: pets}
spec:
  clusterIP: None
  selector: {app: pets}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: pet-0, labels: {app: pets}}
spec:
  hostname: pet-0
  subdomain: pets
  containers: [{name: web, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: pet-1, labels: {app: pets}}
spec:
  hostname: pet-1
  subdomain: pets
  containers: [{name: web, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: stray, labels: {app: pets}}
spec:
  containers: [{name: web, ports: [{name: http, containerPort: 80}]}]
"""

EXTERNAL = """
apiVersion: v1
kind: Service
metadata: {name: db-ext}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: webapp1-alias}
spec: {type: ExternalName, externalName: webapp1-clusterip-svc.default.svc.cluster.local}
"""


def _many(n: int) -> str:
    """A selector-less headless Service with n endpoints written by hand: a big answer without n pods."""
    eps = "\n".join(f"- addresses: [10.250.{i // 200}.{i % 200 + 1}]" for i in range(n))
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: many}}
spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: many-1, labels: {{kubernetes.io/service-name: many}}}}
addressType: IPv4
endpoints:
{eps}
ports: [{{name: http, port: 80, protocol: TCP}}]
"""


@pytest.fixture(scope="module")
def lab(dns_lab: DnsLab) -> DnsLab:
    dns_lab.podnet("apply", "-f", str(REPO / "examples" / "webapp1"))
    dns_lab.apply(PETS)
    dns_lab.apply(EXTERNAL)
    dns_lab.ready_pods("webapp1-", 2)
    dns_lab.ready_pods("pet-", 2)
    return dns_lab


def _webapp_pods(lab: DnsLab) -> list[dict]:  # type: ignore[type-arg]
    return lab.ready_pods("webapp1-", 2)


def _ips(text: str) -> list[str]:
    return sorted(line for line in text.split() if line[:1].isdigit())


def test_resolv_conf_is_the_kubelets(lab: DnsLab) -> None:
    pod = _webapp_pods(lab)[0]["metadata"]["name"]
    conf = lab.in_pod(pod, "cat", "/etc/resolv.conf").stdout
    assert conf.splitlines() == ["search default.svc.cluster.local svc.cluster.local cluster.local",
                                 "nameserver 10.96.0.10", "options ndots:5"]


def test_service_names_resolve_and_answer_from_pods_on_every_node(lab: DnsLab) -> None:
    ip = lab.service_ip("webapp1-clusterip-svc")
    pods = _webapp_pods(lab)
    assert {p["spec"]["nodeName"] for p in pods} == {"node1", "node2"}
    for p in pods:
        name = p["metadata"]["name"]
        r = lab.in_pod(name, "getent", "hosts", "webapp1-clusterip-svc")
        assert r.returncode == 0 and r.stdout.split() == [ip, "webapp1-clusterip-svc.default.svc.cluster.local"], r
        for host in ("webapp1-clusterip-svc", "webapp1-clusterip-svc.default",
                     "webapp1-clusterip-svc.default.svc.cluster.local"):
            r = lab.in_pod(name, "curl", "-sS", "--max-time", "5", f"http://{host}/")
            assert "processed by host: webapp1-" in r.stdout, (name, host, r.stdout, r.stderr)


def test_headless_resolves_to_ready_pods_and_follows_a_deletion_within_a_second(lab: DnsLab) -> None:
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    pets = {p["metadata"]["name"]: p["status"]["podIP"] for p in lab.pods() if p["metadata"].get("labels", {}).get("app") == "pets"}
    assert set(pets) == {"pet-0", "pet-1", "stray"}
    wait_for(lambda: lab.ready_pods("stray", 1), 30, "stray ready")
    got = _ips(lab.dig(client, "+short", "pets.default.svc.cluster.local").stdout)
    assert got == sorted(pets.values())  # every ready pod, no ClusterIP
    lab.podnet("delete", "pod", "stray")  # the slice changes in the same store commit
    deleted = time.monotonic()
    want = sorted(ip for n, ip in pets.items() if n != "stray")
    seen = []
    while time.monotonic() - deleted < 1.0:
        seen = _ips(lab.dig(client, "+short", "pets.default.svc.cluster.local").stdout)
        if seen == want:
            break
    assert seen == want, f"1 s after the deletion the answer was still {seen}"


def test_pod_hostname_and_subdomain_records(lab: DnsLab) -> None:
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    ip = next(p["status"]["podIP"] for p in lab.pods() if p["metadata"]["name"] == "pet-0")
    assert lab.dig(client, "+short", "pet-0.pets.default.svc.cluster.local").stdout.split() == [ip]
    r = lab.in_pod(client, "getent", "hosts", "pet-0.pets")  # through the search path
    assert r.stdout.split() == [ip, "pet-0.pets.default.svc.cluster.local"], r
    insecure = lab.dig(client, "+short", f"{ip.replace('.', '-')}.default.pod.cluster.local").stdout.split()
    assert insecure == [ip]  # `pods insecure`, kubeadm's default


def test_srv_records_for_named_ports(lab: DnsLab) -> None:
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    r = lab.dig(client, "+short", "SRV", "_dns._udp.kube-dns.kube-system.svc.cluster.local")
    assert r.stdout.split() == ["0", "100", "53", "kube-dns.kube-system.svc.cluster.local."]
    hosts = {p["metadata"]["name"] for p in lab.pods() if p["metadata"].get("labels", {}).get("app") == "pets"}
    lines = sorted(lab.dig(client, "+short", "SRV", "_http._tcp.pets.default.svc.cluster.local").stdout.splitlines())
    weight = 100 // len(hosts)
    assert lines == sorted(f"0 {weight} 80 {h}.pets.default.svc.cluster.local." for h in hosts)
    # the targets come with their addresses in the additional section
    full = lab.dig(client, "SRV", "_http._tcp.pets.default.svc.cluster.local").stdout
    assert "pet-0.pets.default.svc.cluster.local. 5 IN A" in " ".join(full.split())
    unnamed = lab.dig(client, "SRV", "_http._tcp.webapp1-clusterip-svc.default.svc.cluster.local").stdout
    assert "status: NXDOMAIN" in unnamed  # an unnamed port has no SRV record


def test_ptr_for_cluster_ips_and_pod_ips(lab: DnsLab) -> None:
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    svc_ip = lab.service_ip("webapp1-clusterip-svc")
    assert lab.dig(client, "+short", "-x", svc_ip).stdout.split() == ["webapp1-clusterip-svc.default.svc.cluster.local."]
    pet = next(p["status"]["podIP"] for p in lab.pods() if p["metadata"]["name"] == "pet-0")
    assert lab.dig(client, "+short", "-x", pet).stdout.split() == ["pet-0.pets.default.svc.cluster.local."]
    r = lab.in_pod(client, "getent", "hosts", svc_ip)  # glibc's own reverse lookup
    assert r.stdout.split() == [svc_ip, "webapp1-clusterip-svc.default.svc.cluster.local"]
    miss = lab.dig(client, "-x", "10.255.255.254").stdout
    assert "status: SERVFAIL" in miss  # fallthrough in-addr.arpa, and no upstream after it


def test_external_name_is_a_cname(lab: DnsLab) -> None:
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    out = lab.dig(client, "db-ext.default.svc.cluster.local").stdout
    assert "status: NOERROR" in out
    assert "db-ext.default.svc.cluster.local. 5 IN CNAME db.example.com." in " ".join(out.split())
    assert lab.dig(client, "+short", "CNAME", "db-ext.default.svc.cluster.local").stdout.split() == ["db.example.com."]
    # a target inside the cluster is followed: glibc gets the address, curl reaches the pods
    ip = lab.service_ip("webapp1-clusterip-svc")
    r = lab.in_pod(client, "getent", "hosts", "webapp1-alias")
    assert r.stdout.split()[0] == ip, r
    r = lab.in_pod(client, "curl", "-sS", "--max-time", "5", "http://webapp1-alias/")
    assert "processed by host: webapp1-" in r.stdout, r


def test_unknown_names(lab: DnsLab) -> None:
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    out = lab.dig(client, "nope.default.svc.cluster.local").stdout
    assert "status: NXDOMAIN" in out and "IN SOA ns.dns.cluster.local. hostmaster.cluster.local." in " ".join(out.split())
    nodata = lab.dig(client, "AAAA", "webapp1-clusterip-svc.default.svc.cluster.local").stdout
    assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata  # IPv4 only: NODATA, not NXDOMAIN
    assert lab.in_pod(client, "getent", "hosts", "nope").returncode == 2  # glibc: not found
    assert "status: SERVFAIL" in lab.dig(client, "example.com").stdout  # no upstream in the lab


def test_large_answers_truncate_over_udp_and_complete_over_tcp(lab: DnsLab) -> None:
    lab.apply(_many(100))
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    name = "many.default.svc.cluster.local"
    wait_for(lambda: len(_ips(lab.dig(client, "+short", "+tcp", name).stdout)) == 100, 10, "100 addresses")
    udp = lab.dig(client, "+ignore", "+noedns", name).stdout
    assert " tc" in udp.split("flags:")[1].split(";")[0]  # cut to 512 bytes, TC set
    assert len(_ips(lab.dig(client, "+short", name).stdout)) == 100  # dig retries over TCP by itself
    assert len(_ips(lab.dig(client, "+short", "+bufsize=4096", name).stdout)) == 100  # EDNS: fits in UDP


def test_guestbook_all_in_one_resolves_every_name(lab: DnsLab) -> None:
    lab.podnet("apply", "-f", str(REPO / "examples" / "guestbook" / "all-in-one.yaml"))
    frontends = lab.ready_pods("frontend-", 3, timeout=90)
    lab.ready_pods("redis-leader-", 1, timeout=90)
    followers = lab.ready_pods("redis-follower-", 2, timeout=90)
    for pod in (frontends[0]["metadata"]["name"], followers[0]["metadata"]["name"]):
        for svc in ("frontend", "redis-leader", "redis-follower"):
            r = lab.in_pod(pod, "getent", "hosts", svc)
            assert r.stdout.split() == [lab.service_ip(svc), f"{svc}.default.svc.cluster.local"], (pod, svc, r)
    r = lab.in_pod(followers[0]["metadata"]["name"], "curl", "-sS", "--max-time", "5", "http://frontend/")
    assert "processed by host: frontend-" in r.stdout, r


def test_each_dns_server_is_a_kube_dns_endpoint_and_comes_back_after_kill_9(lab: DnsLab) -> None:
    from podnet.lab.state import LabState

    st = LabState.load(lab.name)
    assert st is not None
    slices = json.loads(lab.podnet("get", "endpointslices", "-n", "kube-system", "-o", "json").stdout)["items"]
    addrs = sorted(a for s in slices for e in s["endpoints"] for a in e["addresses"])
    assert addrs == sorted(n.underlay_ip for n in st.spec.dns_nodes)
    client = _webapp_pods(lab)[0]["metadata"]["name"]
    for ip in addrs:  # each server answers on its own address too
        assert lab.dig(client, f"@{ip}", "+short", "kube-dns.kube-system.svc.cluster.local").stdout.split() == ["10.96.0.10"]
    old = st.procs["node1/dns"]
    os.kill(old.pid, signal.SIGKILL)
    # Until it is back (or its lease expires) the dead server's address stays an endpoint, and a query the
    # node sends there is refused, as one sent to a CoreDNS pod that died before its readiness failed.

    def restarted() -> bool:
        now = LabState.load(lab.name)
        rec = now.procs.get("node1/dns") if now else None
        return rec is not None and rec.pid != old.pid and lab.dig(
            client, f"@{addrs[0]}", "+short", "kube-dns.kube-system.svc.cluster.local").stdout.split() == ["10.96.0.10"]

    wait_for(restarted, 30, "node1's DNS server restarted by the supervisor and answering")
    r = lab.in_pod(client, "getent", "hosts", "webapp1-clusterip-svc")
    assert r.returncode == 0, r
