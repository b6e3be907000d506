"""`podnet apply/get/describe/delete` through the installed entry point, on a temporary sqlite store.

No namespaces or kernel state: these run as any user; they are integration tests because they cross the
process boundary (argument parsing, exit codes, stdout/stderr) exactly as a user's shell does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from podnet.store import keys, open_store

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "webapp1"
_SCRIPT = Path(sys.executable).parent / "podnet"  # the console script `pip install` made
PODNET = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "podnet.cli.main"]

pytestmark = pytest.mark.integration


class Podnet:
    def __init__(self, tmp: Path) -> None:
        self.url = f"sqlite:///{tmp}/state.db"
        self.env = {**os.environ, "PODNET_STORE": self.url}
        self.env.pop("PODNET_SERVICE_CIDR", None)
        self.env.pop("PODNET_NODE_PORT_RANGE", None)

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODNET, *args], input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=60, cwd=REPO)

    def revision(self) -> int:
        store = open_store(self.url)
        try:
            return store.revision()
        finally:
            store.close()


@pytest.fixture
def podnet(tmp_path: Path) -> Podnet:
    return Podnet(tmp_path)


def test_apply_example_then_describe_shows_both_endpoints(podnet: Podnet) -> None:
    r = podnet("apply", "-f", "examples/webapp1/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "service/webapp1-clusterip-svc created",
        "service/webapp1-nodeport-svc created",
        "pod/webapp1-6b9f7c5d4-2xkqp created",
        "pod/webapp1-6b9f7c5d4-9mzt7 created",
    ]
    d = podnet("describe", "service", "webapp1-clusterip-svc")
    assert d.returncode == 0, d.stderr
    lines = d.stdout.splitlines()
    fields = {line[:26].strip(): line[26:] for line in lines}
    ip = fields["IP:"]
    assert re.fullmatch(r"10\.(9[6-9]|10[0-9]|11[01])\.\d+\.\d+", ip)  # inside 10.96.0.0/12
    assert lines == [
        "Name:                     webapp1-clusterip-svc",
        "Namespace:                default",
        "Labels:                   app=webapp1-clusterip",
        "Annotations:              <none>",
        "Selector:                 app=webapp1-clusterip",
        "Type:                     ClusterIP",
        "IP Family Policy:         PreferDualStack",  # a single-stack cluster gives it one family
        "IP Families:              IPv4",
        f"IP:                       {ip}",
        f"IPs:                      {ip}",
        "Port:                     <unset>  80/TCP",
        "TargetPort:               80/TCP",
        "Endpoints:                10.32.0.5:80,10.32.0.6:80",
        "Session Affinity:         None",
        "Internal Traffic Policy:  Cluster",
        "Events:                   <none>",
    ]
    n = podnet("describe", "svc", "webapp1-nodeport-svc")
    assert "NodePort:                 <unset>  30080/TCP" in n.stdout.splitlines()
    assert "Endpoints:                10.32.0.5:80,10.32.0.6:80" in n.stdout.splitlines()
    assert "External Traffic Policy:  Cluster" in n.stdout.splitlines()
    # a second apply changes nothing, not even the store revision
    rev = podnet.revision()
    again = podnet("apply", "-f", str(EXAMPLE))
    assert again.returncode == 0 and all(line.endswith(" unchanged") for line in again.stdout.splitlines())
    assert podnet.revision() == rev


def test_get_tables_and_formats(podnet: Podnet) -> None:
    assert podnet("apply", "-f", "examples/webapp1/").returncode == 0
    svc = podnet("get", "services")
    header, *rows = svc.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert [r.split()[:2] + r.split()[3:5] for r in rows] == [
        ["webapp1-clusterip-svc", "ClusterIP", "<none>", "80/TCP"],
        ["webapp1-nodeport-svc", "NodePort", "<none>", "80:30080/TCP"],
    ]
    pods = podnet("get", "pods", "-o", "wide").stdout.splitlines()
    assert pods[0].split()[:6] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert [p.split()[5] for p in pods[1:]] == ["10.32.0.5", "10.32.0.6"]
    slices = podnet("get", "endpointslices", "-A").stdout.splitlines()
    assert slices[0].split() == ["NAMESPACE", "NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert len(slices) == 3 and all("10.32.0.5,10.32.0.6" in s for s in slices[1:])
    doc = yaml.safe_load(podnet("get", "svc", "webapp1-nodeport-svc", "-o", "yaml").stdout)
    assert doc["kind"] == "Service" and doc["spec"]["ports"][0]["nodePort"] == 30080
    assert doc["metadata"]["resourceVersion"].isdigit() and doc["metadata"]["uid"]
    lst = json.loads(podnet("get", "pods", "-o", "json").stdout)
    assert lst["kind"] == "List" and len(lst["items"]) == 2
    assert podnet("get", "pods", "-n", "other").stderr.strip() == "No resources found in other namespace."
    missing = podnet("get", "svc", "nope")
    assert missing.returncode == 1 and 'services "nope" not found' in missing.stderr


def test_delete_frees_and_updates_endpoints(podnet: Podnet) -> None:
    assert podnet("apply", "-f", "examples/webapp1/").returncode == 0
    r = podnet("delete", "pod", "webapp1-6b9f7c5d4-2xkqp")
    assert r.returncode == 0 and r.stdout.strip() == 'pod "webapp1-6b9f7c5d4-2xkqp" deleted'
    d = podnet("describe", "service", "webapp1-clusterip-svc").stdout
    assert "Endpoints:                10.32.0.6:80" in d.splitlines()
    r = podnet("delete", "-f", "examples/webapp1/nodeport-service.yaml")
    assert r.returncode == 0, r.stderr
    store = open_store(podnet.url)
    try:
        assert store.get(keys.node_port(30080)) is None
        assert len(store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items) == 1
    finally:
        store.close()
    # the freed port can be taken again at once
    assert podnet("apply", "-f", "examples/webapp1/nodeport-service.yaml").returncode == 0
    again = podnet("delete", "svc", "gone")
    assert again.returncode == 1 and 'services "gone" not found' in again.stderr


def test_apply_from_stdin_and_namespace_flag(podnet: Podnet) -> None:
    text = (EXAMPLE / "clusterip-service.yaml").read_text()
    r = podnet("apply", "-n", "team", "-f", "-", stdin=text)
    assert r.returncode == 0, r.stderr
    assert "webapp1-clusterip-svc" in podnet("get", "svc", "-n", "team").stdout
    clash = podnet("apply", "-n", "team", "-f", "-", stdin=text.replace("metadata:\n", "metadata:\n  namespace: x\n"))
    assert clash.returncode == 1 and "metadata.namespace" in clash.stderr


SVC = """apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  type: NodePort
  selector: {app: x}
  ports:
  - {name: a, port: 80}
"""

BAD_INPUTS = [
    ("malformed-yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n", "(yaml)"),
    ("unknown-kind", SVC.replace("kind: Service", "kind: Servicey"), "kind"),
    ("wrong-apiversion", SVC.replace("apiVersion: v1", "apiVersion: apps/v1"), "apiVersion"),
    ("port-0", SVC.replace("port: 80", "port: 0"), "spec.ports[0].port"),
    ("port-65536", SVC.replace("port: 80", "port: 65536"), "spec.ports[0].port"),
    ("nodeport-out-of-range", SVC.replace("port: 80}", "port: 80, nodePort: 29999}"), "spec.ports[0].nodePort"),
    ("duplicate-port-names", SVC + "  - {name: a, port: 81}\n", "spec.ports[1].name"),
    ("clusterip-outside-cidr", SVC.replace("type: NodePort", "type: NodePort\n  clusterIP: 192.168.1.1"),
     "spec.clusterIP"),
    ("bad-protocol", SVC.replace("port: 80}", "port: 80, protocol: ICMP}"), "spec.ports[0].protocol"),
]


@pytest.mark.parametrize(("case", "text", "field"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_exits_1_names_the_field_and_writes_nothing(podnet: Podnet, tmp_path: Path, case: str,
                                                               text: str, field: str) -> None:
    assert podnet("apply", "-f", "examples/webapp1/").returncode == 0
    rev = podnet.revision()
    # a valid object in the same apply must not be written either
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLE / "clusterip-service.yaml").read_text().replace("webapp1-clusterip-svc", "ok-svc")
                   + "---\n" + text)
    r = podnet("apply", "-f", str(bad))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    errors = r.stderr.strip().splitlines()
    assert errors and all(line.startswith("error: ") for line in errors)
    assert any(f": {field}: " in line or line.endswith(f": {field}") for line in errors), errors
    assert podnet.revision() == rev


def test_every_problem_reported_at_once(podnet: Podnet, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SVC.replace("port: 80}", "port: 0, protocol: ICMP, nodePort: 70000}") + "  - {name: a, port: 81}\n")
    r = podnet("apply", "-f", str(bad))
    assert r.returncode == 1
    fields = {line.split(": ")[2] for line in r.stderr.strip().splitlines()}
    assert fields == {"spec.ports[0].port", "spec.ports[0].protocol", "spec.ports[0].nodePort", "spec.ports[1].name"}


def test_taken_node_port_and_store_unreachable(podnet: Podnet, tmp_path: Path) -> None:
    assert podnet("apply", "-f", "examples/webapp1/").returncode == 0
    rev = podnet.revision()
    clash = podnet("apply", "-f", "-", stdin=SVC.replace("port: 80}", "port: 80, nodePort: 30080}"))
    assert clash.returncode == 1
    assert "spec.ports[0].nodePort: 30080: provided port is already allocated" in clash.stderr
    assert podnet.revision() == rev
    # a store path that cannot be created: exit 2, one line
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = podnet("--store", f"sqlite:///{blocker}/sub/state.db", "get", "services")
    assert r.returncode == 2 and r.stderr.startswith("error: store unreachable")
    assert len(r.stderr.strip().splitlines()) == 1


def test_usage_errors_exit_1(podnet: Podnet) -> None:
    assert podnet("get", "widgets").returncode == 1
    assert podnet("apply").returncode == 1
    assert podnet("get", "svc", "-o", "toml").returncode == 1
    assert podnet("apply", "-f", "/nonexistent/file.yaml").returncode == 1


def test_label_selectors_on_get_and_delete(podnet: Podnet) -> None:
    assert podnet("apply", "-f", "examples/webapp1/").returncode == 0
    names = podnet("get", "svc", "-l", "app=webapp1-nodeport", "-o", "name").stdout.split()
    assert names == ["service/webapp1-nodeport-svc"]
    r = podnet("delete", "pods", "-l", "app in (webapp1-clusterip)")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    assert "Endpoints:                <none>" in podnet("describe", "svc", "webapp1-clusterip-svc").stdout
    bad = podnet("get", "pods", "-l", "a=b=c")
    assert bad.returncode == 1 and "--selector" in bad.stderr


def test_read_only_commands_create_no_store(podnet: Podnet, tmp_path: Path) -> None:
    """get/describe on a sqlite store that does not exist: a clear error, and no file (or folder) made."""
    missing = tmp_path / "typo" / "state.db"
    for argv in (["get", "services"], ["get", "nodes", "-o", "yaml"], ["describe", "service"]):
        r = podnet("--store", f"sqlite:///{missing}", *argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert r.stderr.startswith("error: store unreachable: sqlite store ") and len(r.stderr.splitlines()) == 1
        assert f"{missing} does not exist (nothing was applied to it yet; check --store or PODNET_STORE)" in r.stderr
    assert not missing.parent.exists()
    assert podnet("--store", f"sqlite:///{missing}", "apply", "-f", "examples/webapp1/").returncode == 0
    assert "webapp1-clusterip-svc" in podnet("--store", f"sqlite:///{missing}", "get", "svc").stdout


def test_delete_f_finds_objects_by_kind_and_name_and_skips_what_podnet_does_not_know(podnet: Podnet,
                                                                                   tmp_path: Path) -> None:
    """A folder with a CronJob (no such kind here), a document without a name and an edit podnet would
    refuse to apply: the rest is deleted, the skipped ones are named, exit 1 (as kubectl delete -f)."""
    assert podnet("apply", "-f", "examples/webapp1/").returncode == 0
    folder = tmp_path / "manifests"
    folder.mkdir()
    for f in EXAMPLE.glob("*.yaml"):
        (folder / f.name).write_text(f.read_text())
    svc = folder / "nodeport-service.yaml"
    svc.write_text(svc.read_text().replace("nodePort: 30080", "nodePort: 99999"))  # invalid, still its name
    (folder / "cronjob.yaml").write_text(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: db}\nspec: {schedule: '* * * * *'}\n")
    (folder / "nameless.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {ports: [{port: 1}]}\n")
    r = podnet("delete", "-f", str(folder))
    assert r.returncode == 1, r.stdout + r.stderr
    assert sorted(r.stdout.splitlines()) == sorted([
        'service "webapp1-clusterip-svc" deleted', 'service "webapp1-nodeport-svc" deleted',
        'pod "webapp1-6b9f7c5d4-2xkqp" deleted', 'pod "webapp1-6b9f7c5d4-9mzt7" deleted'])
    errors = r.stderr.splitlines()
    assert any("CronJob/default/db: kind: 'CronJob': no kind 'CronJob' is known" in e
               and e.endswith("not deleted") for e in errors), r.stderr
    assert any("metadata.name: Required value; not deleted" in e for e in errors), r.stderr
    store = open_store(podnet.url)
    try:
        assert store.list(keys.RESOURCES_PREFIX).items == [] and store.list("/podnet/alloc/").items == []
    finally:
        store.close()
