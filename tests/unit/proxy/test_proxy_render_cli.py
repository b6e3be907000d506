"""`podnet proxy render`: the restore input of a full sync, from files, with field-naming errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from podnet.cli.main import app
from tests.unit.proxy.proxy_golden_support import GOLDEN_DIR, SHARED_GOLDEN, sort_like_kube_proxy

REPO = Path(__file__).resolve().parents[3]

OBJECTS = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
- {addresses: [10.244.2.5], nodeName: n2}
ports: [{name: http, port: 8080}]
"""


def run(*args):
    res = CliRunner().invoke(app, ["proxy", "render", *args], standalone_mode=False, catch_exceptions=True)
    return res


def _podnet(*args):
    return subprocess.run([sys.executable, "-m", "podnet.cli.main", "proxy", "render", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_render_with_config_and_facts(tmp_path):
    (tmp_path / "o.yaml").write_text(OBJECTS)
    (tmp_path / "f.yaml").write_text("nodeName: n1\nnodeIPs: [192.168.0.2]\nnfacct: true\nrandomFully: true\n")
    (tmp_path / "c.yaml").write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n")
    p = _podnet("--mode", "iptables", "-f", str(tmp_path / "o.yaml"), "--config", str(tmp_path / "c.yaml"),
                "--host-facts", str(tmp_path / "f.yaml"))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("*filter\n") and out.endswith("COMMIT\n")
    assert "-j MASQUERADE --random-fully" in out
    assert "-m nfacct --nfacct-name localhost_nps_accepted_pkts" in out
    assert "! -s 10.244.0.0/16 -j KUBE-MARK-MASQ" in out
    assert "--or-mark 0x00004000" in out
    assert '--comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000' in out


def test_render_golden_case_file_uses_its_proxier_block():
    p = _podnet("-f", str(GOLDEN_DIR / "overall.input.yaml"))
    assert p.returncode == 0, p.stderr
    assert sort_like_kube_proxy(p.stdout) == (GOLDEN_DIR / "overall.expected.txt").read_text()


@pytest.mark.skipif(not SHARED_GOLDEN.exists(), reason="shared/ golden folder absent")
def test_render_shared_step_one():
    p = _podnet("-f", str(SHARED_GOLDEN / "iptables-syncrepeated-1-initial.input.yaml"))
    assert p.returncode == 0, p.stderr
    assert sort_like_kube_proxy(p.stdout) == (SHARED_GOLDEN / "iptables-syncrepeated-1-initial.expected.txt").read_text()


def test_bad_inputs_exit_1_naming_fields(tmp_path):
    (tmp_path / "o.yaml").write_text(OBJECTS.replace("port: 80,", "port: '80',"))
    (tmp_path / "f.yaml").write_text("nodeName: n1\nnodeIPs: [300.0.0.1]\nextra: 1\n")
    (tmp_path / "c.yaml").write_text("kind: KubeProxyConfiguration\niptables: {masqueradeBit: 99}\n")
    p = _podnet("--mode", "ipvs", "-f", str(tmp_path / "o.yaml"), "--config", str(tmp_path / "c.yaml"),
                "--host-facts", str(tmp_path / "f.yaml"))
    assert p.returncode == 1
    err = p.stderr
    for fragment in ("--mode: 'ipvs'", "iptables.masqueradeBit: 99", "nodeIPs", "300.0.0.1", "extra: 1: unknown field",
                     "port"):
        assert fragment in err, (fragment, err)
    assert p.stdout == ""


def test_missing_objects_file(tmp_path):
    p = _podnet("-f", str(tmp_path / "nope.yaml"))
    assert p.returncode == 1 and "nope.yaml" in p.stderr


def test_pods_give_selector_services_their_endpoints(tmp_path):
    (tmp_path / "o.yaml").write_text("""
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 10.244.1.7, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: default, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 10.244.1.8, conditions: [{type: Ready, status: "True"}]}
""")
    (tmp_path / "f.yaml").write_text("nodeName: n1\nnodeIPs: [192.168.0.2]\nnfacct: false\nrandomFully: false\n")
    p = _podnet("-f", str(tmp_path / "o.yaml"), "--host-facts", str(tmp_path / "f.yaml"))
    assert p.returncode == 0, p.stderr
    assert "-j DNAT --to-destination 10.244.1.7:8080" in p.stdout
    assert "10.244.1.8" not in p.stdout


@pytest.mark.skipif(not SHARED_GOLDEN.exists(), reason="shared/ golden folder absent")
def test_render_accepts_the_top_level_case_format_with_interfaces():
    # nftables-overall.input.yaml holds TestOverallIPTablesRules' objects at top level, node addresses as
    # `interfaces`, and nodePortAddresses [192.168.0.2/32, 2001:db8::1/128]: in iptables terms the only
    # difference from TestOverallIPTablesRules is the final KUBE-NODEPORTS jump, per node IP.
    p = _podnet("-f", str(SHARED_GOLDEN / "nftables-overall.input.yaml"))
    assert p.returncode == 0, p.stderr
    expected = (GOLDEN_DIR / "overall.expected.txt").read_text().replace(
        '"kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL',
        '"kubernetes service nodeports; NOTE: this must be the last rule in this chain" -d 192.168.0.2',
    )
    assert sort_like_kube_proxy(p.stdout) == expected


def test_objects_from_stdin_render_like_a_file(tmp_path):
    """-f - reads the objects from standard input, as `kubectl apply -f -` does."""
    text = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1}
spec: {clusterIP: 172.30.0.9, ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: ns1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.0.1.7]}]
ports: [{name: http, port: 8080, protocol: TCP}]
"""
    f = tmp_path / "objs.yaml"
    f.write_text(text)
    from_file = _podnet("-f", str(f))
    from_stdin = subprocess.run([sys.executable, "-m", "podnet.cli.main", "proxy", "render", "-f", "-"], input=text,
                                capture_output=True, text=True, cwd=REPO, timeout=60)
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_stdin.stderr
    assert "--to-destination 10.0.1.7:8080" in from_stdin.stdout
    assert from_stdin.stdout == from_file.stdout
    bad = subprocess.run([sys.executable, "-m", "podnet.cli.main", "proxy", "render", "-f", "-"], input=": : :",
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 1 and "line 1" in bad.stderr


def test_a_service_without_cluster_ip_is_named_on_stderr_and_gets_no_rules(tmp_path):
    unallocated = OBJECTS.replace("  clusterIP: 10.96.0.10\n", "").replace("name: web,", "name: web2,")
    headless = OBJECTS.replace("clusterIP: 10.96.0.10", "clusterIP: None").replace("name: web,", "name: web3,")
    (tmp_path / "o.yaml").write_text(OBJECTS + "---" + unallocated + "---" + headless)
    p = _podnet("--mode", "iptables", "-f", str(tmp_path / "o.yaml"))
    assert p.returncode == 0, p.stderr
    assert "Service/default/web2: spec.clusterIP is not set" in p.stderr
    assert "web3" not in p.stderr and "Service/default/web:" not in p.stderr  # headless, allocated: no word
    assert "default/web:http" in p.stdout and "default/web2" not in p.stdout


def test_every_f_is_read_and_pods_in_one_file_give_a_service_in_another_its_endpoints(tmp_path):
    (tmp_path / "svc.yaml").write_text("""apiVersion: v1
kind: Service
metadata: {name: api}
spec: {clusterIP: 10.96.0.20, selector: {app: api}, ports: [{name: http, port: 80, targetPort: 8080}]}
""")
    (tmp_path / "pods.yaml").write_text("""apiVersion: v1
kind: Pod
metadata: {name: api-1, labels: {app: api}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.244.1.5, phase: Running, conditions: [{type: Ready, status: "True"}]}
""")
    (tmp_path / "slice.yaml").write_text(OBJECTS)
    p = _podnet("-f", str(tmp_path / "svc.yaml"), "-f", str(tmp_path / "pods.yaml"), "-f", str(tmp_path / "slice.yaml"))
    assert p.returncode == 0, p.stderr
    assert '--comment "default/api:http -> 10.244.1.5:8080"' in p.stdout  # the Service of svc.yaml, pods.yaml's Pod
    assert "--to-destination 10.244.2.5:8080" in p.stdout  # slice.yaml's own Service and slice
    golden = _podnet("-f", str(GOLDEN_DIR / "overall.input.yaml"), "-f", str(tmp_path / "svc.yaml"))
    assert golden.returncode == 1 and "a kube-proxy golden case must be the only -f" in golden.stderr


NO_RULES = """
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  type: ExternalName
  externalName: db.example.com
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-headless-1, namespace: default, labels: {kubernetes.io/service-name: web-headless}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.6], nodeName: n1}
ports: [{name: http, port: 8080}]
"""


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_external_name_and_headless_services_render_no_rules(tmp_path, mode):
    """As kube-proxy: an ExternalName Service is only a DNS name and a headless one is reached by its pods'
    own addresses, so neither adds a rule; the output equals that of the other objects alone."""
    (tmp_path / "plain.yaml").write_text(OBJECTS)
    (tmp_path / "more.yaml").write_text(OBJECTS + NO_RULES)
    plain = _podnet("--mode", mode, "-f", str(tmp_path / "plain.yaml"))
    more = _podnet("--mode", mode, "-f", str(tmp_path / "more.yaml"))
    assert plain.returncode == 0 and more.returncode == 0, (plain.stderr, more.stderr)
    assert "10.244.1.5" in plain.stdout  # the plain Service's endpoint is rendered
    assert more.stdout == plain.stdout
    assert "10.244.1.6" not in more.stdout and "5432" not in more.stdout


def _named(name: str, ip: str, node_port: int) -> str:
    return (OBJECTS.replace("name: web,", f"name: {name},").replace("web-1", f"{name}-1")
            .replace("service-name: web", f"service-name: {name}").replace("10.96.0.10", ip)
            .replace("nodePort: 30080", f"nodePort: {node_port}"))


def test_previous_prints_kube_proxys_partial_sync(tmp_path):
    """From three Services to one changed, one unchanged and one gone: the changed one's chains are
    written, the unchanged one's are not, the removed one's are deleted, every top-level chain is whole."""
    api, old = _named("api", "10.96.0.11", 30081), _named("old", "10.96.0.12", 30082)
    (tmp_path / "before.yaml").write_text("---\n".join([OBJECTS, api, old]))
    (tmp_path / "after.yaml").write_text("---\n".join([OBJECTS.replace("10.244.2.5", "10.244.2.6"), api]))
    facts = tmp_path / "f.yaml"
    facts.write_text("nodeName: n1\nnodeIPs: [192.168.0.2]\n")
    full = _podnet("-f", str(tmp_path / "after.yaml"), "--host-facts", str(facts))
    part = _podnet("-f", str(tmp_path / "after.yaml"), "--host-facts", str(facts),
                   "--previous", str(tmp_path / "before.yaml"))
    assert full.returncode == 0 and part.returncode == 0, full.stderr + part.stderr

    def svc_rules(text: str, name: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.startswith(("-A KUBE-SVC-", "-A KUBE-SEP-"))
                and f"default/{name}:http" in ln]

    assert svc_rules(part.stdout, "web") == svc_rules(full.stdout, "web") and "10.244.2.6" in part.stdout
    assert svc_rules(full.stdout, "api") and not svc_rules(part.stdout, "api")  # unchanged: not rewritten
    assert all('"default/api:http cluster IP"' in t for t in (full.stdout, part.stdout))  # KUBE-SERVICES whole
    assert "\n-X KUBE-SVC-" in part.stdout and "-X" not in full.stdout  # old's chains deleted
    assert "default/old" not in part.stdout


def test_previous_is_for_iptables_only(tmp_path):
    (tmp_path / "o.yaml").write_text(OBJECTS)
    p = _podnet("--mode", "nftables", "-f", str(tmp_path / "o.yaml"), "--previous", str(tmp_path / "o.yaml"))
    assert p.returncode != 0 and "--previous" in p.stderr and "iptables only" in p.stderr


def test_render_decodes_and_renders_with_the_collector_paused(tmp_path, monkeypatch):
    import gc

    import podnet.proxy.tracker as tracker

    seen = []
    real = tracker.desired_state_from_objects

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker, "desired_state_from_objects", spy)
    (tmp_path / "o.yaml").write_text(OBJECTS)
    assert gc.isenabled()
    res = run("--mode", "nftables", "-f", str(tmp_path / "o.yaml"))
    assert res.exit_code == 0, res.output
    assert seen == [False] and gc.isenabled()


def test_a_file_is_read_once_and_its_problems_name_it(tmp_path, monkeypatch):
    reads = []
    real = Path.read_bytes

    def counting(self):
        reads.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    (tmp_path / "o.yaml").write_text(OBJECTS)
    res = run("--mode", "nftables", "-f", str(tmp_path / "o.yaml"))
    assert res.exit_code == 0, res.output
    assert reads == ["o.yaml"]
    (tmp_path / "bad.yaml").write_text("kind: Service\n  : [\n")
    (tmp_path / "latin1.yaml").write_bytes(b"kind: Service\nmetadata: {name: caf\xe9}\n")
    res = run("--mode", "nftables", "-f", str(tmp_path / "bad.yaml"), "-f", str(tmp_path / "latin1.yaml"))
    problems = res.exception.problems
    assert [(p.obj, p.field) for p in problems] == [(str(tmp_path / "bad.yaml"), "(yaml)"),
                                                    (str(tmp_path / "latin1.yaml"), "(file)")]
    assert problems[0].reason.startswith("line 2, column ")
