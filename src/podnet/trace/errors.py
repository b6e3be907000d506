"""The error `podnet trace` raises for bad input or a lab it cannot read (exit 1, one line naming the field)."""

from __future__ import annotations

from podnet.errors import PodnetError


class TraceError(PodnetError):
    pass
