"""The lab page's errors (rooted in podnet.errors, so the CLI prints them as `error: ...` and exits 1)."""

from __future__ import annotations

from podnet.errors import PodnetError


class UiError(PodnetError):
    pass
