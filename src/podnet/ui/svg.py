"""Shapes (layout.py) as SVG text: the `--snapshot` file, with the page's stylesheet inlined.

static/app.js turns the same shapes into the same elements in the browser; keep the two in step (one
element per shape, the same attributes).
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from podnet.ui.layout import PALETTE

SVG_NS = "http://www.w3.org/2000/svg"


def stylesheet() -> str:
    return resources.files("podnet.ui").joinpath("static/scene.css").read_text()


def markers() -> str:
    """Arrow heads, one per Service colour (a marker cannot take its colour from the path that uses it)."""
    return "".join(
        f'<marker id="arrow-c{i}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path class="ah c{i}" d="M0,0 L10,5 L0,10 z"/></marker>'
        for i in range(PALETTE))


def shape(s: dict[str, Any]) -> str:
    t = s["t"]
    if t == "g":
        attrs = f' class={quoteattr(s["kind"])} data-kind={quoteattr(s["kind"])} data-id={quoteattr(s["id"])}'
        title = f"<title>{escape(s['title'])}</title>" if s.get("title") else ""
        return f"<g{attrs}>{title}{''.join(shape(c) for c in s['items'])}</g>"
    if t == "rect":
        return (f'<rect x="{s["x"]}" y="{s["y"]}" width="{s["w"]}" height="{s["h"]}" rx="6" '
                f'class={quoteattr(s["cls"])}/>')
    if t == "text":
        anchor = f' text-anchor="{s["anchor"]}"' if s.get("anchor") else ""
        return f'<text x="{s["x"]}" y="{s["y"]}" class={quoteattr(s["cls"])}{anchor}>{escape(s["s"])}</text>'
    if t == "path":
        arrow = f' marker-end="url(#arrow-{s["arrow"]})"' if s.get("arrow") else ""
        return f'<path d={quoteattr(s["d"])} class={quoteattr(s["cls"])}{arrow}/>'
    if t == "circle":
        return f'<circle cx="{s["x"]}" cy="{s["y"]}" r="{s["r"]}" class={quoteattr(s["cls"])}/>'
    raise ValueError(f"shape type {t!r}: unknown")


def render(scene: dict[str, Any], overlay: dict[str, Any] | None = None) -> str:
    """A standalone SVG document of the scene (and a trace's overlay, if given)."""
    w, h = scene["width"], scene["height"]
    body = "".join(shape(s) for s in scene["shapes"])
    if overlay is not None:
        body += shape(overlay)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="{SVG_NS}" class="scene" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
            f"<style>{escape(stylesheet())}</style><defs>{markers()}</defs>"
            f'<rect class="bg" x="0" y="0" width="{w}" height="{h}" fill="#fbfbf8"/>{body}</svg>\n')
