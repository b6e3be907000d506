"""The lab's Kubernetes API server: its port, certificates and kubeconfig, and the supervisor's child for it.

The port is chosen once at `lab up` (a free loopback port) and kept in the lab's directory, so a restarted
server comes back where the kubeconfig points. The server runs in the root namespaces and listens on
127.0.0.1 there (kubeconfig, for kubectl on the host), and on the underlay's gateway address inside the
lab's underlay namespace (kubeconfig.in-lab, for agents in the nodes): nothing else can reach it.
"""

from __future__ import annotations

import socket
from pathlib import Path

from podnet.lab.state import LabState


def pki_dir(st: LabState) -> Path:
    return st.dir / "pki"


def kubeconfig_path(st: LabState) -> Path:
    return st.dir / "kubeconfig"


def in_lab_kubeconfig_path(st: LabState) -> Path:
    """For processes inside the lab's nodes: the server at the underlay's gateway address."""
    return st.dir / "kubeconfig.in-lab"


def port_file(st: LabState) -> Path:
    return st.dir / "apiserver.port"


def port(st: LabState) -> int:
    return int(port_file(st).read_text().strip())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(st: LabState) -> Path:
    """Choose the port, make the certificates and write the kubeconfig (mode 0600). Returns its path."""
    from podnet.apiserver import certs

    if not port_file(st).exists():
        port_file(st).write_text(f"{_free_port()}\n")
    gw = st.spec.underlay_gateway
    d = certs.ensure(pki_dir(st), ["127.0.0.1", gw])
    for path, host in ((kubeconfig_path(st), "127.0.0.1"), (in_lab_kubeconfig_path(st), gw)):
        path.write_text(certs.kubeconfig(d, f"https://{host}:{port(st)}", cluster=f"podnet-{st.spec.name}"))
        path.chmod(0o600)
    return kubeconfig_path(st)


def argv(st: LabState, exe: str) -> list[str]:
    return [exe, "--store", st.store_url, "apiserver", "--listen", f"127.0.0.1:{port(st)}",
            "--listen-netns", f"{st.spec.underlay_netns}={st.spec.underlay_gateway}:{port(st)}",
            "--cert-dir", str(pki_dir(st)), "--lab", st.spec.name, "--service-cidr", st.spec.service_cidr]


def listening(st: LabState) -> bool:
    """True once the server accepts connections on its port."""
    try:
        with socket.create_connection(("127.0.0.1", port(st)), timeout=0.2):
            return True
    except (OSError, ValueError):
        return False
