"""kube-proxy's own configuration file (KubeProxyConfiguration, kubeproxy.config.k8s.io/v1alpha1)
and the host facts that change the rules (proxy/settings.py resolves both into what the renderers read).

Operators bring their existing kube-proxy config files, so field names, defaults and the strict
"unknown field" behaviour follow kube-proxy. Host facts (`nodeName`, `nodeIPs`, `nfacct`,
`randomFully`) are what kube-proxy detects on a live host; `podnet proxy render` takes them from a
file so the output is reproducible anywhere, `podnet proxy run` detects them itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError

from podnet.api.defaults import IPV4, IPV6
from podnet.api.ipaddr import parse_cidr, parse_ip
from podnet.errors import Problem, ValidationError

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: Any) -> float:
    """Seconds from a Go duration string ("30s", "1m0s", "500ms") or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30s")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if not isinstance(value, str) or not value:
        raise ValueError("must be a duration like 30s")
    if value == "0":
        return 0.0
    if not _DURATION_RE.match(value):
        raise ValueError("must be a duration like 30s, 1m0s or 500ms")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


class _Model(BaseModel):
    # kube-proxy decodes its config strictly: an unknown field is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class IPTablesConfig(_Model):
    masquerade_all: bool = Field(False, alias="masqueradeAll")
    masquerade_bit: int = Field(14, alias="masqueradeBit", ge=0, le=31)
    localhost_node_ports: bool = Field(True, alias="localhostNodePorts")
    sync_period: float = Field(30.0, alias="syncPeriod")
    # kube-proxy's default is 1s; podnet applies a change at once unless told otherwise (issue 3).
    min_sync_period: float = Field(0.0, alias="minSyncPeriod")

    _durations = field_validator("sync_period", "min_sync_period", mode="before")(
        lambda v: parse_duration(v)
    )


class ConntrackConfig(_Model):
    max_per_core: int | None = Field(None, alias="maxPerCore", ge=0)
    min: int | None = Field(None, ge=0)
    tcp_established_timeout: float | None = Field(None, alias="tcpEstablishedTimeout")
    tcp_close_wait_timeout: float | None = Field(None, alias="tcpCloseWaitTimeout")
    tcp_be_liberal: bool = Field(False, alias="tcpBeLiberal")
    udp_timeout: float | None = Field(None, alias="udpTimeout")
    udp_stream_timeout: float | None = Field(None, alias="udpStreamTimeout")

    _durations = field_validator(
        "tcp_established_timeout", "tcp_close_wait_timeout", "udp_timeout", "udp_stream_timeout", mode="before"
    )(lambda v: None if v is None else parse_duration(v))


class DetectLocalConfig(_Model):
    bridge_interface: str = Field("", alias="bridgeInterface")
    interface_name_prefix: str = Field("", alias="interfaceNamePrefix")


class KubeProxyConfiguration(_Model):
    """The subset of kube-proxy's v1alpha1 config podnet acts on; other known sections are accepted."""

    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: str = KIND
    mode: Literal["", "iptables", "nftables", "ipvs", "kernelspace"] = ""
    cluster_cidr: str = Field("", alias="clusterCIDR")
    detect_local_mode: Literal["", "ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"] = Field(
        "", alias="detectLocalMode"
    )
    detect_local: DetectLocalConfig = Field(default_factory=DetectLocalConfig, alias="detectLocal")
    hostname_override: str = Field("", alias="hostnameOverride")
    bind_address: str = Field("0.0.0.0", alias="bindAddress")
    healthz_bind_address: str = Field("0.0.0.0:10256", alias="healthzBindAddress")
    metrics_bind_address: str = Field("127.0.0.1:10249", alias="metricsBindAddress")
    iptables: IPTablesConfig = Field(default_factory=IPTablesConfig)
    node_port_addresses: list[str] = Field(default_factory=list, alias="nodePortAddresses")
    conntrack: ConntrackConfig = Field(default_factory=ConntrackConfig)
    feature_gates: dict[str, bool] = Field(default_factory=dict, alias="featureGates")
    # Accepted for compatibility with real kube-proxy files; podnet does not use them.
    bind_address_hard_fail: bool = Field(False, alias="bindAddressHardFail")
    client_connection: dict[str, Any] = Field(default_factory=dict, alias="clientConnection")
    config_sync_period: str | None = Field(None, alias="configSyncPeriod")
    enable_profiling: bool = Field(False, alias="enableProfiling")
    show_hidden_metrics_for_version: str = Field("", alias="showHiddenMetricsForVersion")
    ipvs: dict[str, Any] = Field(default_factory=dict)
    nftables: dict[str, Any] = Field(default_factory=dict)
    winkernel: dict[str, Any] = Field(default_factory=dict)
    logging: dict[str, Any] = Field(default_factory=dict)
    oom_score_adj: int | None = Field(None, alias="oomScoreAdj")
    port_range: str = Field("", alias="portRange")
    sync_period: float | None = Field(None, alias="syncPeriod")
    min_sync_period: float | None = Field(None, alias="minSyncPeriod")

    @field_validator("api_version", "kind")
    @classmethod
    def _type_meta(cls, v: str, info: ValidationInfo) -> str:
        want = API_VERSION if info.field_name == "api_version" else KIND
        if v != want:
            raise ValueError(f"must be {want}")
        return v

    @field_validator("cluster_cidr")
    @classmethod
    def _cidrs(cls, v: str) -> str:
        # kube-proxy: one CIDR, or a dual-stack pair (one per family), comma-separated
        families = []
        for part in filter(None, (p.strip() for p in v.split(","))):
            net = parse_cidr(part)
            if net is None:
                raise ValueError(f"{part!r} is not a CIDR")
            families.append(net.version)
        if len(families) > 2 or len(set(families)) != len(families):
            raise ValueError(f"{v!r}: at most one CIDR per IP family (a dual-stack pair)")
        return v

    @field_validator("node_port_addresses")
    @classmethod
    def _npa(cls, v: list[str]) -> list[str]:
        for part in v:
            if part != "primary" and parse_cidr(part) is None:
                raise ValueError(f"{part!r} is not a CIDR (or 'primary')")
        return v

    @field_validator("sync_period", "min_sync_period", mode="before")
    @classmethod
    def _top_durations(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    def cluster_cidr_of(self, ip_family: str) -> str:
        """The clusterCIDR entry of one family ("" when the list has none): each family's proxier
        masquerades off-cluster traffic by its own."""
        for part in filter(None, (p.strip() for p in self.cluster_cidr.split(","))):
            net = parse_cidr(part)
            if net is not None and (IPV6 if net.version == 6 else IPV4) == ip_family:
                return str(net)
        return ""

    @property
    def effective_sync_period(self) -> float:
        return self.sync_period if self.sync_period is not None else self.iptables.sync_period

    @property
    def effective_min_sync_period(self) -> float:
        return self.min_sync_period if self.min_sync_period is not None else self.iptables.min_sync_period


class HostFacts(_Model):
    """What kube-proxy detects on a live host and what changes the rules (exactly these keys)."""

    node_name: str = Field(..., alias="nodeName", min_length=1)
    node_ips: list[str] = Field(default_factory=list, alias="nodeIPs")
    nfacct: bool = False  # ct_state_invalid_dropped_pkts and localhost_nps_accepted_pkts exist
    random_fully: bool = Field(False, alias="randomFully")  # MASQUERADE --random-fully works

    @field_validator("node_ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        out = []
        for ip in v:
            parsed = parse_ip(ip) if isinstance(ip, str) else None
            if parsed is None:
                raise ValueError(f"{ip!r} is not an IP address")
            out.append(str(parsed))
        return out


def _problems_from(err: PydanticValidationError, what: str) -> list[Problem]:
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        value = e.get("input") if e["type"] != "missing" else None
        out.append(Problem(path, value if not isinstance(value, Mapping) else None, msg, what))
    return out


def _load_yaml(source: str | Path | Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValidationError([Problem("file", str(path), e.strerror or str(e), what)]) from None
    except yaml.YAMLError as e:
        raise ValidationError([Problem("file", str(path), f"not valid YAML: {e}", what)]) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValidationError([Problem("file", str(path), "must hold a YAML mapping", what)])
    return dict(data)


def load_proxy_config(source: str | Path | Mapping[str, Any] | None) -> KubeProxyConfiguration:
    """Parse a KubeProxyConfiguration (path, mapping or None for all defaults)."""
    data = _load_yaml(source, KIND)
    try:
        return KubeProxyConfiguration.model_validate(data)
    except PydanticValidationError as e:
        raise ValidationError(_problems_from(e, KIND)) from None


def load_host_facts(source: str | Path | Mapping[str, Any]) -> HostFacts:
    """Parse host facts (nodeName, nodeIPs, nfacct, randomFully)."""
    data = _load_yaml(source, "HostFacts")
    try:
        return HostFacts.model_validate(data)
    except PydanticValidationError as e:
        raise ValidationError(_problems_from(e, "HostFacts")) from None


__all__ = [
    "API_VERSION",
    "IPV4",
    "IPV6",
    "ConntrackConfig",
    "HostFacts",
    "IPTablesConfig",
    "KubeProxyConfiguration",
    "load_host_facts",
    "load_proxy_config",
    "parse_duration",
]
