"""`podnet demo`: the classic Service and pod-to-pod walkthrough on a 2-node lab, step by step.

Every step runs real commands inside the lab's namespaces, shows their output, and says PASS or FAIL from
what actually happened (responses received, ports bound, routes present), never from what should have.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.tree import Tree

from podnet.console import console as podnet_console
from podnet.console import full_width, rule
from podnet.lab import cluster, procs, teardown, topology
from podnet.lab.state import LabState, lab_dir
from podnet.lab.supervisor import podnet_exe
from podnet.net import exec as nexec
from podnet.net import netns

SERVICE = "webapp1-clusterip-svc"
NODEPORT_SERVICE = "webapp1-nodeport-svc"
CLIENT_POD = "client"
READY_TIMEOUT = 20.0

CLIENT_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels: {app: client}
spec:
  nodeName: node1
  containers:
  - name: client
    command: [sleep, infinity]
"""


def url_host(ip: str) -> str:
    """An address as it goes into a URL: IPv6 in brackets."""
    return f"[{ip}]" if ":" in ip else ip


def examples_dir() -> Path:
    """examples/webapp1 of this checkout (the demo's manifests)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "examples" / "webapp1"
        if cand.is_dir():
            return cand
    raise FileNotFoundError("examples/webapp1 not found next to the podnet sources")


@dataclass
class Demo:
    name: str = "demo"
    backend: str = "vxlan"
    ip_family: str = "ipv4"  # ipv4 | ipv6 | dual: the lab's families (topology.IP_FAMILIES)
    console: Console = field(default_factory=podnet_console)
    results: list[tuple[str, bool]] = field(default_factory=list)
    st: LabState | None = None

    @property
    def store_url(self) -> str:
        return f"sqlite:///{lab_dir(self.name)}/state.db"

    # -- helpers ---------------------------------------------------------------------------------------
    @property
    def v6(self) -> bool:
        """Whether the cluster's default family (the one every single-family step uses) is IPv6."""
        return self.ip_family == "ipv6"

    @property
    def host_bits(self) -> int:
        return 128 if self.v6 else 32

    def cluster_ips(self, name: str) -> list[str]:
        spec = self.get("Service", name)["spec"]
        return list(spec.get("clusterIPs") or [spec["clusterIP"]])

    def node_ips(self, node: topology.NodeSpec) -> list[str]:
        return node.internal_ips(self.ip_family)

    def podnet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [podnet_exe(), "--store", self.store_url, *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"podnet {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def sh(self, ns: str, argv: list[str], *, show: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(netns.exec_argv(ns, argv), capture_output=True, text=True, timeout=timeout)
        if show:
            self.console.print(f"[dim]$ podnet lab exec {self._who(ns)} -- {escape(' '.join(argv))}[/]")
            out = (r.stdout + r.stderr).rstrip()
            if out:
                self.console.print(textwrap.indent(out, "  "), markup=False, highlight=False)
        return r

    def _who(self, ns: str) -> str:
        assert self.st is not None
        for n in self.st.spec.node_specs:
            if n.netns == ns:
                return n.name
        return ns.removeprefix(f"{self.st.spec.prefix}default.")

    def step(self, title: str) -> None:
        rule(self.console, f"[bold cyan]{title}")

    def verdict(self, what: str, ok: bool, detail: str = "") -> bool:
        self.results.append((what, ok))
        mark = "[bold green]PASS[/]" if ok else "[bold red]FAIL[/]"
        # escaped: an IPv6 address in brackets ([fd00::1]:80) is not rich markup
        self.console.print(f"{mark} {escape(what)}{(': ' + escape(detail)) if detail else ''}")
        return ok

    def get(self, kind: str, name: str) -> dict:
        from podnet.store import keys, open_store

        store = open_store(self.store_url)
        try:
            kv = store.get(keys.resource(kind, "default", name))
            return json.loads(kv.value) if kv else {}
        finally:
            store.close()

    def pod_ns(self, pod: str) -> str:
        assert self.st is not None
        return self.st.spec.pod_netns("default", pod)

    def http_counts(self, ns: str, url_host: str, port: int, n: int) -> Counter[str]:
        """n HTTP requests, each on a new connection (a new conntrack entry, so a new load-balancing draw)."""
        script = textwrap.dedent(f"""
            import socket, collections, json
            c = collections.Counter()
            for _ in range({n}):
                try:
                    s = socket.create_connection(("{url_host}", {port}), timeout=2)
                    s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
                    data = b""
                    while True:
                        b = s.recv(4096)
                        if not b: break
                        data += b
                    s.close()
                    body = data.split(b"\\r\\n\\r\\n", 1)[-1].decode(errors="replace")
                    c[body.split("host: ")[-1].split(" ")[0] if "host: " in body else body.strip()[:40]] += 1
                except OSError as e:
                    c["error: " + type(e).__name__] += 1
            print(json.dumps(dict(c)))
        """)
        r = subprocess.run(netns.exec_argv(ns, [sys.executable, "-c", script]), capture_output=True, text=True, timeout=60)
        try:
            return Counter(json.loads(r.stdout.strip() or "{}"))
        except ValueError:
            return Counter({"error: " + r.stderr.strip()[-80:]: n})

    def curl(self, ns: str, url: str) -> subprocess.CompletedProcess[str]:
        return self.sh(ns, ["curl", "-sS", "--max-time", "3", url])

    # -- scenario --------------------------------------------------------------------------------------
    def up(self) -> None:
        self.step("Setting up a 2-node lab (namespaces, underlay, overlay, proxy, pods)")
        t = time.monotonic()
        if lab_dir(self.name).exists() or teardown.lab_namespaces(self.name):
            cluster.down(self.name)
        spec = topology.build(self.name, 2, self.backend, "iptables", "sqlite", ip_family=self.ip_family)
        self.st = cluster.up(spec, self.store_url)
        self.console.print(f"lab up in {time.monotonic() - t:.1f} s ({self.ip_family}): nodes "
                           + ", ".join(f"{n.name} ({', '.join(self.node_ips(n))})" for n in spec.node_specs))
        # Services are allocated from the lab's ranges (both families on a dual lab), as its API server does.
        cidr = ["--service-cidr", spec.service_cidr]
        r = self.podnet("apply", *cidr, "-f", str(examples_dir()))
        self.console.print(textwrap.indent(r.stdout.rstrip(), "  "), markup=False)
        r = subprocess.run([podnet_exe(), "--store", self.store_url, "apply", *cidr, "-f", "-"],
                           input=CLIENT_MANIFEST, capture_output=True, text=True)
        self.console.print(textwrap.indent((r.stdout + r.stderr).rstrip(), "  "), markup=False)
        self.wait_pods_ready()
        self.console.print(f"pods ready {time.monotonic() - t:.1f} s after start")

    def wait_pods_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        from podnet.store import keys, open_store

        store = open_store(self.store_url)
        try:
            while time.monotonic() < deadline:
                pods = [json.loads(kv.value) for kv in store.list(keys.kind_prefix("Pod")).items]
                ready = [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                                for c in (p.get("status") or {}).get("conditions") or [])]
                if pods and len(ready) == len(pods):
                    return
                time.sleep(0.1)
        finally:
            store.close()
        raise RuntimeError(f"pods not ready within {READY_TIMEOUT:.0f} s (see {lab_dir(self.name)}/logs)")

    def webapp_pods(self) -> list[dict]:
        from podnet.store import keys, open_store

        store = open_store(self.store_url)
        try:
            pods = [json.loads(kv.value) for kv in store.list(keys.kind_prefix("Pod")).items]
        finally:
            store.close()
        return sorted((p for p in pods if (p["metadata"].get("labels") or {}).get("app") == "webapp1-clusterip"),
                      key=lambda p: p["metadata"]["name"])

    def describe_service(self) -> str:
        """The tutorial's `kubectl describe svc`, by the real kubectl against the lab's API server; podnet's
        own describe only where no kubectl is installed (and it says so)."""
        kubectl = shutil.which("kubectl")
        assert self.st is not None
        if kubectl is None:
            self.console.print("[yellow]kubectl is not installed: showing podnet's own describe instead[/]")
            self.console.print(f"[dim]$ podnet describe service {SERVICE}[/]")
            return self.podnet("describe", "service", SERVICE).stdout
        from podnet.lab import apiserver

        kc = apiserver.kubeconfig_path(self.st)
        self.console.print(f"[dim]$ export KUBECONFIG=$(podnet lab kubeconfig --name {self.name})[/]")
        self.console.print(f"[dim]$ kubectl describe svc {SERVICE}[/]")
        r = subprocess.run([kubectl, "--kubeconfig", str(kc), "describe", "svc", SERVICE], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"kubectl describe svc {SERVICE} failed: {r.stderr.strip()}")
        return r.stdout

    def step_a_describe(self) -> None:
        self.step("a. The Service: kubectl describe svc " + SERVICE)
        assert self.st is not None
        out = self.describe_service()
        self.console.print(textwrap.indent(out.rstrip(), "  "), markup=False, highlight=False)
        pods = self.webapp_pods()
        ips = {i["ip"] for p in pods for i in p["status"].get("podIPs") or [{"ip": p["status"]["podIP"]}]}
        ep_line = next((line for line in out.splitlines() if line.startswith("Endpoints:")), "")
        # kubectl lists the EndpointSlices' addresses as ip:port (IPv6 in brackets), the first three and
        # "+ N more..."
        listed = {m.strip("[]") for m in re.findall(r"(\[[0-9a-f:]+\]|\d+\.\d+\.\d+\.\d+):\d+", ep_line)}
        more = re.search(r"\+ (\d+) more", ep_line)
        cips = self.cluster_ips(SERVICE)
        families = [ipaddress.ip_address(ip).version for ip in cips]
        self.verdict("type ClusterIP, an IP of each cluster family, both pods as Endpoints",
                     "ClusterIP" in out and families == list(self.st.spec.families) and len(pods) == 2
                     and listed <= ips and len(listed) + (int(more.group(1)) if more else 0) == len(ips)
                     and len(ips) == 2 * len(families),
                     f"{', '.join(cips)} -> {', '.join(sorted(listed)) or 'none'}" + (f" + {more.group(1)} more"
                                                                                       if more else ""))

    @property
    def save(self) -> str:
        return "ip6tables-save" if self.v6 else "iptables-save"

    def nat_rules(self, node_ns: str) -> str:
        return nexec.run([self.save, "-t", "nat"], netns=node_ns, check=False, timeout=None).stdout

    def wait_rules(self, node_ns: str, cluster_ip: str, n_eps: int) -> str:
        deadline = time.monotonic() + 10
        rules = ""
        while time.monotonic() < deadline:
            rules = self.nat_rules(node_ns)
            if f"-d {cluster_ip}/{self.host_bits}" in rules and rules.count("-j DNAT") >= n_eps:
                return rules
            time.sleep(0.1)
        return rules

    def step_b_rules(self) -> None:
        assert self.st is not None
        self.step("b. Its NAT rules, read back from node1's kernel")
        node = self.st.spec.node_specs[0]
        cip = self.cluster_ips(SERVICE)[0]
        rules = self.wait_rules(node.netns, cip, 2)
        self.console.print(f"[dim]$ podnet lab exec node1 -- {self.save} -t nat | grep {SERVICE}[/]")
        for line in rules.splitlines():
            if SERVICE in line or any(c in line for c in self._chains_of(rules, cip)):
                self.console.print("  " + line, markup=False, highlight=False)
        tree, probs, dnats = self._tree(rules, cip)
        self.console.print(tree)
        self.verdict("KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP with probability 0.5 and DNAT to each pod",
                     [round(float(p), 6) for p in probs] == [0.5] and len(dnats) == 2, ", ".join(dnats))

    def _chains_of(self, rules: str, cip: str) -> set[str]:
        svc = set(re.findall(rf"-A KUBE-SERVICES .*-d {re.escape(cip)}/{self.host_bits} .*-j (KUBE-SVC-\w+)", rules))
        seps = {m for s in svc for m in re.findall(rf"-A {s} .*-j (KUBE-SEP-\w+)", rules)}
        return svc | seps

    def _tree(self, rules: str, cip: str) -> tuple[Tree, list[str], list[str]]:
        tree = Tree("[bold]KUBE-SERVICES")
        probs: list[str] = []
        dnats: list[str] = []
        dst_re = rf"-A KUBE-SERVICES .*-d {re.escape(cip)}/{self.host_bits} .*--dport (\d+) -j (KUBE-SVC-\w+)"
        for svc in sorted(set(re.findall(dst_re, rules))):
            port, chain = svc
            sb = tree.add(f"{chain} ({cip}:{port})")
            for line in re.findall(rf"^-A {chain} .*-j KUBE-SEP-\w+$", rules, re.M):
                sep = line.rsplit(" ", 1)[-1]
                prob = re.search(r"--probability (\S+)", line)
                if prob:
                    probs.append(prob.group(1))
                dnat = re.search(rf"-A {sep} .*--to-destination (\S+)", rules)
                dst = dnat.group(1) if dnat else "?"
                dnats.append(dst)
                sb.add(f"{sep} ({dst})" + (f"  probability {prob.group(1)}" if prob else "  (the rest)"))
        return tree, probs, dnats

    def step_c_requests(self) -> None:
        self.step("c. 100 HTTP requests from the client pod to " + ("each ClusterIP" if self.ip_family == "dual"
                                                                     else "the ClusterIP"))
        names = {p["metadata"]["name"] for p in self.webapp_pods()}
        for cip in self.cluster_ips(SERVICE):
            self.console.print(f"[dim]$ podnet lab exec client -- (100 x) curl {escape(f'http://{url_host(cip)}/')}[/]")
            counts = self.http_counts(self.pod_ns(CLIENT_POD), cip, 80, 100)
            for who, n in sorted(counts.items()):
                self.console.print(f"  {n:4d}  {who}")
            self.verdict(f"both pods answer on {cip}", set(counts) == names and sum(counts.values()) == 100,
                         ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))

    def step_d_nodeport(self) -> None:
        assert self.st is not None
        self.step("d. NodePort: reachable from the other node, held, independent of the proxy process")
        n1, n2 = self.st.spec.node_specs[:2]
        svc = self.get("Service", NODEPORT_SERVICE)
        np_ = svc["spec"]["ports"][0]["nodePort"]
        for ip in self.node_ips(n1):  # each family's node address
            r = self.curl(n2.netns, f"http://{url_host(ip)}:{np_}/")
            self.verdict(f"node2 -> node1 {url_host(ip)}:{np_}", "processed by host" in r.stdout)
        url = f"http://{url_host(self.node_ips(n1)[0])}:{np_}/"

        any_ip = "::" if self.v6 else "0.0.0.0"
        bind = self.sh(n1.netns, [sys.executable, "-c", textwrap.dedent(f"""
            import socket
            s = socket.socket(socket.{"AF_INET6" if self.v6 else "AF_INET"})
            try:
                s.bind(("{any_ip}", {np_})); print("bound: the port was free")
            except OSError as e:
                print("bind {url_host(any_ip)}:{np_} ->", e.strerror)
        """)])
        self.verdict("the port is held: another process cannot bind it", "Address already in use" in bind.stdout)

        st = LabState.load(self.name)
        assert st is not None and st.supervisor is not None
        proxy = st.procs[f"{n1.name}/proxy"]
        # Pause the supervisor so the gap is visible: otherwise it restarts the proxy within 0.2 s.
        os.kill(st.supervisor.pid, signal.SIGSTOP)
        intruder = None
        try:
            self.console.print(f"[dim]$ kill -9 {proxy.pid}   # node1's podnet proxy[/]")
            os.kill(proxy.pid, signal.SIGKILL)
            deadline = time.monotonic() + 3
            while procs.alive(proxy) and time.monotonic() < deadline:
                time.sleep(0.02)
            r = self.curl(n2.netns, url)
            self.verdict("traffic still flows with the proxy dead", "processed by host" in r.stdout)
            bind_all = ["--bind", "::"] if self.v6 else []
            self.console.print(f"[dim]$ podnet lab exec node1 -- python3 -m http.server {' '.join([*bind_all, str(np_)])}"
                               "   # takes the freed port[/]")
            intruder = procs.spawn(netns.exec_argv(n1.netns, [sys.executable, "-m", "http.server", *bind_all, str(np_)]),
                                   lab_dir(self.name) / "logs" / "intruder.log")
            listening = False
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not listening:
                ss = subprocess.run(netns.exec_argv(n1.netns, ["ss", "-Hltn", f"sport = :{np_}"]),
                                    capture_output=True, text=True).stdout
                listening = bool(ss.strip())
                time.sleep(0.05)
            r = self.curl(n2.netns, url)
            self.verdict("a process now listening on the port still does not get the traffic",
                         listening and "processed by host" in r.stdout and "Directory listing" not in r.stdout)
        finally:
            if intruder is not None:
                procs.stop(intruder)
            os.kill(st.supervisor.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        restarted = None
        while time.monotonic() < deadline:
            st2 = LabState.load(self.name)
            rec = st2.procs.get(f"{n1.name}/proxy") if st2 else None
            if rec and rec.pid != proxy.pid and procs.alive(rec):
                restarted = rec
                break
            time.sleep(0.1)
        self.verdict("the supervisor restarted the proxy", restarted is not None,
                     f"new pid {restarted.pid}" if restarted else "")

    def step_e_pod_to_pod(self) -> None:
        assert self.st is not None
        self.step("e. Pod to pod across nodes")
        n1, n2 = self.st.spec.node_specs[:2]
        pods = self.webapp_pods()
        remote = next((p for p in pods if p["spec"].get("nodeName") == n2.name), None)
        for version in self.st.spec.families:
            subnet2 = self._subnet(n2.name, version)
            routes = self.sh(n1.netns, ["ip", f"-{version}", "route"])
            dev = {"vxlan": "flannel.1" if version == 4 else "flannel-v6.1", "udp": "flannel0",
                   "host-gw": n1.iface}[self.st.spec.backend]
            self.verdict(f"node1 routes {subnet2} (node2's pods) via {dev}",
                         any(line.startswith(subnet2) and dev in line for line in routes.stdout.splitlines()))
        ports = self.sh(n1.netns, ["ip", "-br", "link", "show", "master", "cni0"])
        self.verdict("cni0 on node1 has the pods' veths as ports", len(ports.stdout.strip().splitlines()) >= 2)
        if remote is None:
            self.verdict("a webapp1 pod runs on node2", False)
            return
        for ip in [i["ip"] for i in remote["status"].get("podIPs") or [{"ip": remote["status"]["podIP"]}]]:
            r = self.curl(self.pod_ns(CLIENT_POD), f"http://{url_host(ip)}/")
            self.verdict(f"client (node1) -> {remote['metadata']['name']} {ip} (node2)",
                         remote["metadata"]["name"] in r.stdout)

    def step_f_trace(self) -> None:
        self.step("f. The ClusterIP request's path, predicted from the kernel and checked against its trace")
        if self.v6:
            # not a check: there is nothing it could pass or fail on
            self.console.print("[yellow]SKIP[/] podnet trace reads IPv4 rules only; "
                               "an IPv6-only lab has no IPv4 ClusterIP to trace")
            return
        argv = ["trace", "--lab", self.name, "--from", CLIENT_POD, "--to", f"svc/{SERVICE}", "--verify"]
        self.console.print(f"[dim]$ podnet {' '.join(argv)}[/]")
        r = self.podnet(*argv, check=False)
        self.console.print(textwrap.indent((r.stdout + r.stderr).rstrip(), "  "), markup=False, highlight=False)
        self.verdict("podnet trace --verify: the kernel took the predicted path", r.returncode == 0
                     and "the kernel agrees" in r.stdout)

    def _subnet(self, node: str, version: int = 4) -> str:
        """A node's pod subnet of one family, from the subnet.env its overlay wrote."""
        assert self.st is not None
        env = dict(line.split("=", 1) for line in self.st.subnet_file(node).read_text().splitlines() if "=" in line)
        sub = env["FLANNEL_SUBNET" if version == 4 else "FLANNEL_IPV6_SUBNET"]
        return str(ipaddress.ip_interface(sub).network)

    def run(self, keep: bool = False) -> bool:
        t0 = time.monotonic()
        ok = False
        try:
            self.up()
            for s in (self.step_a_describe, self.step_b_rules, self.step_c_requests, self.step_d_nodeport,
                      self.step_e_pod_to_pod, self.step_f_trace):
                try:
                    s()
                except Exception as e:  # a broken step is a FAIL with its reason, and the demo goes on
                    self.verdict(s.__name__, False, f"{type(e).__name__}: {e}")
            ok = bool(self.results) and all(r for _, r in self.results)
        except Exception as e:
            self.verdict("lab setup", False, f"{type(e).__name__}: {e}")
        finally:
            passed = sum(1 for _, r in self.results if r)
            self.console.print(Panel(
                f"{passed}/{len(self.results)} checks passed in {time.monotonic() - t0:.1f} s",
                style="green" if ok else "red"), width=full_width(self.console))
            if keep and self.st is not None:
                self.console.print(f"lab {self.name} left up: PODNET_STORE={self.store_url} podnet lab status --name {self.name}")
            else:
                cluster.down(self.name)
        return ok
