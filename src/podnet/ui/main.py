"""`podnet lab ui`: serve the page until interrupted, or write one snapshot."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from podnet.ui import facts, server
from podnet.ui.errors import UiError


def run(name: str, listen: str, *, allow_non_loopback: bool = False, snapshot: str | None = None,
        trace_from: str = "", trace_to: str = "") -> None:
    st = facts.load_lab(name)
    if snapshot:
        out = Path(snapshot)
        if not out.parent.is_dir():
            raise UiError(f"--snapshot: {snapshot!r}: no such directory {str(out.parent)!r}")
        view = server.snapshot(st, out, trace_from=trace_from, trace_to=trace_to)
        print(f"wrote {out}: {len(view.nodes)} nodes, {len(view.pods())} pods, {len(view.services)} Services")
        return
    if trace_from or trace_to:
        raise UiError("--trace-from/--trace-to: only with --snapshot (the page has its own trace form)")
    host, port = server.parse_listen(listen, allow_non_loopback=allow_non_loopback)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    def ready(url: str) -> None:
        print(f"podnet lab ui: lab {name} at {url}", flush=True)

    try:
        asyncio.run(server.serve(st, host, port, allow_non_loopback=allow_non_loopback, ready=ready))
    except OSError as e:
        raise UiError(f"--listen: {listen!r}: {e.strerror or e}") from None
