"""How the daemons find and authenticate to a Kubernetes API server, as kube-proxy and flanneld do.

client-go's BuildConfigFromFlags(master, kubeconfig), which both use:

- `--kubeconfig FILE`: that file's current context; `--master URL` given too replaces its server.
- `--master URL` alone: that server, no credentials (an insecure local port, or a proxy such as
  `kubectl proxy`).
- neither: in-cluster config, the way a DaemonSet pod runs: `https://$KUBERNETES_SERVICE_HOST:
  $KUBERNETES_SERVICE_PORT`, the service account's token and CA under
  /var/run/secrets/kubernetes.io/serviceaccount. The token file is re-read when the server answers 401
  (the kubelet rotates projected tokens), which lightkube's token-file auth does for us.

Every failure names the flag or file and what is wrong with it, before anything starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from podnet.errors import Problem, ValidationError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class KubeOptions:
    kubeconfig: str | None = None
    master: str | None = None
    service_account_dir: str = SERVICE_ACCOUNT_DIR

    def describe(self) -> str:
        if self.kubeconfig:
            return f"kubeconfig {self.kubeconfig}" + (f" (server {self.master})" if self.master else "")
        if self.master:
            return f"API server {self.master}"
        return "in-cluster config (service account)"


def load(opts: KubeOptions) -> Any:
    """A lightkube KubeConfig for these options. Raises ValidationError naming the flag that is wrong."""
    from lightkube import KubeConfig
    from lightkube.core.exceptions import ConfigError

    if opts.master is not None and not opts.master.startswith(("http://", "https://")):
        raise ValidationError([Problem("--master", opts.master, "must be an http:// or https:// URL")])
    if opts.kubeconfig:
        path = Path(opts.kubeconfig).expanduser()
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ValidationError([Problem("--kubeconfig", opts.kubeconfig, f"cannot read: {e.strerror}")]) from e
        except yaml.YAMLError as e:
            raise ValidationError([Problem("--kubeconfig", opts.kubeconfig, f"not YAML: {e}")]) from e
        if not isinstance(doc, dict):
            raise ValidationError([Problem("--kubeconfig", opts.kubeconfig, "not a kubeconfig (no mapping)")])
        if opts.master:
            doc = _with_server(doc, opts.master, opts.kubeconfig)
        try:
            conf = KubeConfig.from_dict(doc, fname=path)
            if conf.get() is None:
                raise ConfigError("it has no current-context")
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise ValidationError([Problem("--kubeconfig", opts.kubeconfig, f"not usable: {e}")]) from e
        return conf
    if opts.master:
        return KubeConfig.from_server(opts.master)
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ValidationError([Problem(
            "--kubeconfig", None, "give --kubeconfig FILE or --master URL; not running in a cluster either "
            "(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)")])
    sa = Path(opts.service_account_dir)
    missing = [str(sa / f) for f in ("token", "ca.crt") if not (sa / f).is_file()]
    if missing:
        raise ValidationError([Problem("service account", ", ".join(missing), "missing: in-cluster config needs "
                                       "the pod's service account token and CA (automountServiceAccountToken)")])
    if not (sa / "namespace").is_file():
        # lightkube reads it for the default namespace; the daemons only list all namespaces anyway.
        from lightkube.config.models import Cluster, User

        h = f"[{host}]" if ":" in host else host
        return KubeConfig.from_one(cluster=Cluster(server=f"https://{h}:{port}", certificate_auth=str(sa / "ca.crt")),
                                   user=User(token_file=str(sa / "token")))
    try:
        return KubeConfig.from_service_account(str(sa))
    except ConfigError as e:
        raise ValidationError([Problem("service account", str(sa), str(e))]) from e


def _with_server(doc: dict[str, Any], master: str, where: str) -> dict[str, Any]:
    """The kubeconfig with its current context's cluster pointed at master (client-go's override)."""
    ctx_name = doc.get("current-context")
    ctx = next((c.get("context") or {} for c in doc.get("contexts") or [] if c.get("name") == ctx_name), None)
    if ctx is None:
        raise ValidationError([Problem("--kubeconfig", where, f"current-context {ctx_name!r} is not defined")])
    clusters = []
    for c in doc.get("clusters") or []:
        if c.get("name") == ctx.get("cluster"):
            c = {**c, "cluster": {**(c.get("cluster") or {}), "server": master}}
        clusters.append(c)
    return {**doc, "clusters": clusters}


__all__ = ["KubeOptions", "SERVICE_ACCOUNT_DIR", "load"]
