"""A lab's state on disk: its spec, its store URL and the processes it runs.

Everything lives in one directory per lab (default /run/podnet/labs/<name>), so `lab down` can find and
remove every process and namespace even after the lab's own processes were killed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from podnet.lab.procs import ProcRecord
from podnet.lab.topology import LabSpec

LABS_ROOT = Path(os.environ.get("PODNET_LABS_DIR", "/run/podnet/labs"))


def lab_dir(name: str) -> Path:
    return LABS_ROOT / name


@dataclass
class LabState:
    spec: LabSpec
    store_url: str
    supervisor: ProcRecord | None = None
    procs: dict[str, ProcRecord] = field(default_factory=dict)  # role (e.g. "node1/proxy") -> record
    services: dict[str, ProcRecord] = field(default_factory=dict)  # lab services started by `up` (none today)

    @property
    def dir(self) -> Path:
        return lab_dir(self.spec.name)

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def subnet_file(self, node: str) -> Path:
        return self.node_dir(node) / "subnet.env"

    def log(self, role: str) -> Path:
        return self.dir / "logs" / f"{role.replace('/', '-')}.log"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {
            "spec": self.spec.to_dict(),
            "store_url": self.store_url,
            "supervisor": self.supervisor.to_dict() if self.supervisor else None,
            "services": {k: v.to_dict() for k, v in self.services.items()},
        }
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.dir / "lab.json")

    def save_procs(self) -> None:
        """Written by the supervisor whenever it (re)starts a child."""
        tmp = self.dir / "procs.json.tmp"
        tmp.write_text(json.dumps({k: v.to_dict() for k, v in self.procs.items()}, indent=2))
        os.replace(tmp, self.dir / "procs.json")

    def save_supervisor(self, rec: ProcRecord) -> None:
        """Written by a supervisor about itself when it starts (it may have been started by an agent)."""
        self.supervisor = rec
        tmp = self.dir / "supervisor.json.tmp"
        tmp.write_text(json.dumps(rec.to_dict(), indent=2))
        os.replace(tmp, self.dir / "supervisor.json")

    @staticmethod
    def load(name: str) -> LabState | None:
        d = lab_dir(name)
        try:
            data = json.loads((d / "lab.json").read_text())
        except (OSError, ValueError):
            return None
        st = LabState(LabSpec.from_dict(data["spec"]), data["store_url"])
        if data.get("supervisor"):
            st.supervisor = ProcRecord(**data["supervisor"])
        try:  # the supervisor's own record, newer than the one `lab up` wrote when it spawned the first
            st.supervisor = ProcRecord(**json.loads((d / "supervisor.json").read_text()))
        except (OSError, ValueError, TypeError):
            pass
        st.services = {k: ProcRecord(**v) for k, v in (data.get("services") or {}).items()}
        try:
            procs = json.loads((d / "procs.json").read_text())
            st.procs = {k: ProcRecord(**v) for k, v in procs.items()}
        except (OSError, ValueError):
            pass
        return st


def list_labs() -> list[str]:
    try:
        return sorted(p.name for p in LABS_ROOT.iterdir() if (p / "lab.json").exists())
    except FileNotFoundError:
        return []
