"""flannel's CNI meta plugin: turn subnet.env into a bridge (or other delegate) config and run it.

Same semantics as flannel-io/cni-plugin: defaults come from the subnet.env that the overlay agent
writes, the generated delegate config is saved to <dataDir>/<containerID> so DEL replays exactly
what ADD used (the node's subnet may have changed in between), and CHECK is a no-op.
"""

from __future__ import annotations

import os

from podnet.cni import delegate, gojson, spec
from podnet.cni.spec import Request, internal
from podnet.overlay import subnetenv
from podnet.overlay.subnetenv import SubnetEnv

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~5 ms per pod at import
    from typing import Any

DEFAULT_SUBNET_FILE = subnetenv.DEFAULT_PATH
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"


def load_subnet_env(path: str) -> SubnetEnv:
    """Parse flannel's subnet.env; every required key missing is named, as flannel does."""
    try:
        return subnetenv.load(path)
    except subnetenv.SubnetEnvError as e:
        raise internal(str(e)) from None


def delegate_config(conf: dict[str, Any], env: SubnetEnv) -> dict[str, Any]:
    """The delegate netconf flannel would generate for this request and subnet.env."""
    dlg = conf.get("delegate") or {}
    if not isinstance(dlg, dict):
        raise internal("'delegate' must be an object")
    dlg = dict(dlg)
    if "type" in dlg and not isinstance(dlg["type"], str):
        raise internal("'delegate' dictionary, if present, must have (string) 'type' field")
    if "name" in dlg:
        raise internal("'delegate' dictionary must not have 'name' field, it'll be set by flannel")
    if "ipam" in dlg:
        raise internal("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel")
    if isinstance(conf.get("runtimeConfig"), dict):
        dlg["runtimeConfig"] = conf["runtimeConfig"]
    dlg["name"] = conf["name"]
    dlg.setdefault("type", "bridge")
    dlg.setdefault("ipMasq", not env.ipmasq)
    dlg.setdefault("mtu", env.mtu)
    if dlg["type"] == "bridge":
        dlg.setdefault("isGateway", True)
    if conf.get("cniVersion"):
        dlg["cniVersion"] = conf["cniVersion"]
    ipam = dict(conf.get("ipam") or {}) if isinstance(conf.get("ipam"), dict) else {}
    ipam.setdefault("type", "host-local")
    ranges = []
    if env.subnet is not None:
        ranges.append([{"subnet": str(env.subnet)}])
    if env.ipv6_subnet is not None:
        ranges.append([{"subnet": str(env.ipv6_subnet)}])
    ipam["ranges"] = ranges
    routes = ipam.get("routes") or []
    if not isinstance(routes, list):
        raise internal("'ipam' dictionary, if present, must have a list of 'routes'")
    routes = list(routes)
    routes += [{"dst": str(n)} for n in env.networks] + [{"dst": str(n)} for n in env.ipv6_networks]
    ipam["routes"] = routes
    dlg["ipam"] = ipam
    # Both names are run from CNI_PATH later (the IPAM one by the delegate): refuse a path before the
    # config is saved for DEL to replay, so nothing outside CNI_PATH can ever be run from it.
    delegate.check_plugin_name(dlg["type"])
    if not isinstance(ipam["type"], str):
        raise internal("'ipam' dictionary, if present, must have (string) 'type' field")
    delegate.check_plugin_name(ipam["type"])
    return dlg


def _go_map_json(obj: Any) -> bytes:
    """Go marshals maps with sorted keys and no spaces; keep the saved file byte-identical to flannel's."""
    return gojson.dumps(obj, sort_keys=True).encode()  # json.dumps(sort_keys, ",", ":", ensure_ascii=False)


def _data_dir(conf: dict[str, Any]) -> str:
    d = conf.get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(d, str):
        raise internal("dataDir must be a string")
    return d


def add(req: Request) -> dict[str, Any]:
    conf = req.conf
    subnet_file = conf.get("subnetFile") or DEFAULT_SUBNET_FILE
    try:
        env = load_subnet_env(subnet_file)
    except spec.CniError as e:
        raise internal(f"failed to load flannel 'subnet.env' file: {e.msg}. Check the flannel pod log for this node.") from None
    dlg = delegate_config(conf, env)
    data = _go_map_json(dlg)
    ddir = _data_dir(conf)
    os.makedirs(ddir, mode=0o700, exist_ok=True)
    path = os.path.join(ddir, req.container_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        result = delegate.call(dlg["type"], "ADD", data, req.env)
    except spec.CniError:
        # flannel leaves the file for the runtime's DEL to replay; so do we (DEL removes it).
        raise
    assert result is not None
    return spec.render_result(result, req.version)


def delete(req: Request) -> None:
    path = os.path.join(_data_dir(req.conf), req.container_id)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None  # already cleaned up: DEL is idempotent
    except OSError as e:
        raise internal(f"failed to read {path}: {e.strerror}") from None
    try:
        saved = gojson.loads(data)
        dtype = saved["type"]
    except (ValueError, KeyError, TypeError):
        return None  # flannel logs and gives up on a corrupt file
    delegate.call(dtype, "DEL", data, req.env)
    os.unlink(path)
    return None


def check(req: Request) -> None:
    return None


def gc(req: Request) -> None:
    """Forward GC to the delegate with a config generated from the current subnet.env."""
    env = load_subnet_env(req.conf.get("subnetFile") or DEFAULT_SUBNET_FILE)
    dlg = delegate_config(req.conf, env)
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in req.conf:
            dlg[key] = req.conf[key]
    delegate.call(dlg["type"], "GC", _go_map_json(dlg), req.env)
    return None


def status(req: Request) -> None:
    """Not ready until the overlay agent has written subnet.env (the node has no subnet yet)."""
    path = req.conf.get("subnetFile") or DEFAULT_SUBNET_FILE
    try:
        env = load_subnet_env(path)
    except spec.CniError as e:
        raise spec.CniError(spec.ERR_NOT_AVAILABLE, "flannel subnet.env not usable", e.msg) from None
    dlg = delegate_config(req.conf, env)
    delegate.call(dlg["type"], "STATUS", _go_map_json(dlg), req.env)
    return None
