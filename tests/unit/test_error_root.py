"""One error root: every exception class podnet defines is a PodnetError, except the few that are not errors.

CniError is the CNI spec's error object (cni/spec.py says why); the rest are private control-flow signals
that never leave their module.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import podnet
from podnet.errors import PodnetError

NOT_ERRORS = {
    "podnet.cni.spec.CniError",  # a CNI protocol value printed as JSON, not a podnet failure
    "podnet.store.informer.NotSelected",  # a decoder's "outside the selector" signal
    "podnet.api.loader._TooBig",  # private to the loader
    "podnet.controllers.apply._TooBig",  # private to the planner: split into parts by its own caller
    "podnet.store.etcd._FatalRpc",  # private to the etcd client
    "podnet.store.etcd._SyntheticRpcError",  # shaped as grpc's RpcError so the client classifies it as one
}


def _exception_classes() -> dict[str, type]:
    out: dict[str, type] = {}
    for mod in pkgutil.walk_packages(podnet.__path__, "podnet."):
        if mod.name.startswith("podnet.cni.plugins") or mod.name.endswith("__main__"):
            continue
        try:
            m = importlib.import_module(mod.name)
        except ImportError:  # an optional binding (libnftables) missing on this machine
            continue
        for name, obj in inspect.getmembers(m, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == m.__name__:
                out[f"{m.__name__}.{name}"] = obj
    return out


def test_every_podnet_exception_derives_from_the_one_root() -> None:
    classes = _exception_classes()
    assert len(classes) > 20  # the walk found the package's errors
    strays = sorted(n for n, c in classes.items() if not issubclass(c, PodnetError) and n not in NOT_ERRORS)
    assert strays == []


def test_the_exceptions_apart_from_the_root_still_exist() -> None:
    assert NOT_ERRORS <= set(_exception_classes())
