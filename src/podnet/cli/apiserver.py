"""`podnet apiserver`: the Kubernetes API over podnet's store, for kubectl and Kubernetes clients."""

from __future__ import annotations

import logging
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("apiserver")
    def apiserver(
        ctx: typer.Context,
        listen: list[str] = typer.Option(["127.0.0.1:6443"], "--listen",
                                         help="HOST:PORT to serve HTTPS on (repeatable; loopback or lab addresses)"),
        cert_dir: str = typer.Option("/var/lib/podnet/pki", "--cert-dir",
                                     help="CA, serving and admin certificates and the token (made if missing)"),
        service_cidr: str = typer.Option(None, "--service-cidr", envvar="PODNET_SERVICE_CIDR",
                                         help="ClusterIP range (kube-apiserver's --service-cluster-ip-range)"),
        node_port_range: str = typer.Option(None, "--service-node-port-range", envvar="PODNET_NODE_PORT_RANGE",
                                            help="NodePort range, e.g. 30000-32767"),
        port_file: Path = typer.Option(None, "--port-file", help="write the bound port here (for --listen ...:0)"),
        kubeconfig: Path = typer.Option(None, "--write-kubeconfig", help="write an admin kubeconfig here"),
        listen_netns: list[str] = typer.Option([], "--listen-netns",
                                                help="NETNS=HOST:PORT: also serve inside that network namespace"),
        lab: str = typer.Option(None, "--lab", help="serve pods/log and pods/exec for this lab's pods"),
    ) -> None:
        """Serve the Kubernetes API (discovery, get/list/watch/create/update/patch/delete, Tables) over HTTPS,
        with client-certificate or bearer-token authentication, backed by podnet's store."""
        from podnet.apiserver import serve
        from podnet.apiserver.app import Settings
        from podnet.controllers.allocators import AllocatorConfig

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            config = AllocatorConfig.from_env(service_cidr, node_port_range)
        except ValueError as e:
            from podnet.errors import Problem, ValidationError

            raise ValidationError([Problem("--service-cidr", service_cidr, str(e))]) from None
        settings = Settings(store=ctx.obj.store(), config=config)
        if lab:
            from podnet.lab.state import LabState

            st = LabState.load(lab)
            if st is not None:
                settings.pod_log = lambda ns, name: st.log(f"pods/{ns}_{name}")
                settings.pod_netns = lambda ns, name: st.spec.pod_netns(ns, name)
        if kubeconfig is not None:
            from podnet.apiserver import certs

            host, port = serve.parse_listen(listen[0])
            d = certs.ensure(cert_dir, [serve.parse_listen(v)[0] for v in listen]
                             + [serve.parse_listen_netns(v)[1] for v in listen_netns])
            kubeconfig.write_text(certs.kubeconfig(d, f"https://{host}:{port}"))
            kubeconfig.chmod(0o600)
        serve.run(settings, listen, cert_dir, port_file=port_file, listen_netns=listen_netns)
