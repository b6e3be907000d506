"""`podnet trace`: predict a packet's path across the lab from live kernel state (and --verify it)."""

from __future__ import annotations

import json

import typer

from podnet.trace.errors import TraceError


def register(app: typer.Typer) -> None:
    @app.command("trace")
    def trace(
        src: str = typer.Option(..., "--from", help="Source: a pod ([ns/]name), a node name, or an IP in the lab"),
        dst: str = typer.Option(..., "--to", help="Destination: IP:PORT, svc/NAME[:PORT], [ns/]pod[:PORT]"),
        proto: str = typer.Option("tcp", "--proto", help="tcp | udp | icmp"),
        sport: str = typer.Option(None, "--sport", help="Source port (default: any; needed to match conntrack)"),
        lab: str = typer.Option("lab", "--lab", help="The lab to trace in (as `lab up --name`)"),
        output: str = typer.Option("text", "-o", "--output", help="text | json"),
        verify: bool = typer.Option(False, "--verify", help="Send real probes and compare with the kernel's trace"),
    ) -> None:
        """Predict a packet's whole path (rules, routes, encapsulation, probabilities); --verify proves it."""
        from podnet.trace import render, resolve, snapshot, walk
        from podnet.trace.model import Packet, Result

        if output not in ("text", "json"):
            raise TraceError(f"-o: {output!r}: one of text, json")
        if sport is not None and not sport.isdigit():
            raise TraceError(f"--sport: {sport!r}: port must be a number from 1 to 65535")
        def predict() -> tuple[snapshot.Cluster, walk.Source, Packet, Result]:
            cluster = snapshot.read_cluster(lab)
            source, pkt = resolve.flow(cluster, src, dst, proto, int(sport) if sport is not None else None)
            return cluster, source, pkt, walk.walk(cluster, source, pkt)

        report = None
        if verify:
            from podnet.trace import verify as verify_mod

            result, report = verify_mod.predict_and_verify(predict)
        else:
            result = predict()[3]
        if output == "json":
            doc = result.to_json()
            if report is not None:
                doc["verify"] = report.to_json()
            typer.echo(json.dumps(doc, indent=2))
        else:
            typer.echo(render.text(result))
            if report is not None:
                typer.echo(render.verify_text(report))
        if report is not None and not report.agree:
            raise typer.Exit(3)
