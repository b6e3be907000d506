"""The CNI plugins' launchers (make venv writes them over pip's console scripts): python -I -S, podnet
found without site, recognized by delegate.py as podnet's own, and the same answers as pip's scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.cni import delegate, launcher

ENTRIES = {"podnet-bridge": "bridge", "podnet-host-local": "host-local", "podnet-flannel": "flannel"}


def _env(**over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(over)
    return env


def test_install_writes_runnable_launchers_and_is_idempotent(tmp_path: Path) -> None:
    written = launcher.install(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == sorted(ENTRIES)
    assert launcher.install(str(tmp_path)) == []  # nothing changed: nothing rewritten
    for script, plugin in ENTRIES.items():
        path = tmp_path / script
        text = path.read_text()
        assert text.startswith(f"#!{sys.executable} -IS\n")
        assert os.access(path, os.X_OK)
        assert delegate._podnet_plugin(str(path)) == plugin
        out = subprocess.run([str(path)], env=_env(CNI_COMMAND="VERSION"), capture_output=True, check=True)
        assert json.loads(out.stdout)["cniVersion"] == "1.1.0"


def test_launcher_ignores_the_callers_python_environment(tmp_path: Path) -> None:
    """-I: a runtime's PYTHONPATH (here: a directory shadowing podnet and json) changes nothing."""
    shadow = tmp_path / "shadow"
    (shadow / "podnet").mkdir(parents=True)
    (shadow / "podnet" / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    (shadow / "json.py").write_text("raise SystemExit('shadowed')\n")
    launcher.install(str(tmp_path))
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "bridge"}
    env = _env(CNI_COMMAND="ADD", PYTHONPATH=str(shadow), CNI_CONTAINERID="c", CNI_NETNS="/x",
               CNI_IFNAME="eth0", CNI_PATH="/x", CNI_ARGS="FOO=bar")
    out = subprocess.run([str(tmp_path / "podnet-bridge")], input=json.dumps(conf).encode(), env=env,
                         capture_output=True, check=False)
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout) == {"cniVersion": "1.0.0", "code": 999, "msg": 'ARGS: unknown args ["FOO=bar"]'}


@pytest.mark.parametrize("python", ["/a/very/long/" + "x" * 150 + "/bin/python", "/with space/bin/python"])
def test_long_or_spaced_interpreter_paths_go_through_sh(python: str) -> None:
    text = launcher.script(python, "/src", "bridge_main")
    assert text.startswith("#!/bin/sh\n'''exec' \"" + python + "\" -IS \"$0\" \"$@\"\n' '''\n")
    assert b"from podnet.cni.main import bridge_main" in text.encode()
    compile(text, "launcher", "exec")  # the sh lines are one string literal to Python


def test_sh_trampoline_runs(tmp_path: Path) -> None:
    link_dir = tmp_path / ("d" * 120)
    link_dir.mkdir()
    python = link_dir / "python"
    python.symlink_to(sys.executable)
    path = tmp_path / "podnet-bridge"
    path.write_text(launcher.script(str(python), launcher.podnet_root(), "bridge_main"))
    path.chmod(0o755)
    out = subprocess.run([str(path)], env=_env(CNI_COMMAND="VERSION"), capture_output=True, check=True)
    assert json.loads(out.stdout)["supportedVersions"][-1] == "1.1.0"


def test_usage() -> None:
    assert launcher.main([]) == 2
    assert launcher.main(["/nonexistent-dir"]) == 2
