// podnet lab ui: draws the scene the server lays out (podnet/ui/layout.py) and keeps it current.
// One SVG element per shape, the same attributes as podnet/ui/svg.py writes for --snapshot.
// No library: the layout is done on the server, so drawing is a loop over shapes.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const svgRoot = document.getElementById("scene");
let scene = null;       // the last scene the server sent
let trace = null;       // the last trace answered, and which of its outcomes is drawn
let outcome = 0;
let overlay = null;     // shapes of that outcome's path, laid out for overlayVersion
let overlayVersion = -1;

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function shape(s) {
  switch (s.t) {
    case "g": {
      const g = el("g", {"class": s.kind, "data-kind": s.kind, "data-id": s.id});
      if (s.title) g.appendChild(el("title", {}, s.title));
      for (const c of s.items) g.appendChild(shape(c));
      return g;
    }
    case "rect":
      return el("rect", {x: s.x, y: s.y, width: s.w, height: s.h, rx: 6, "class": s.cls});
    case "text": {
      const attrs = {x: s.x, y: s.y, "class": s.cls};
      if (s.anchor) attrs["text-anchor"] = s.anchor;
      return el("text", attrs, s.s);
    }
    case "path": {
      const attrs = {d: s.d, "class": s.cls};
      if (s.arrow) attrs["marker-end"] = `url(#arrow-${s.arrow})`;
      return el("path", attrs);
    }
    case "circle":
      return el("circle", {cx: s.x, cy: s.y, r: s.r, "class": s.cls});
    default:
      throw new Error(`shape type ${s.t}: unknown`);
  }
}

function markers(n) {
  const defs = el("defs", {});
  for (let i = 0; i < n; i++) {
    const m = el("marker", {id: `arrow-c${i}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
                            markerHeight: 7, orient: "auto-start-reverse"});
    m.appendChild(el("path", {"class": `ah c${i}`, d: "M0,0 L10,5 L0,10 z"}));
    defs.appendChild(m);
  }
  return defs;
}

function draw() {
  const w = scene.width, h = scene.height;
  const frag = document.createDocumentFragment();
  frag.appendChild(markers(scene.palette));
  frag.appendChild(el("rect", {"class": "bg", x: 0, y: 0, width: w, height: h, fill: "#fbfbf8"}));
  for (const s of scene.shapes) frag.appendChild(shape(s));
  if (overlay && overlayVersion === scene.version) frag.appendChild(shape(overlay));
  svgRoot.replaceChildren(frag);
  svgRoot.setAttribute("width", w);
  svgRoot.setAttribute("height", h);
  svgRoot.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svgRoot.dataset.version = scene.version;
}

function showStatus() {
  const st = scene.status;
  const badge = document.getElementById("status");
  badge.dataset.state = st.api;
  badge.textContent = st.api === "connected" ? "live" : "connecting to the API…";
  const c = st.counts;
  document.getElementById("title").textContent = `podnet lab ${scene.lab}`;
  document.getElementById("counts").textContent = `${c.nodes} nodes · ${c.pods} pods · ${c.services} Services`;
  const notes = document.getElementById("notes");
  notes.replaceChildren(...[...Object.entries(st.errors).map(([k, v]) => `${k}: ${v}`), ...st.warnings]
    .map(t => { const p = document.createElement("p"); p.textContent = t; return p; }));
  for (const [id, words] of [["from-list", scene.choices.from], ["to-list", scene.choices.to]]) {
    document.getElementById(id).replaceChildren(...words.map(w => {
      const o = document.createElement("option"); o.value = w; return o; }));
  }
}

async function post(path, body) {
  const r = await fetch(path, {method: "POST", body: JSON.stringify(body),
                               headers: {"Content-Type": "application/json", "X-Podnet-UI": "1"}});
  const doc = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (!r.ok) throw new Error(doc.error || `HTTP ${r.status}`);
  return doc;
}

async function relayout() {
  // the picture moved under a drawn trace: lay its path out again on the new scene
  if (!trace) return;
  const want = scene.version;
  try {
    const doc = await post("/api/overlay", {trace, outcome});
    if (doc.version === scene.version) { overlay = doc.overlay; overlayVersion = doc.version; draw(); }
  } catch (e) {
    if (want === scene.version) setVerdict(`the path could not be drawn again: ${e.message}`, "error");
  }
}

function onScene(next) {
  if (!next.shapes) return;  // the server had not built its first scene yet
  scene = next;
  draw();
  showStatus();
  if (trace && overlayVersion !== scene.version) relayout();
}

function setVerdict(text, cls) {
  const v = document.getElementById("trace-verdict");
  v.textContent = text;
  v.className = cls;
  document.getElementById("trace-result").hidden = false;
}

function hopItem(h, i) {
  const li = document.createElement("li");
  li.value = i + 1;
  li.dataset.node = h.node;
  li.dataset.step = h.step;
  li.dataset.chain = h.chain || "";
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = `${h.node} ${h.step}` + (h.table ? ` ${h.table}` : "");
  li.appendChild(where);
  if (h.chain) {
    const c = document.createElement("span");
    c.className = "chain";
    c.textContent = ` ${h.chain}` + (h.rule != null ? `#${h.rule}` : "");
    li.appendChild(c);
  }
  li.appendChild(document.createTextNode(` ${h.detail}`));
  return li;
}

function showOutcome(i) {
  outcome = i;
  const o = trace.outcomes[i];
  document.querySelectorAll("#trace-outcomes li").forEach((li, j) => li.classList.toggle("selected", j === i));
  document.getElementById("trace-hops").replaceChildren(...(o ? o.hops : []).map(hopItem));
}

function showTrace(doc) {
  trace = doc.trace;
  overlay = doc.overlay;
  overlayVersion = doc.version;
  const f = trace.flow;
  setVerdict(`${trace.verdict}: ${f.proto} ${f.src} -> ${f.dst}:${f.dport}`, trace.verdict);
  const kernel = document.getElementById("trace-kernel");
  if (trace.verify) {
    kernel.hidden = false;
    kernel.className = trace.verify.agree ? "agree" : "disagree";
    kernel.textContent = (trace.verify.agree ? "the kernel agrees: " : "the kernel disagrees: ") +
      trace.verify.summary + (trace.verify.disagreements || []).map(d => `\n${d}`).join("");
  } else {
    kernel.hidden = true;
  }
  const list = document.getElementById("trace-outcomes");
  list.replaceChildren(...trace.outcomes.map((o, i) => {
    const li = document.createElement("li");
    li.dataset.endpoint = o.endpoint;
    li.textContent = `${(o.probability * 100).toFixed(1)}% ${o.verdict} ${o.endpoint || ""} ${o.where}` +
      (o.reason ? ` (${o.reason})` : "");
    li.addEventListener("click", async () => {
      showOutcome(i);
      await relayoutOutcome();
    });
    return li;
  }));
  showOutcome(0);
  if (overlayVersion === scene.version) draw(); else relayout();
}

async function relayoutOutcome() {
  overlayVersion = -1;
  await relayout();
}

document.getElementById("trace-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = document.getElementById("trace-run");
  const verify = document.getElementById("trace-verify").checked;
  button.disabled = true;
  setVerdict(verify ? "tracing, and sending probes…" : "tracing…", "");
  try {
    showTrace(await post("/api/trace", {
      from: document.getElementById("trace-from").value, to: document.getElementById("trace-to").value,
      proto: document.getElementById("trace-proto").value, verify}));
  } catch (e) {
    setVerdict(e.message, "error");
  } finally {
    button.disabled = false;
  }
});

const events = new EventSource("/api/events");
events.addEventListener("scene", (ev) => onScene(JSON.parse(ev.data)));
events.addEventListener("error", () => {
  const badge = document.getElementById("status");
  badge.dataset.state = "lost";
  badge.textContent = "reconnecting…";
});
