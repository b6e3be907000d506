"""The API server over etcd (`podnet apiserver --store etcd://...`): the same kubectl session as over SQLite."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from .conftest import KUBECTL, Api

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "webapp1"


def test_kubectl_over_etcd(api_etcd: Api) -> None:
    api = api_etcd
    assert "service/webapp1-clusterip-svc created" in api.kubectl("apply", "-f", str(EXAMPLES)).stdout
    assert "unchanged" in api.kubectl("apply", "-f", str(EXAMPLES)).stdout
    svc = json.loads(api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"].startswith("10.") and svc["metadata"]["resourceVersion"]
    api.kubectl("create", "configmap", "cfg", "--from-literal=a=b")  # a protobuf body, stored in etcd
    assert api.kubectl("get", "cm", "cfg", "-o", "jsonpath={.data.a}").stdout == "b"
    assert KUBECTL is not None
    watch = subprocess.Popen([KUBECTL, "--kubeconfig", str(api.kubeconfig), "get", "cm", "cfg", "-w", "--no-headers",
                              "-o", "custom-columns=NAME:.metadata.name,SEEN:.metadata.labels.seen"],
                             stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:  # the watch is open (its first line) before the change
            time.sleep(0.05)
        api.kubectl("label", "cm", "cfg", "seen=yes")
        while time.monotonic() < deadline and not any("yes" in ln for ln in lines):
            time.sleep(0.05)
        assert any(ln.split() == ["cfg", "yes"] for ln in lines), lines
    finally:
        watch.terminate()
        watch.wait(5)
    api.kubectl("delete", "-f", str(EXAMPLES))
    api.kubectl("delete", "cm", "cfg")
    assert api.kubectl("get", "svc,pods,cm", "-o", "name").stdout.strip() == ""
