"""deploy/'s manifests are valid: the real kubectl applies them to podnet's API server, server-side dry run
first (nothing stored), then for real (every object readable back); a malformed DaemonSet is refused."""

from __future__ import annotations

from pathlib import Path

import yaml

from .conftest import Api

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_kubectl_apply_dry_run_server_of_deploy(api: Api) -> None:
    r = api.kubectl("apply", "--dry-run=server", "-f", str(DEPLOY))
    docs = [d for f in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert r.stdout.count("(server dry run)") == len(docs), r.stdout
    assert "daemonset.apps/podnet-proxy created (server dry run)" in r.stdout
    assert api.kubectl("get", "daemonsets", "-A", "-o", "name").stdout.strip() == ""  # nothing stored

    api.kubectl("apply", "-f", str(DEPLOY))
    names = api.kubectl("get", "ds,sa,cm", "-A", "-o", "name").stdout.split()
    assert {"daemonset.apps/podnet-proxy", "daemonset.apps/podnet-overlay", "serviceaccount/podnet-proxy",
            "configmap/kube-flannel-cfg"} <= set(names)
    rules = api.kubectl("get", "clusterrole", "podnet-overlay", "-o", "jsonpath={.rules[2].resources}").stdout
    assert rules == '["nodes/status"]'


def test_a_malformed_daemonset_is_refused_with_its_field(api: Api) -> None:
    bad = ("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: bad}\n"
           "spec: {selector: {matchLabels: {a: b}}, minReadySeconds: soon}\n")
    r = api.kubectl("apply", "--dry-run=server", "-f", "-", input=bad, check=False)
    assert r.returncode != 0 and "minReadySeconds" in r.stderr, r.stderr
