"""The interval index behind subnet choice answers exactly what a scan of every lease would."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from podnet.overlay.storesubnet import _Taken

nets = st.builds(
    lambda a, plen: ipaddress.ip_network((a, plen), strict=False),
    st.integers(0, 2**32 - 1), st.integers(8, 30),
)


@given(st.lists(nets, max_size=40), nets)
def test_overlap_equals_linear_scan(taken, candidate):
    assert _Taken(taken).overlaps(candidate) == any(candidate.overlaps(t) for t in taken)
