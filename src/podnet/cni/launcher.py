"""Lean launchers for the CNI plugins, written over pip's console scripts by `make venv`:

    python -m podnet.cni.launcher BIN_DIR      (BIN_DIR: the venv's bin; the python running this is theirs)

A plugin is exec'd for every pod ADD and DEL, and pip's console script starts a full interpreter: site,
the venv's .pth files (the editable install's path, setuptools' distutils hack, the nftables shim), the
PYTHON* variables of whatever runtime called it. The plugins need none of it (only the standard library
and podnet), so the launcher runs `python -I -S` (~3.5 ms less per call) and puts podnet's own directory
on sys.path itself. The entry points and the code path are those of pip's scripts ([project.scripts]);
pip's scripts keep working where this did not run (a plain `pip install`, the image in deploy/).

The launcher keeps the line `from podnet.cni.main import <entry>`: delegate.py recognizes podnet's own
plugins by it and runs them in-process.
"""

from __future__ import annotations

import os
import sys

# console script -> main.py's entry point (the [project.scripts] lines of the CNI plugins)
SCRIPTS = {"podnet-bridge": "bridge_main", "podnet-host-local": "host_local_main", "podnet-flannel": "flannel_main"}
FLAGS = "-IS"  # isolated (no PYTHON* variables, no user site, no script dir on sys.path), no site
_SHEBANG_MAX = 127  # older kernels cut the #! line there; longer (or spaced) paths go through /bin/sh


def podnet_root() -> str:
    """The directory podnet is imported from (src/ for the editable install, else site-packages)."""
    import podnet

    return os.path.dirname(os.path.dirname(os.path.abspath(podnet.__file__)))


def script(python: str, root: str, entry: str) -> str:
    head = f"#!{python} {FLAGS}\n"
    if len(head) > _SHEBANG_MAX or " " in python:
        # distlib's trampoline: sh runs the exec line, Python reads the rest (the line is a string to it)
        head = f"#!/bin/sh\n'''exec' \"{python}\" {FLAGS} \"$0\" \"$@\"\n' '''\n"
    return (f"{head}"
            f"# podnet CNI plugin, written by python -m podnet.cni.launcher: no site, no .pth files\n"
            f"import sys\n"
            f"sys.path.append({root!r})\n"
            f"from podnet.cni.main import {entry}\n"
            f"{entry}()\n")


def install(bin_dir: str, python: str | None = None, root: str | None = None) -> list[str]:
    """Write the three launchers into bin_dir (atomically; unchanged files are left alone). Returns the
    paths written."""
    python = python or sys.executable
    root = root or podnet_root()
    written = []
    for name, entry in SCRIPTS.items():
        path = os.path.join(bin_dir, name)
        text = script(python, root, entry)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text and os.access(path, os.X_OK):
                    continue
        except OSError:
            pass
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not os.path.isdir(args[0]):
        print("usage: python -m podnet.cni.launcher BIN_DIR", file=sys.stderr)
        return 2
    for path in install(args[0]):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
