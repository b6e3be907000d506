"""canonical_ip: the one-regex path for canonical dotted quads answers exactly as a full parse does."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from podnet.api.defaults import IPV4, IPV6
from podnet.api.ipaddr import _canonical_slow, canonical_ip


def _canonical(text: str) -> tuple[str, str] | None:
    """canonical_ip with its cache emptied first: every example is really computed."""
    _canonical_slow.cache_clear()
    return canonical_ip(text)


def reference(text: str) -> tuple[str, str] | None:
    """Go's ParseIPSloppy through the ipaddress module: IPv4 octets may carry leading zeros (decimal)."""
    if ":" in text:
        try:
            ip6 = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        v4 = ip6.ipv4_mapped
        return (str(v4), IPV4) if v4 is not None else (str(ip6), IPV6)
    parts = text.split(".")
    if len(parts) != 4 or not all(0 < len(p) <= 3 and all(c in "0123456789" for c in p) for p in parts):
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(str(int(p)) for p in parts))), IPV4
    except ValueError:
        return None


@st.composite
def written_ipv4(draw: st.DrawFn) -> str:
    """An IPv4 address as people write it: octets sometimes padded with zeros, sometimes out of range."""
    octets = [draw(st.integers(0, 300)) for _ in range(4)]
    return ".".join(str(o).zfill(draw(st.integers(0, 4))) for o in octets)


@given(st.one_of(
    written_ipv4(),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.text(alphabet="0123456789.", max_size=20),
    st.text(alphabet="0123456789.:abcdef٣\n ", max_size=24),
    st.text(max_size=20),
))
@example("10.0.0.1")
@example("10.0.0.1\n")
@example("010.0.0.1")
@example("0.0.0.0")
@example("255.255.255.255")
@example("256.0.0.1")
@example("1.2.3.٤")
@example("1.2.3")
@example("1.2.3.4.5")
@example("::ffff:10.0.0.1")
def test_canonical_ip_is_a_sloppy_parse(text: str) -> None:
    assert _canonical(text) == reference(text)


def test_canonical_ip_normalises_and_refuses() -> None:
    assert canonical_ip("10.180.00.001") == ("10.180.0.1", IPV4)
    assert canonical_ip("10.0.0.1") == ("10.0.0.1", IPV4)
    assert canonical_ip("10.0.0.1 ") is None and canonical_ip("1.2.3.0256") is None
    assert canonical_ip(5) is None  # type: ignore[arg-type]
