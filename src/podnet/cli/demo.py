"""`podnet demo`: the narrated walkthrough on a 2-node lab."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        keep: bool = typer.Option(False, "--keep", help="Leave the lab up afterwards to explore"),
        name: str = typer.Option("demo", "--name", help="Lab name"),
        backend: str = typer.Option("vxlan", "--backend", help="vxlan | host-gw | udp"),
        ip_family: str = typer.Option("ipv4", "--ip-family", help="The lab's IP families: ipv4 | ipv6 | dual"),
    ) -> None:
        """Build a 2-node lab and walk through Services and pod-to-pod networking on real kernel paths."""
        from podnet.lab.demo import Demo
        from podnet.lab.topology import BACKENDS, IP_FAMILIES

        if backend not in BACKENDS:
            raise typer.BadParameter(f"{backend!r}: one of {', '.join(BACKENDS)}", param_hint="--backend")
        if ip_family not in IP_FAMILIES:
            raise typer.BadParameter(f"{ip_family!r}: one of {', '.join(IP_FAMILIES)}", param_hint="--ip-family")
        sys.exit(0 if Demo(name=name, backend=backend, ip_family=ip_family).run(keep=keep) else 1)
