// antnode dashboard: renders /api/v1/dashboard frames, live over
// server-sent events (/api/v1/stream). No libraries: the charts are SVG
// drawn here. Everything is built with DOM calls (no innerHTML), so peer
// IDs, addresses and error texts are never interpreted as markup.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const phaseColors = { discover: "#8a96a3", coordinate: "#d29922", sync: "#6e7681", punch: "#58a6ff",
  validate: "#39c5cf", handshake: "#3fb950", relay: "#a371f7", classify: "#8a96a3" };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function text(id, v) { document.getElementById(id).textContent = v; }
function ms(v) { return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(1) + " ms"; }
function short(id) { return id ? id.slice(0, 10) : "-"; }
function replaceRows(id, rows) { document.getElementById(id).replaceChildren(...rows); }

function renderNode(f) {
  const st = f.status || {};
  text("node-id", st.id || "-");
  text("node-role", st.role || "-");
  text("nat-type", st.nat || (st.role === "bootstrap" ? "public (bootstrap)" : "-"));
  text("nat-families", natFamilies(st.nat_families));
  text("uptime", st.uptime_s !== undefined ? Math.round(st.uptime_s) + " s" : "-");
  const peers = (f.peers && f.peers.peers) || [];
  text("peer-count", st.peers !== undefined ? st.peers : (st.registered_peers !== undefined ? st.registered_peers + " registered" : peers.length));
  text("conn-count", st.connections !== undefined ? st.connections : "-");
  text("attempt-count", f.stored_attempts);
  text("generated", new Date(f.generated).toLocaleTimeString());
  replaceRows("bootstrap-rows", (st.bootstraps || []).map(b => el("tr", { "data-bootstrap": b.label },
    el("td", {}, b.label), el("td", {}, b.addr),
    el("td", { class: b.registered ? "ok" : "fail" }, b.registered ? "yes" : "no"),
    el("td", {}, b.transport || "-"), el("td", {}, b.rtt_ms ? ms(b.rtt_ms) : "-"),
    el("td", { class: b.breaker === "closed" ? "" : "warn" }, b.breaker))));
  replaceRows("peer-rows", peers.map(p => el("tr", { "data-peer": p.id },
    el("td", { title: p.id }, short(p.id)), el("td", {}, p.state),
    el("td", { class: "path-" + p.path }, p.path || "-"), el("td", {}, p.family || "-"),
    el("td", {}, p.rtt_ns ? ms(p.rtt_ns / 1e6) : "-"),
    el("td", {}, new Date(p.since).toLocaleTimeString()))));
}

// natFamilies renders a status's nat_families ({"ipv4": class, ...}) as
// "ipv4 eim-apdf, ipv6 eim-apdf", IPv4 first; "-" without any.
function natFamilies(fams) {
  const names = Object.keys(fams || {}).sort();
  return names.length ? names.map(f => f + " " + fams[f]).join(", ") : "-";
}

function duration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = Math.round(s % 60);
  return [h ? h + " h" : "", m ? m + " min" : "", r || (!h && !m) ? r + " s" : ""].filter(Boolean).join(" ");
}
function clock(t) { return t ? new Date(t).toLocaleTimeString() : ""; }

// portMapView is what the port-mapping panel shows of a status's portmap
// object (connect --json's and /api/v1/status's): each field's text, and
// the state's class. A field the state does not have is "-".
function portMapView(st) {
  const pm = st.portmap;
  const v = { mode: "-", state: "-", cls: "", protocol: "-", external: "-", lease: "-", granted: "-", renewed: "-", router: "-" };
  if (!pm) {
    if (st.role === "bootstrap") v.state = "not used (a bootstrap maps nothing)";
    return v;
  }
  v.mode = pm.mode;
  const tried = (pm.probes || []).filter(p => p.result !== "not-tried");
  if (tried.length) v.router = tried.map(p => p.protocol + " " + p.result + (p.code ? " (code " + p.code + ")" : "")).join(", ");
  if (pm.mode === "off") {
    v.state = "off"; v.cls = "muted";
    return v;
  }
  if (pm.active) {
    v.state = "active"; v.cls = "ok";
    v.protocol = pm.protocol; v.external = pm.external;
    v.lease = pm.lease_s ? duration(pm.lease_s) : "-";
    v.granted = clock(pm.granted_at) || "-";
    v.renewed = clock(pm.renewed_at) || "not yet";
    return v;
  }
  const refused = tried.filter(p => p.result === "refused");
  if (refused.length) {
    v.state = "none: the router refused (" + refused.map(p => p.protocol + " code " + p.code).join(", ") + ")"; v.cls = "fail";
  } else if (tried.some(p => p.result === "ok")) {
    v.state = "none: the mapping was lost; asking the router again"; v.cls = "warn";
  } else if (pm.last_error) {
    v.state = "none: " + pm.last_error.split("\n").join("; "); v.cls = "warn";
  } else {
    v.state = "none yet: asking the router"; v.cls = "muted";
  }
  return v;
}

// renderPortMap writes the panel (root: the section, or a copy of it).
function renderPortMap(f, root) {
  const v = portMapView(f.status || {});
  root = root || document.getElementById("portmap");
  for (const k of ["mode", "state", "protocol", "external", "lease", "granted", "renewed", "router"]) {
    const d = root.querySelector(`[data-pm="${k}"]`);
    d.textContent = v[k];
    if (k === "state") d.className = v.cls;
  }
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

// renderServices lists the services the node serves and dials; refusals
// show their total, the codes in the cell's title.
function renderServices(f) {
  const list = (f.services && f.services.services) || [];
  const rows = list.filter(s => s.served || s.opened || s.accepted || s.active || Object.keys(s.refused || {}).length);
  replaceRows("service-rows", rows.map(s => {
    const refused = s.refused || {};
    const total = Object.values(refused).reduce((a, b) => a + b, 0);
    const codes = Object.entries(refused).map(([k, v]) => `${k}: ${v}`).join(", ");
    return el("tr", { "data-service": s.service },
      el("td", {}, s.service), el("td", {}, s.served ? (s.target || "yes") : "-"),
      el("td", {}, s.allow || "-"), el("td", {}, s.active),
      el("td", {}, s.accepted), el("td", { class: total ? "warn" : "", title: codes, "data-refused": total }, total),
      el("td", {}, s.opened), el("td", { class: s.peer_refused ? "warn" : "" }, s.peer_refused),
      el("td", {}, bytes(s.bytes_in)), el("td", {}, bytes(s.bytes_out)));
  }));
}

// phaseBar draws an attempt's phases on one time axis.
function phaseBar(a) {
  const w = 260, h = 14, total = Math.max(a.duration_ms, 1);
  const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
  for (const p of a.phases || []) {
    const r = svg("rect", { x: (p.start_ms / total) * w, y: 2, height: h - 4, rx: 2,
      width: Math.max(1, (p.duration_ms / total) * w), fill: phaseColors[p.phase] || "#6e7681",
      opacity: p.outcome === "ok" ? 1 : 0.45 });
    const t = svg("title"); t.textContent = `${p.phase} ${p.outcome} ${ms(p.duration_ms)}`;
    r.append(t); s.append(r);
  }
  return s;
}

function renderAttempts(f) {
  replaceRows("attempt-rows", f.attempts.map(a => el("tr", { "data-attempt-id": a.id },
    el("td", { title: a.peer || "" }, a.id), el("td", {}, a.role),
    el("td", {}, `${a.nat || "?"} → ${a.peer_nat || "?"}`),
    el("td", { class: a.outcome === "ok" ? "ok" : "fail" }, a.outcome + (a.reason ? " (" + a.reason + ")" : "")),
    el("td", { class: "path-" + a.path }, a.path || "-"), el("td", {}, a.family || "-"), el("td", {}, ms(a.duration_ms)),
    el("td", {}, phaseBar(a)))));
}

function renderNAT(f) {
  const rows = f.by_nat, bar = 200, rowH = 20, left = 190;
  const s = svg("svg", { width: left + bar + 80, height: Math.max(rowH, rows.length * rowH), id: "nat-svg" });
  rows.forEach((r, i) => {
    const y = i * rowH;
    const label = svg("text", { x: 0, y: y + 14 }); label.textContent = `${r.nat || "?"} → ${r.peer_nat || "?"}`;
    const bg = svg("rect", { x: left, y: y + 3, width: bar, height: rowH - 6, fill: "#242c35" });
    const fg = svg("rect", { x: left, y: y + 3, width: bar * r.success_rate, height: rowH - 6, fill: r.success_rate >= 0.9 ? "#3fb950" : "#d29922",
      "data-nat": `${r.nat}/${r.peer_nat}`, "data-rate": r.success_rate });
    const v = svg("text", { x: left + bar + 6, y: y + 14 }); v.textContent = `${Math.round(r.success_rate * 100)}% of ${r.attempts}`;
    s.append(label, bg, fg, v);
  });
  document.getElementById("nat-chart").replaceChildren(rows.length ? s : el("p", { class: "muted" }, "no attempts yet"));
}

function renderLatency(f) {
  const l = f.time_to_connect_ms;
  if (!l.n) { document.getElementById("latency-chart").replaceChildren(el("p", { class: "muted" }, "no connections yet")); return; }
  const max = Math.max(l.p99, 1), bar = 260;
  const s = svg("svg", { width: 400, height: 66 });
  [["p50", l.p50], ["p95", l.p95], ["p99", l.p99]].forEach(([k, v], i) => {
    const t = svg("text", { x: 0, y: i * 22 + 14 }); t.textContent = k;
    const r = svg("rect", { x: 40, y: i * 22 + 3, width: Math.max(1, bar * v / max), height: 14, fill: "#58a6ff", "data-percentile": k, "data-ms": v });
    const vt = svg("text", { x: 46 + bar, y: i * 22 + 14 }); vt.textContent = ms(v);
    s.append(t, r, vt);
  });
  document.getElementById("latency-chart").replaceChildren(s, el("p", { class: "muted" }, `${l.n} successful attempts`));
}

function renderFindings(f) {
  const items = f.findings.map(x => el("li", { "data-cause": x.cause },
    el("strong", { class: x.severity === "info" ? "" : "warn" }, x.title), ` (${x.scope}, confidence ${x.confidence.toFixed(2)}): `,
    x.summary, el("br"), el("span", { class: "muted" }, "next: " + x.next_step)));
  document.getElementById("finding-list").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "none")]));
}

function render(f) {
  renderNode(f); renderPortMap(f); renderServices(f); renderAttempts(f); renderNAT(f); renderLatency(f); renderFindings(f);
  document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
}

function live(state) { const b = document.getElementById("live"); b.dataset.state = state; b.textContent = state; }

async function start() {
  try {
    const r = await fetch("/api/v1/dashboard", { credentials: "same-origin" });
    if (r.ok) render(await r.json());
  } catch (e) { live("lost"); }
  const es = new EventSource("/api/v1/stream");
  es.addEventListener("frame", ev => { live("live"); render(JSON.parse(ev.data)); });
  es.onerror = () => live("lost");
}
start();
