// coalmine's read-only web view: the list of Canaries, and one Canary's live timeline.
// It polls the JSON API every second and draws with the DOM only (no innerHTML of data,
// nothing loaded from elsewhere: the page's Content-Security-Policy allows this origin).
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return "n/a";
  return String(Math.round(v * 1000) / 1000);
}

// axis is an axis label: at most four significant digits.
function axis(v) {
  return String(Number(v.toPrecision(4)));
}

function age(from, now) {
  const s = Math.max(0, Math.round((new Date(now) - new Date(from)) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}

function range(m) {
  if (m.min !== undefined && m.max !== undefined) return "[" + fmt(m.min) + ", " + fmt(m.max) + "]";
  if (m.min !== undefined) return "≥ " + fmt(m.min);
  if (m.max !== undefined) return "≤ " + fmt(m.max);
  return "";
}

function phaseBadge(phase) {
  return el("span", { class: "phase phase-" + (phase || "Unknown"), "data-phase": phase || "" }, phase || "Unknown");
}

// weightBar: primary blue, canary orange, the canary's share to scale.
function weightBar(weight, width) {
  const w = width || 120;
  const s = svg("svg", { width: w, height: 12, viewBox: "0 0 " + w + " 12", role: "img" });
  const c = Math.round((weight / 100) * w);
  s.append(svg("rect", { x: 0, y: 0, width: w - c, height: 12, fill: "#1c7ed6" }));
  s.append(svg("rect", { x: w - c, y: 0, width: c, height: 12, fill: "#f08c00" }));
  s.append(svg("title", {}, (100 - weight) + "% primary, " + weight + "% canary"));
  return s;
}

function setStatus(text, error) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = error ? "status error" : "status";
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ---------------------------------------------------------------- the list

function renderList(data) {
  const main = document.getElementById("main");
  const rows = data.canaries.map((c) => {
    const metrics = el("td", {});
    for (const m of c.metrics) {
      metrics.append(el("div", { class: "outcome-" + (m.outcome || "none") },
        m.name + " " + fmt(m.value) + " (" + range(m) + ")" + (m.outcome ? " " + m.outcome : "")));
    }
    const href = "/canaries/" + encodeURIComponent(c.namespace) + "/" + encodeURIComponent(c.name);
    return el("tr", { "data-canary": c.namespace + "/" + c.name },
      el("td", {}, c.namespace),
      el("td", {}, el("a", { href: href }, c.name)),
      el("td", {}, phaseBadge(c.phase)),
      el("td", { class: "num" }, weightBar(c.weight), " " + c.weight + "%"),
      el("td", { class: "num" }, c.failedChecks + "/" + c.failedChecksThreshold),
      metrics,
      el("td", { class: "muted" }, c.revision || c.stableRevision || ""),
      el("td", { class: "num muted" }, age(c.lastTransitionTime || c.created, data.now)),
      el("td", { class: "message" }, c.message || ""));
  });
  const table = rows.length === 0
    ? el("div", { class: "empty" }, "No Canaries in the cache yet.")
    : el("table", { id: "canaries" },
      el("thead", {}, el("tr", {}, ...["Namespace", "Canary", "Phase", "Weight", "Failed checks", "Metrics (last, accepted)", "Revision", "Since", "Message"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows));
  main.replaceChildren(el("h1", {}, "Canaries"), table);
}

// ---------------------------------------------------------------- one Canary

const W = 1000, LEFT = 70, RIGHT = 20, PANEL = 110, GAP = 34, TOP = 28;

// phaseLabels lays out the phase-change labels in rows so none overlaps another: each
// goes into the first row whose last label ends left of it.
function phaseLabels(marks, x) {
  const rowsEnd = [];
  return marks.map((m) => {
    const left = x(m.t);
    const width = m.label.length * 6.2 + 6;
    let row = rowsEnd.findIndex((end) => end <= left);
    if (row < 0) { row = rowsEnd.length; rowsEnd.push(0); }
    rowsEnd[row] = left + width;
    return { ...m, left, row, width };
  });
}

function drawTimeline(d) {
  const h = d.history;
  const samples = h.samples;
  const t0 = new Date(samples.length ? samples[0].time : h.since).getTime();
  const t1 = Math.max(new Date(d.now).getTime(), t0 + 1000);
  const plotW = W - LEFT - RIGHT;
  const x = (t) => LEFT + ((new Date(t).getTime() - t0) / (t1 - t0)) * plotW;
  const metricNames = h.thresholds.map((t) => t.metric);
  for (const s of samples) for (const m of s.metrics || []) if (!metricNames.includes(m.name)) metricNames.push(m.name);

  const panels = [{ title: "canary weight (%)", key: "weight", min: 0, max: 100, color: "#f08c00",
    value: (s) => s.weight, limits: [{ v: d.maxWeight, label: "max weight " + d.maxWeight }] }];
  for (const name of metricNames) {
    const th = h.thresholds.find((t) => t.metric === name) || {};
    const vals = [];
    for (const s of samples) for (const m of s.metrics || []) if (m.name === name && m.value !== null) vals.push(m.value);
    const limits = [];
    if (th.min !== undefined) limits.push({ v: th.min, label: "min " + fmt(th.min) });
    if (th.max !== undefined) limits.push({ v: th.max, label: "max " + fmt(th.max) });
    const all = vals.concat(limits.map((l) => l.v));
    let lo = all.length ? Math.min(...all) : 0, hi = all.length ? Math.max(...all) : 1;
    const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1;
    const nonNegative = lo >= 0;
    lo -= pad; hi += pad;
    if (nonNegative) lo = Math.max(lo, 0);
    if (name === "request-success-rate") hi = Math.min(hi, 100);
    panels.push({ title: name + " (as the analysis measured it)", key: "metric:" + name, min: lo, max: hi, color: "#2b8a3e",
      value: (s) => { const m = (s.metrics || []).find((m) => m.name === name); return m ? m.value : null; },
      outcome: (s) => { const m = (s.metrics || []).find((m) => m.name === name); return m ? m.outcome : ""; },
      checked: (s) => { const m = (s.metrics || []).find((m) => m.name === name); return m ? m.checkTime : null; },
      limits });
  }
  panels.push({ title: "failed checks", key: "failedChecks", min: 0, max: Math.max(h.failedChecksThreshold, 1), color: "#c92a2a",
    value: (s) => s.failedChecks, limits: [{ v: h.failedChecksThreshold, label: "rollback at " + h.failedChecksThreshold }] });

  // Phase changes.
  const marks = [];
  samples.forEach((s, i) => {
    if (i === 0 || s.phase !== samples[i - 1].phase) marks.push({ t: s.time, label: s.phase, phase: s.phase });
  });
  const labels = phaseLabels(marks, x);
  const labelRows = labels.reduce((n, l) => Math.max(n, l.row + 1), 0);
  const panelsTop = TOP + labelRows * 14 + 24;
  const bottom = panelsTop + panels.length * (PANEL + GAP) - GAP;
  const height = bottom + 30;

  const s = svg("svg", { class: "timeline", id: "timeline", viewBox: "0 0 " + W + " " + height, "data-samples": samples.length });
  s.append(svg("text", { x: LEFT, y: 16, "font-size": 13, "font-weight": "bold" },
    "timeline since " + new Date(t0).toLocaleTimeString() + " (" + samples.length + " status changes seen)"));
  for (const l of labels) {
    s.append(svg("text", { x: l.left, y: TOP + l.row * 14 + 10, "font-size": 11, fill: "#495057", class: "phase-label", "data-phase": l.phase }, l.label));
    // The line starts under every row of labels, so it crosses none of them; the label
    // begins where its line is.
    s.append(svg("line", { x1: x(l.t), x2: x(l.t), y1: panelsTop - 20, y2: bottom, stroke: "#868e96", "stroke-dasharray": "2 3" }));
  }
  panels.forEach((p, i) => {
    const top = panelsTop + i * (PANEL + GAP);
    const y = (v) => top + PANEL - ((Math.max(p.min, Math.min(p.max, v)) - p.min) / (p.max - p.min)) * PANEL;
    const g = svg("g", { "data-panel": p.key });
    g.append(svg("text", { x: LEFT, y: top - 6, "font-weight": "bold", "font-size": 12 }, p.title));
    g.append(svg("rect", { x: LEFT, y: top, width: plotW, height: PANEL, fill: "none", stroke: "#adb5bd" }));
    g.append(svg("text", { x: LEFT - 6, y: top + 10, "text-anchor": "end", "font-size": 11 }, axis(p.max)));
    g.append(svg("text", { x: LEFT - 6, y: top + PANEL, "text-anchor": "end", "font-size": 11 }, axis(p.min)));
    for (const l of p.limits) {
      g.append(svg("line", { x1: LEFT, x2: LEFT + plotW, y1: y(l.v), y2: y(l.v), stroke: "#c92a2a", "stroke-dasharray": "6 4", class: "threshold" }));
      g.append(svg("text", { x: LEFT + plotW - 4, y: y(l.v) - 4, "text-anchor": "end", fill: "#c92a2a", "font-size": 11 }, l.label));
    }
    // A step line: each value holds until the next sample (or now).
    let pts = [];
    const flush = () => {
      if (pts.length > 1) g.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: p.color, "stroke-width": 2 }));
      pts = [];
    };
    samples.forEach((smp, j) => {
      const v = p.value(smp);
      if (v === null || v === undefined) {
        flush();
        // A check without a value (no data, a query error) is a mark on the axis.
        const o = p.outcome ? p.outcome(smp) : "";
        if ((o === "NoData" || o === "Error") && (j === 0 || p.checked(smp) !== p.checked(samples[j - 1]))) {
          const xs = x(smp.time), yb = top + PANEL;
          g.append(svg("path", { d: "M" + (xs - 4) + "," + yb + " L" + (xs + 4) + "," + yb + " L" + xs + "," + (yb - 7) + " Z",
            fill: o === "Error" ? "#c92a2a" : "#e67700", class: "no-value" }, undefined));
          g.lastChild.append(svg("title", {}, name + ": " + (o === "Error" ? "query error" : "no data")));
        }
        return;
      }
      const xs = x(smp.time);
      const xe = j + 1 < samples.length ? x(samples[j + 1].time) : x(d.now);
      pts.push(xs.toFixed(1) + "," + y(v).toFixed(1), xe.toFixed(1) + "," + y(v).toFixed(1));
      if (p.outcome && p.outcome(smp) === "Failed") {
        g.append(svg("circle", { cx: xs, cy: y(v), r: 3, fill: "#c92a2a" }));
      }
    });
    flush();
    s.append(g);
  });
  for (const frac of [0, 0.25, 0.5, 0.75, 1]) {
    s.append(svg("text", { x: LEFT + frac * plotW, y: height - 8, "text-anchor": "middle", "font-size": 11, fill: "#495057" },
      Math.round((frac * (t1 - t0)) / 1000) + "s"));
  }
  return s;
}

function renderDetail(d) {
  const main = document.getElementById("main");
  const facts = el("div", { class: "facts" },
    el("div", { id: "phase" }, el("span", {}, "phase"), phaseBadge(d.phase)),
    el("div", { id: "weight", "data-weight": d.weight }, el("span", {}, "weight"), weightBar(d.weight, 160), " " + (100 - d.weight) + "% primary / " + d.weight + "% canary"),
    el("div", { id: "failed-checks", "data-failed": d.failedChecks }, el("span", {}, "failed checks"), d.failedChecks + "/" + d.failedChecksThreshold),
    el("div", {}, el("span", {}, "revision"), d.revision || "-"),
    el("div", {}, el("span", {}, "stable revision"), d.stableRevision || "-"),
    el("div", {}, el("span", {}, "target"), "Deployment " + d.target));
  const metrics = el("table", { id: "metrics" },
    el("thead", {}, el("tr", {}, ...["Metric", "Last value", "Accepted", "Outcome", "Checked", "Message"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...d.metrics.map((m) => el("tr", { "data-metric": m.name },
      el("td", {}, m.name),
      el("td", { class: "num" }, fmt(m.value)),
      el("td", { class: "num" }, range(m)),
      el("td", { class: "outcome-" + (m.outcome || "none") }, m.outcome || "not checked yet"),
      el("td", { class: "num muted" }, m.checkTime ? age(m.checkTime, d.now) + " ago" : ""),
      el("td", { class: "message" }, m.message || "")))));
  const phases = el("table", { id: "phases" },
    el("thead", {}, el("tr", {}, ...["Time", "Phase", "Weight", "Message"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...d.history.samples
      .filter((s, i, all) => i === 0 || s.phase !== all[i - 1].phase)
      .map((s) => el("tr", {},
        el("td", { class: "num" }, new Date(s.time).toLocaleTimeString()),
        el("td", {}, phaseBadge(s.phase)),
        el("td", { class: "num" }, s.weight + "%"),
        el("td", { class: "message" }, s.message || "")))));
  main.replaceChildren(
    el("p", {}, el("a", { href: "/" }, "← all Canaries")),
    el("h1", {}, "Canary " + d.namespace + "/" + d.name),
    facts,
    el("p", { class: "message", id: "message" }, d.message || ""),
    el("h2", {}, "Timeline"),
    drawTimeline(d),
    el("h2", {}, "Metrics against their thresholds"),
    metrics,
    el("h2", {}, "Phase changes"),
    phases);
}

// ---------------------------------------------------------------- polling

async function tick() {
  const m = location.pathname.match(/^\/canaries\/([^/]+)\/([^/]+)$/);
  try {
    if (m) {
      const d = await getJSON("/api/canaries/" + m[1] + "/" + m[2]);
      document.title = "coalmine: " + d.namespace + "/" + d.name + " " + d.phase;
      renderDetail(d);
    } else {
      renderList(await getJSON("/api/canaries"));
    }
    setStatus("live, updated " + new Date().toLocaleTimeString(), false);
  } catch (e) {
    setStatus("cannot reach coalmine: " + e.message + " (retrying)", true);
  }
  setTimeout(tick, POLL_MS);
}

tick();
