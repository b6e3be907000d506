"""How the daemons find the API server: --kubeconfig, --master, in-cluster; bad input named by flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet.errors import ValidationError
from podnet.source.kubeconfig import KubeOptions, load

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}
contexts:
- name: ctx
  context: {cluster: c1, user: u1}
current-context: ctx
users:
- name: u1
  user: {token: abc}
"""


def test_kubeconfig_file_and_master_override(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    kc.write_text(KUBECONFIG)
    assert load(KubeOptions(kubeconfig=str(kc))).get().cluster.server == "https://10.0.0.1:6443"
    conf = load(KubeOptions(kubeconfig=str(kc), master="https://192.168.77.1:6443")).get()
    assert conf.cluster.server == "https://192.168.77.1:6443" and conf.user.token == "abc"


def test_master_alone_has_no_credentials() -> None:
    conf = load(KubeOptions(master="http://127.0.0.1:8001")).get()
    assert conf.cluster.server == "http://127.0.0.1:8001" and conf.user is None


def test_in_cluster_config_from_env_and_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("tok")
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "namespace").write_text("kube-system")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    conf = load(KubeOptions(service_account_dir=str(tmp_path))).get()
    assert conf.cluster.server == "https://10.96.0.1:443"
    assert conf.user.token_file == str(tmp_path / "token")  # re-read on 401: rotated tokens keep working


@pytest.mark.parametrize(("opts", "field", "text"), [
    (KubeOptions(kubeconfig="/nonexistent/kc"), "--kubeconfig", "cannot read"),
    (KubeOptions(master="10.0.0.1:6443"), "--master", "http:// or https://"),
    (KubeOptions(service_account_dir="/nonexistent"), "--kubeconfig", "KUBERNETES_SERVICE_HOST"),
])
def test_bad_options_are_named(opts: KubeOptions, field: str, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValidationError) as e:
        load(opts)
    assert e.value.problems[0].field == field and text in str(e.value)


def test_in_cluster_without_token_names_the_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ValidationError, match="token"):
        load(KubeOptions(service_account_dir=str(tmp_path)))
