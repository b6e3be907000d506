"""Shapes as SVG text: well-formed whatever the names hold, one element per shape, the stylesheet inlined."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from podnet.ui import layout, svg

NS = {"s": svg.SVG_NS}


def _parse(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(text.split("\n", 1)[1])


def test_text_and_attributes_are_escaped() -> None:
    nasty = 'a<b>&"c\' ]]>'
    sc = {"width": 100, "height": 50, "shapes": [
        layout.group("pod", nasty, [layout.rect(1, 2, 3, 4, "pod-box"), layout.text(5, 6, nasty),
                                    layout.path("M0,0 L1,1", "edge c1", arrow="c1")], title=nasty)]}
    root = _parse(svg.render(sc))
    (g,) = root.iterfind(".//s:g", NS)
    assert g.get("data-id") == nasty and g.get("data-kind") == "pod"
    assert g.find("s:title", NS).text == nasty  # type: ignore[union-attr]
    assert [t.text for t in g.iterfind("s:text", NS)] == [nasty]
    assert g.find("s:path", NS).get("marker-end") == "url(#arrow-c1)"  # type: ignore[union-attr]
    assert len(root.findall(".//s:marker", NS)) == layout.PALETTE
    assert ".scene .node-box" in root.find("s:style", NS).text  # type: ignore[union-attr]


def test_an_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="'blob'"):
        svg.shape({"t": "blob"})
