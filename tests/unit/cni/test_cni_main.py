"""The exec protocol's preflight, run in-process: everything here fails or answers before any kernel work."""

from __future__ import annotations

import json

import pytest

from podnet.cni import main

CONF = {"cniVersion": "1.0.0", "name": "n", "type": "bridge",
        "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/nonexistent"}


def run(env: dict[str, str], conf: object = CONF, plugin: str = "bridge") -> tuple[int, object]:
    rc, out, _err = main.run(plugin, env, json.dumps(conf).encode() if not isinstance(conf, bytes) else conf)
    return rc, json.loads(out) if out else None


def test_version_ignores_stdin() -> None:
    rc, out = run({"CNI_COMMAND": "VERSION"}, b"garbage")
    assert rc == 0 and out["cniVersion"] == "1.1.0"


def test_no_command_prints_about_on_stderr() -> None:
    rc, out, err = main.run("bridge", {}, b"")
    assert (rc, out) == (0, "") and "CNI protocol versions supported" in err


@pytest.mark.parametrize("drop,msg", [
    ("CNI_NETNS", "required env variables [CNI_NETNS] missing"),
    ("CNI_PATH", "required env variables [CNI_PATH] missing"),
    ("CNI_IFNAME", "required env variables [CNI_IFNAME] missing"),
])
def test_missing_env(drop: str, msg: str) -> None:
    env = {k: v for k, v in ENV.items() if k != drop}
    rc, out = run(env)
    assert rc == 1 and out["code"] == 4 and out["msg"] == msg


def test_missing_several_env_named_in_order() -> None:
    rc, out = run({"CNI_COMMAND": "ADD"})
    assert out["msg"] == "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"


def test_del_does_not_need_netns_and_gc_needs_no_container() -> None:
    env = {k: v for k, v in ENV.items() if k != "CNI_NETNS"}
    rc, out = run({**env, "CNI_COMMAND": "DEL"}, {**CONF, "cniVersion": "9.9.9"})
    assert out["code"] == 1  # got past the env check to the version check
    rc, out = run({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, {**CONF, "cniVersion": "1.0.0"})
    assert (rc, out["code"], out["msg"]) == (1, 1, "config version does not allow GC")


@pytest.mark.parametrize("conf,code", [(b"{", 6), ({"cniVersion": "1.0.0"}, 7), ({**CONF, "cniVersion": "0.5.0"}, 1),
                                       ({**CONF, "name": "a/b"}, 7)])
def test_config_errors(conf: object, code: int) -> None:
    rc, out = run(ENV, conf)
    assert rc == 1 and out["code"] == code


def test_check_needs_040() -> None:
    rc, out = run({**ENV, "CNI_COMMAND": "CHECK"}, {**CONF, "cniVersion": "0.3.1"})
    assert (out["code"], out["msg"]) == (1, "config version does not allow CHECK")


def test_unknown_command() -> None:
    rc, out = run({**ENV, "CNI_COMMAND": "FOO"})
    assert (out["code"], out["msg"]) == (4, "unknown CNI_COMMAND: FOO")


def test_missing_version_means_010() -> None:
    conf = {k: v for k, v in CONF.items() if k != "cniVersion"}
    rc, out = run({**ENV, "CNI_COMMAND": "CHECK"}, conf)
    assert out["msg"] == "config version does not allow CHECK"


def test_errors_carry_the_request_version() -> None:
    rc, out = run({**ENV, "CNI_IFNAME": "x" * 20}, {**CONF, "cniVersion": "0.4.0"})
    assert out["cniVersion"] == "0.4.0" and out["code"] == 4


def test_plugin_import_path_stays_lean() -> None:
    """The plugins run once per pod: no pydantic, typer, rich or pyroute2 on their import path."""
    import subprocess
    import sys

    code = ("import sys, podnet.cni.main, podnet.cni.bridge, podnet.cni.host_local, podnet.cni.flannel;"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'typer', 'rich', 'pyroute2', 'yaml', 'typing', 'dataclasses'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
