"""The source options the node daemons share (`proxy run`, `overlay run`): store or Kubernetes API.

`--source store` (the default) reads podnet's store (--store). `--source kube`, or any of --kubeconfig /
--master, reads a Kubernetes API server instead; with neither flag that is the in-cluster config of a
DaemonSet pod (podnet.source.kubeconfig).
"""

from __future__ import annotations

from typing import Any

import typer

from podnet.errors import Problem, ValidationError

SOURCES = ("store", "kube")

SourceOpt = typer.Option(
    None, "--source", help="Where to read objects: store (podnet's store, the default) or kube (a Kubernetes API "
    "server: --kubeconfig, --master, or the in-cluster service account).")
KubeconfigOpt = typer.Option(
    None, "--kubeconfig", help="kubeconfig file of the Kubernetes API server to watch (implies "
    "--source kube).")
MasterOpt = typer.Option(
    None, "--master", help="URL of the Kubernetes API server; overrides the kubeconfig's server (implies --source kube).")


def chosen(source: str | None, kubeconfig: str | None, master: str | None) -> str:
    """store or kube; raises ValidationError for an unknown --source or store + kube flags together."""
    if source is not None and source not in SOURCES:
        raise ValidationError([Problem("--source", source, f"must be one of {', '.join(SOURCES)}")])
    if source == "store" and (kubeconfig or master):
        raise ValidationError([Problem("--source", source, "--kubeconfig and --master only apply to --source kube")])
    return source or ("kube" if kubeconfig or master else "store")


def open_source(ctx: typer.Context, source: str | None, kubeconfig: str | None, master: str | None) -> Any:
    """The daemon's source, every flag checked before anything runs."""
    kind = chosen(source, kubeconfig, master)
    if kind == "store":
        from podnet.source.store import StoreSource

        return StoreSource(ctx.obj.store())
    from podnet.source.kube import KubeSource
    from podnet.source.kubeconfig import KubeOptions

    return KubeSource(KubeOptions(kubeconfig=kubeconfig, master=master))
