"""The real kubectl against `podnet apiserver`: the tutorial's commands and their exact answers."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from .conftest import KUBECTL, Api

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "webapp1"


def test_apply_unchanged_configured_and_delete(api: Api, tmp_path: Path) -> None:
    out = api.kubectl("apply", "-f", str(EXAMPLES)).stdout
    assert "service/webapp1-clusterip-svc created" in out
    assert "pod/webapp1-6b9f7c5d4-2xkqp created" in out
    again = api.kubectl("apply", "-f", str(EXAMPLES)).stdout
    assert again.count("unchanged") == len(again.strip().splitlines()), again

    svc = yaml.safe_load((EXAMPLES / "clusterip-service.yaml").read_text())
    svc["spec"]["ports"][0]["port"] = 8080
    edited = tmp_path / "svc.yaml"
    edited.write_text(yaml.safe_dump(svc))
    assert api.kubectl("apply", "-f", str(edited)).stdout.strip() == "service/webapp1-clusterip-svc configured"
    ports = api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o", "jsonpath={.spec.ports[*].port}").stdout
    assert ports == "8080"  # the strategic-merge patch replaced port 80, it did not add a second port

    deleted = api.kubectl("delete", "-f", str(EXAMPLES)).stdout
    assert 'service "webapp1-clusterip-svc" deleted' in deleted
    assert api.kubectl("get", "svc,pods", "-o", "name").stdout.strip() == ""


def test_get_describe_and_output_formats(api: Api) -> None:
    api.kubectl("apply", "-f", str(EXAMPLES))
    try:
        wide = api.kubectl("get", "pods", "-o", "wide").stdout.splitlines()
        assert wide[0].split()[:6] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
        ips = api.kubectl("get", "pods", "-o", "jsonpath={.items[*].status.podIP}").stdout.split()
        assert len(ips) == 2 and all(ip in "\n".join(wide) for ip in ips)
        assert all("<unknown>" not in line for line in wide[1:])  # the server sets creationTimestamp
        pod = yaml.safe_load(api.kubectl("get", "pod", "webapp1-6b9f7c5d4-2xkqp", "-o", "yaml").stdout)
        assert pod["metadata"]["uid"] and pod["metadata"]["resourceVersion"]

        svc_line = api.kubectl("get", "svc", "webapp1-nodeport-svc").stdout.splitlines()[1].split()
        assert svc_line[1] == "NodePort" and svc_line[4] == "80:30080/TCP"

        described = api.kubectl("describe", "svc", "webapp1-clusterip-svc").stdout
        endpoints = next(line for line in described.splitlines() if line.startswith("Endpoints:"))
        assert sorted(endpoints.split()[1].split(",")) == sorted(f"{ip}:80" for ip in ips)
        assert "Type:                     ClusterIP" in described

        kinds = api.kubectl("api-resources").stdout
        for row in ("services   svc", "pods   po", "endpoints   ep", "namespaces   ns", "deployments   deploy"):
            name, short = row.split()
            assert any(line.split()[:2] == [name, short] for line in kinds.splitlines()), row
        api.kubectl("wait", "--for=condition=Ready", "pod/webapp1-6b9f7c5d4-2xkqp", "--timeout=10s")
    finally:
        api.kubectl("delete", "-f", str(EXAMPLES), "--ignore-not-found")


def test_label_patch_and_selectors(api: Api) -> None:
    api.kubectl("apply", "-f", str(EXAMPLES))
    try:
        api.kubectl("label", "pod", "webapp1-6b9f7c5d4-2xkqp", "tier=web")
        assert api.kubectl("get", "pods", "-l", "tier=web", "-o", "name").stdout.split() == [
            "pod/webapp1-6b9f7c5d4-2xkqp"]
        api.kubectl("patch", "svc", "webapp1-clusterip-svc", "--type", "merge", "-p",
                    '{"metadata":{"annotations":{"owner":"team-a"}}}')
        api.kubectl("patch", "svc", "webapp1-clusterip-svc", "--type", "json", "-p",
                    '[{"op":"add","path":"/metadata/labels/x","value":"y"}]')
        svc = json.loads(api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o", "json").stdout)
        assert svc["metadata"]["annotations"]["owner"] == "team-a" and svc["metadata"]["labels"]["x"] == "y"
        names = api.kubectl("get", "pods", "--field-selector", "metadata.name=webapp1-6b9f7c5d4-9mzt7",
                            "-o", "name").stdout.split()
        assert names == ["pod/webapp1-6b9f7c5d4-9mzt7"]
        bad = api.kubectl("patch", "svc", "webapp1-clusterip-svc", "--type", "merge", "-p",
                          '{"spec":{"ports":[{"port":0}]}}', check=False)
        assert bad.returncode != 0 and "spec.ports[0].port" in bad.stderr
    finally:
        api.kubectl("delete", "-f", str(EXAMPLES), "--ignore-not-found")


def test_dry_run_server_stores_nothing(api: Api) -> None:
    before = api.revision()
    out = api.kubectl("apply", "-f", str(EXAMPLES / "clusterip-service.yaml"), "--dry-run=server").stdout
    assert "created (server dry run)" in out
    assert api.revision() == before
    assert api.kubectl("get", "svc", "-o", "name").stdout.strip() == ""


def test_watch_sees_a_change_quickly(api: Api) -> None:
    api.kubectl("apply", "-f", str(EXAMPLES / "pods.yaml"))
    assert KUBECTL is not None
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(api.kubeconfig), "get", "pods", "-w",
                             "--output-watch-events"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]  # header + the two pods
        assert lines[0].split()[:2] == ["EVENT", "NAME"], lines
        t0 = time.monotonic()
        api.kubectl("delete", "pod", "webapp1-6b9f7c5d4-9mzt7")
        line = proc.stdout.readline()
        latency = time.monotonic() - t0
        assert line.split()[:2] == ["DELETED", "webapp1-6b9f7c5d4-9mzt7"], line
        print(f"kubectl get -w saw the delete {latency * 1000:.0f} ms after kubectl delete started")
        assert latency < 10  # generous: the benchmark measures the real latency
    finally:
        proc.terminate()
        proc.wait(5)
        api.kubectl("delete", "-f", str(EXAMPLES / "pods.yaml"), "--ignore-not-found")


def test_paged_lists_return_every_object_once(api: Api) -> None:
    api.kubectl("apply", "-f", str(EXAMPLES))
    try:
        whole = api.kubectl("get", "svc,pods", "-o", "name").stdout.split()
        paged = api.kubectl("get", "svc,pods", "-o", "name", "--chunk-size=1").stdout.split()
        assert paged == whole and len(whole) == 4
        table = api.kubectl("get", "pods", "--chunk-size=1", "--no-headers").stdout.splitlines()
        assert [line.split()[0] for line in table] == ["webapp1-6b9f7c5d4-2xkqp", "webapp1-6b9f7c5d4-9mzt7"]
    finally:
        api.kubectl("delete", "-f", str(EXAMPLES), "--ignore-not-found")


def test_server_side_apply_owns_fields_and_reports_conflicts(api: Api, tmp_path: Path) -> None:
    svc_file = EXAMPLES / "clusterip-service.yaml"
    try:
        assert "serverside-applied" in api.kubectl("apply", "--server-side", "-f", str(svc_file)).stdout
        obj = json.loads(api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o", "json",
                                     "--show-managed-fields").stdout)
        entry = next(e for e in obj["metadata"]["managedFields"] if e["manager"] == "kubectl")
        assert entry["operation"] == "Apply"
        assert 'k:{"port":80,"protocol":"TCP"}' in entry["fieldsV1"]["f:spec"]["f:ports"]

        other = yaml.safe_load(svc_file.read_text())
        other["spec"]["ports"][0]["targetPort"] = 8080
        edited = tmp_path / "other.yaml"
        edited.write_text(yaml.safe_dump(other))
        clash = api.kubectl("apply", "--server-side", "--field-manager=other", "-f", str(edited), check=False)
        assert clash.returncode != 0
        assert 'conflict with "kubectl"' in clash.stderr and ".spec.ports[port=80" in clash.stderr
        api.kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", str(edited))
        port = api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o", "jsonpath={.spec.ports[0].targetPort}")
        assert port.stdout == "8080"

        # a manager that stops applying a field it alone owned removes it
        labelled = yaml.safe_load(svc_file.read_text())
        labelled["metadata"]["labels"]["tier"] = "web"
        edited.write_text(yaml.safe_dump(labelled))
        api.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(edited))
        assert api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o",
                           "jsonpath={.metadata.labels.tier}").stdout == "web"
        api.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(svc_file))
        assert api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o",
                           "jsonpath={.metadata.labels.tier}").stdout == ""
    finally:
        api.kubectl("delete", "-f", str(svc_file), "--ignore-not-found")


def test_explain_reads_the_published_schema(api: Api) -> None:
    out = api.kubectl("explain", "service.spec.ports").stdout
    assert "FIELD: ports <[]Object>" in out
    for field in ("port", "targetPort", "nodePort", "protocol"):
        assert f"  {field}\t<" in out, out
    missing = api.kubectl("explain", "service.spec.nosuchfield", check=False)
    assert missing.returncode != 0 and "nosuchfield" in missing.stderr


STATEFULSET = """\
apiVersion: v1
kind: Service
metadata: {name: nginx, labels: {app: nginx}}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports: [{port: 80, name: web}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 3
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers: [{name: nginx, image: registry.k8s.io/nginx-slim:0.24, ports: [{containerPort: 80, name: web}]}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


def test_a_statefulset_manifest_applies_lists_and_deletes(api: Api) -> None:
    """The classic headless Service + StatefulSet: kubectl apply, get (the server's Table), delete."""
    out = api.kubectl("apply", "-f", "-", input=STATEFULSET).stdout
    assert "service/nginx created" in out and "statefulset.apps/web created" in out
    try:
        rows = api.kubectl("get", "sts").stdout.splitlines()
        assert rows[0].split() == ["NAME", "READY", "AGE"] and rows[1].split()[:2] == ["web", "0/3"]
        sts = json.loads(api.kubectl("get", "statefulset", "web", "-o", "json").stdout)
        assert sts["spec"]["podManagementPolicy"] == "OrderedReady"  # defaulted by the server
        assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
        assert "unchanged" in api.kubectl("apply", "-f", "-", input=STATEFULSET).stdout
        kinds = api.kubectl("api-resources", "--api-group=apps").stdout
        assert any(line.split()[:3] == ["statefulsets", "sts", "apps/v1"] for line in kinds.splitlines()), kinds
    finally:
        deleted = api.kubectl("delete", "-f", "-", input=STATEFULSET).stdout
    assert 'statefulset.apps "web" deleted' in deleted


_IX_POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: ix}}}}
spec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}
status: {{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}
"""
_IX_SVC = """apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{selector: {{app: ix}}, ports: [{{name: http, port: 80, targetPort: http}}]}}
"""


def test_endpoint_slices_follow_kubectl_writes_and_writes_of_another_process(api: Api) -> None:
    """The server plans slices from its write index (controllers/writeindex.py): each kubectl write, and a
    `podnet apply` straight to the store just before one, is reflected in the service's slice."""
    from .conftest import PODNET

    def addresses(svc: str) -> list[str]:
        out = json.loads(api.kubectl("get", "endpointslices", "-l", f"kubernetes.io/service-name={svc}",
                                     "-o", "json").stdout)
        return sorted(a for es in out["items"] for e in es.get("endpoints") or [] for a in e["addresses"])

    api.kubectl("apply", "-f", "-", input=_IX_SVC.format(name="ix"))
    try:
        api.kubectl("apply", "-f", "-", input=_IX_POD.format(name="ix-a", ip="10.32.9.1") + "---\n"
                    + _IX_POD.format(name="ix-b", ip="10.32.9.2"))
        assert addresses("ix") == ["10.32.9.1", "10.32.9.2"]
        api.kubectl("label", "pod", "ix-a", "app=other", "--overwrite")
        assert addresses("ix") == ["10.32.9.2"]
        api.kubectl("delete", "pod", "ix-b")
        assert addresses("ix") == []
        # another writer, with no index of its own, then at once a kubectl write that depends on it
        subprocess.run([PODNET, "--store", api.store_url, "apply", "-f", "-"], check=True, capture_output=True,
                       text=True, input=_IX_POD.format(name="ix-c", ip="10.32.9.3"))
        api.kubectl("apply", "-f", "-", input=_IX_SVC.format(name="ix2"))
        assert addresses("ix2") == ["10.32.9.3"] and addresses("ix") == ["10.32.9.3"]
    finally:
        api.kubectl("delete", "svc,pods", "ix", "ix2", "ix-a", "ix-b", "ix-c", "--ignore-not-found")
