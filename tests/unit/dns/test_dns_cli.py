"""`podnet dns run` refuses bad options all at once, naming each, before it opens a socket or the store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PODNET = str(Path(sys.executable).with_name("podnet"))


def test_every_bad_option_is_named_and_nothing_starts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = subprocess.run([PODNET, "--store", f"sqlite:///{tmp_path}/s.db", "dns", "run", "--listen", "nope",
                        "--zone", "Bad_Zone", "--pods", "x", "--ttl", "99999", "--advertise", "1.2.3",
                        "--publish", "x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    fields = [line.split(":")[1].strip() for line in r.stderr.splitlines() if line.startswith("error:")]
    assert fields == ["--listen", "--zone", "--pods", "--ttl", "--advertise", "--publish", "--node"]
    assert not (tmp_path / "s.db").exists()  # refused before the store was opened
