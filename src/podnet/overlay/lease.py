"""A node's subnet lease and its JSON, byte-compatible with flannel's `lease.LeaseAttrs`.

flannel writes the value of `/coreos.com/network/subnets/<ip>-<plen>` with Go's encoding/json, so the
field order is the struct's (PublicIP, PublicIPv6, BackendType, BackendData, BackendV6Data), PublicIP and
PublicIPv6 are always present (`null` when unset) and the rest are omitted when empty. A real flanneld
and podnet can share one etcd only if both read and write exactly these bytes. The expiry is not in the
JSON: it is the TTL of the store lease the key is attached to.

Pure module: no store or kernel access, so the backends and the CNI side can import it freely.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Literal

from podnet.errors import PodnetError

BackendData = dict[str, Any] | None

# An IPv6-only lease (net-conf EnableIPv4: false) has no IPv4 subnet: flannel keeps the zero IP4Net, so its
# key reads `0.0.0.0-0&fd00:10:244:1::-64` and its PublicIP "0.0.0.0". podnet keeps the same values.
NO_SUBNET = ipaddress.IPv4Network("0.0.0.0/0")
NO_PUBLIC_IP = ipaddress.IPv4Address("0.0.0.0")


class LeaseDecodeError(PodnetError, ValueError):
    """A lease value that is not flannel's LeaseAttrs JSON (logged and skipped by readers, as flannel does)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One node's claim on a pod subnet.

    `expiration` is a unix time (None: unknown, or a reservation without a TTL). `store_lease` is the id
    of the store lease the key hangs on (0: none, i.e. a reservation); `revision` the key's mod revision
    when read, so updates can be made conditional.
    """

    subnet: ipaddress.IPv4Network
    public_ip: ipaddress.IPv4Address
    public_ipv6: ipaddress.IPv6Address | None = None
    backend_type: str | None = None
    backend_data: BackendData = None
    backend_v6_data: BackendData = None
    subnet_v6: ipaddress.IPv6Network | None = None
    expiration: float | None = None
    store_lease: int = 0
    revision: int = 0

    @property
    def has_v4(self) -> bool:
        """False for an IPv6-only lease (its `subnet` is NO_SUBNET)."""
        return self.subnet != NO_SUBNET

    @property
    def ident(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network | None]:
        """What names the lease (its key): the IPv4 subnet and the IPv6 one. IPv6-only leases all share
        NO_SUBNET, so comparing `subnet` alone is wrong there."""
        return self.subnet, self.subnet_v6

    def describe(self) -> str:
        """The subnets for messages: `10.244.1.0/24`, `10.244.1.0/24+fd00:10:244:1::/64`, `fd00:...::/64`."""
        parts = ([str(self.subnet)] if self.has_v4 else []) + ([str(self.subnet_v6)] if self.subnet_v6 else [])
        return "+".join(parts) or str(self.subnet)

    @property
    def key(self) -> str:
        from podnet.store import keys

        return keys.subnet_lease(str(self.subnet), None if self.subnet_v6 is None else str(self.subnet_v6))

    def attrs_equal(self, other: Lease) -> bool:
        """Same JSON on the wire (expiration and store bookkeeping aside)."""
        return encode_attrs(self) == encode_attrs(other)


def go_json(value: Any) -> str:
    """JSON the way Go's encoding/json writes it: compact, UTF-8, with <, >, & and U+2028/9 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def encode_attrs(lease: Lease) -> bytes:
    """The lease value exactly as flanneld writes it, e.g.
    {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
    """
    parts = [
        f'"PublicIP":{go_json(str(lease.public_ip))}',
        f'"PublicIPv6":{go_json(None if lease.public_ipv6 is None else str(lease.public_ipv6))}',
    ]
    if lease.backend_type:
        parts.append(f'"BackendType":{go_json(lease.backend_type)}')
    # json.RawMessage with omitempty: omitted only when empty; a literal null is written as null.
    if lease.backend_data is not None:
        parts.append(f'"BackendData":{go_json(lease.backend_data)}')
    if lease.backend_v6_data is not None:
        parts.append(f'"BackendV6Data":{go_json(lease.backend_v6_data)}')
    return ("{" + ",".join(parts) + "}").encode()


def _field(obj: dict[str, Any], name: str) -> Any:
    # Go matches JSON keys to struct fields case-insensitively; an exact match wins.
    if name in obj:
        return obj[name]
    lname = name.lower()
    for k, v in obj.items():
        if k.lower() == lname:
            return v
    return None


def decode_attrs(
    subnet: str | ipaddress.IPv4Network, value: bytes | str, *, subnet_v6: str | None = None,
    expiration: float | None = None, store_lease: int = 0, revision: int = 0,
) -> Lease:
    """Parse a lease value read from the store. Raises LeaseDecodeError naming what is wrong."""
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as e:
        raise LeaseDecodeError(f"lease {subnet}: value is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise LeaseDecodeError(f"lease {subnet}: value is not a JSON object")
    try:
        public_ip = ipaddress.IPv4Address(_field(obj, "PublicIP") or "0.0.0.0")
    except ValueError as e:
        raise LeaseDecodeError(f"lease {subnet}: PublicIP: {_field(obj, 'PublicIP')!r}: not an IPv4 address") from e
    raw_v6 = _field(obj, "PublicIPv6")
    try:
        public_ipv6 = None if raw_v6 in (None, "") else ipaddress.IPv6Address(raw_v6)
    except ValueError as e:
        raise LeaseDecodeError(f"lease {subnet}: PublicIPv6: {raw_v6!r}: not an IPv6 address") from e
    backend_type = _field(obj, "BackendType")
    if backend_type is not None and not isinstance(backend_type, str):
        raise LeaseDecodeError(f"lease {subnet}: BackendType: {backend_type!r}: not a string")
    return Lease(
        subnet=ipaddress.IPv4Network(subnet),
        public_ip=public_ip,
        public_ipv6=public_ipv6,
        backend_type=backend_type or None,
        backend_data=_field(obj, "BackendData"),
        backend_v6_data=_field(obj, "BackendV6Data"),
        subnet_v6=None if subnet_v6 is None else ipaddress.IPv6Network(subnet_v6),
        expiration=expiration,
        store_lease=store_lease,
        revision=revision,
    )


def decode_lease_kv(key: str, value: bytes) -> Lease:
    """A stored lease: the subnet comes from the key, the rest from the JSON. Raises LeaseDecodeError."""
    from podnet.store import keys

    parsed = keys.parse_subnet_key(key[len(keys.SUBNETS_PREFIX):]) if key.startswith(keys.SUBNETS_PREFIX) else None
    if parsed is None:
        raise LeaseDecodeError(f"{key}: not a subnet lease key")
    return decode_attrs(parsed[0], value, subnet_v6=None if parsed[1] is None else str(parsed[1]))


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """A change to another node's lease. For "removed", `lease` is the lease as it was last added, so a
    backend can delete the neighbour/FDB/route entries keyed by the old VtepMAC and PublicIP."""

    type: Literal["added", "removed"]
    lease: Lease


__all__ = ["BackendData", "Lease", "NO_PUBLIC_IP", "NO_SUBNET", "LeaseDecodeError", "LeaseEvent", "decode_attrs", "decode_lease_kv", "encode_attrs",
           "go_json"]
