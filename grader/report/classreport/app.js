"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const SYMBOL = {passed: "\u2713", failed: "\u2717", error: "!", missing: "\u00b7"};
const $ = (tag, attrs, text) => { const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text; return e; };
const fmt = x => (Math.round(x * 100) / 100).toString();

document.getElementById("title").textContent = DATA.title + " (" + DATA.lab + "): class report";
const graded = DATA.students.filter(s => s.status === "graded").length;
const mean = DATA.students.length ? DATA.students.reduce((a, s) => a + (s.max ? s.score / s.max : 0), 0) / DATA.students.length : 0;
document.getElementById("summary").textContent = DATA.students.length + " students, " + DATA.checks.length +
  " checks; " + graded + " graded, " + (DATA.students.length - graded) + " not graded; mean score " + Math.round(mean * 100) + "%";

const gradable = s => s.status === "graded" || s.status === "start-failed";

function failRate(check) {
  // over the students whose program was graded: one that did not build or was empty says nothing of a check
  let ran = 0, bad = 0;
  for (const s of DATA.students.filter(gradable)) { const c = s.cells[check.id]; if (!c) continue; ran++; if (c.o !== "passed") bad++; }
  return {ran, bad, rate: ran ? bad / ran : 0};
}

function buildMatrix() {
  const table = document.getElementById("matrix");
  const head = $("tr");
  head.appendChild($("th", {class: "student"}, "student"));
  head.appendChild($("th", {}, "score"));
  for (const c of DATA.checks) { const th = $("th", {class: "check", title: c.title + " [" + c.category + ", " + c.points + " pts]"});
    th.appendChild($("div", {}, c.id)); head.appendChild(th); }
  table.appendChild(head);
  const rate = $("tr", {class: "rate"});
  rate.appendChild($("td", {class: "student"}, "failure rate"));
  rate.appendChild($("td"));
  for (const c of DATA.checks) { const r = failRate(c); rate.appendChild($("td", {title: r.bad + " of " + r.ran + " failed"}, Math.round(r.rate * 100) + "%")); }
  table.appendChild(rate);
  for (const s of DATA.students) {
    const tr = $("tr", {"data-student": s.name});
    tr.appendChild($("td", {class: "student"}, s.name));
    tr.appendChild($("td", {class: "score"}, fmt(s.score) + " / " + fmt(s.max)));
    if (!gradable(s)) {
      const td = $("td", {class: "notgraded", colspan: String(DATA.checks.length)});
      const b = $("button", {class: "cell failed", "data-student": s.name, "data-check": "", title: s.status}, SYMBOL.failed);
      b.addEventListener("click", () => showStatus(s, b));
      td.appendChild(b); td.appendChild(document.createTextNode(" not graded (" + s.status + "): " + s.status_message));
      tr.appendChild(td); table.appendChild(tr); continue;
    }
    for (const c of DATA.checks) {
      const cell = s.cells[c.id]; const o = cell ? cell.o : "missing"; const td = $("td");
      if (cell && o !== "passed") {
        const b = $("button", {class: "cell " + o, "data-student": s.name, "data-check": c.id, title: c.id + ": " + o}, SYMBOL[o] || "?");
        b.addEventListener("click", () => showCell(s, c, cell, b)); td.appendChild(b);
      } else { td.appendChild($("span", {class: "cell " + o, title: c.id + ": " + o}, SYMBOL[o] || "?")); }
      tr.appendChild(td);
    }
    table.appendChild(tr);
  }
}

function buildRates() {
  const table = document.getElementById("rates");
  const rows = DATA.checks.map(c => ({c, r: failRate(c)})).sort((a, b) => b.r.rate - a.r.rate || a.c.id.localeCompare(b.c.id));
  for (const {c, r} of rows) {
    const tr = $("tr"); tr.appendChild($("td", {}, c.id)); tr.appendChild($("td", {}, c.category));
    const box = $("div", {class: "barbox"}); box.appendChild($("div", {class: "bar", style: "width:" + Math.round(r.rate * 240) + "px"}));
    const td = $("td"); td.appendChild(box); tr.appendChild(td);
    tr.appendChild($("td", {}, r.bad + " of " + r.ran + " (" + Math.round(r.rate * 100) + "%)"));
    table.appendChild(tr);
  }
}

function select(button) {
  for (const b of document.querySelectorAll("button.cell.selected")) b.classList.remove("selected");
  button.classList.add("selected");
}

function showStatus(s, button) {
  select(button);
  const d = document.getElementById("detail"); d.hidden = false; d.replaceChildren();
  d.appendChild($("h3", {}, s.name + ": not graded (" + s.status + ")"));
  d.appendChild($("div", {class: "message"}, s.status_message));
  d.scrollIntoView({block: "nearest"});
}

function showCell(s, c, cell, button) {
  select(button);
  const d = document.getElementById("detail"); d.hidden = false; d.replaceChildren();
  d.appendChild($("h3", {}, s.name + " \u2014 " + c.id + ": " + c.title));
  d.appendChild($("p", {}, cell.o + " \u00b7 " + c.category + " \u00b7 " + c.points + " pts \u00b7 seed " + cell.seed + " (replay: grader check " + DATA.lab + " SUBMISSION --only " + c.id + " --seed " + cell.seed + ")"));
  d.appendChild($("div", {class: "message"}, cell.message));
  if (cell.hint) d.appendChild($("div", {class: "hint"}, "Hint: " + cell.hint));
  if (cell.events && cell.events.length) { d.appendChild($("h3", {style: "margin-top:14px"}, "The exchange")); d.appendChild(sequence(cell.events)); }
  if (cell.transcript) { const det = $("details"); det.appendChild($("summary", {}, "Transcript as text")); det.appendChild($("pre", {}, cell.transcript)); d.appendChild(det); }
  d.scrollIntoView({block: "nearest"});
}

const NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) { const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; }
const ENDED = /(FIN|RST|reset|closed|ended|refused|EPIPE|ECONNRESET|died|killed|exited)/i;

function sequence(events) {
  const W = 860, L = 150, R = 720, TOP = 44, STEP = 34;
  const H = TOP + events.length * STEP + 20;
  const root = svg("svg", {class: "seq", width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"});
  const defs = svg("defs");
  for (const [id, color] of [["arrow-sent", "#2f6fde"], ["arrow-received", "#1e7b3a"]]) {
    const m = svg("marker", {id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse"});
    m.appendChild(svg("path", {d: "M0,0 L10,5 L0,10 z", fill: color})); defs.appendChild(m);
  }
  root.appendChild(defs);
  for (const [x, name] of [[L, "grader"], [R, "submission"]]) {
    root.appendChild(svg("rect", {x: x - 55, y: 6, width: 110, height: 24, rx: 5, fill: "#1d2330"}));
    root.appendChild(svg("text", {x, y: 23, "text-anchor": "middle", fill: "#fff", class: "actor"}, name));
    root.appendChild(svg("line", {x1: x, y1: 30, x2: x, y2: H - 6, stroke: "#9aa1ae", "stroke-dasharray": "4 4"}));
  }
  events.forEach((ev, i) => {
    const y = TOP + i * STEP + 14;
    const g = svg("g", {class: "event " + ev.kind});
    g.appendChild(svg("text", {x: 6, y: y + 4, fill: "#6b7385"}, ev.at.toFixed(3) + "s" + (ev.label ? " [" + ev.label + "]" : "")));
    const short = ev.text.length > 70 ? ev.text.slice(0, 67) + "\u2026" : ev.text;
    if (ev.kind === "sent" || ev.kind === "received") {
      const sent = ev.kind === "sent"; const color = sent ? "#2f6fde" : "#1e7b3a";
      g.appendChild(svg("line", {x1: sent ? L : R, y1: y, x2: sent ? R - 2 : L + 2, y2: y, stroke: color, "stroke-width": 2, "marker-end": "url(#arrow-" + ev.kind + ")"}));
      g.appendChild(svg("text", {x: (L + R) / 2, y: y - 5, "text-anchor": "middle", fill: color}, ev.size + (ev.size === 1 ? " byte: " : " bytes: ") + short));
    } else {
      const end = ENDED.test(ev.text);
      const w = Math.min(R - L + 120, 20 + (short.length + (end ? 2 : 0)) * 7.4);
      g.appendChild(svg("rect", {x: (L + R) / 2 - w / 2, y: y - 12, width: w, height: 20, rx: 4, fill: end ? "#fbe0e0" : "#fff8d6", stroke: end ? "#d64545" : "#e0c65c"}));
      g.appendChild(svg("text", {x: (L + R) / 2, y: y + 2, "text-anchor": "middle", fill: end ? "#b42323" : "#5c4a00"}, (end ? "\u2715 " : "") + short));
    }
    g.appendChild(svg("title", {}, ev.kind + (ev.label ? " [" + ev.label + "]" : "") + " at " + ev.at + "s: " + ev.text));
    root.appendChild(g);
  });
  return root;
}

buildMatrix();
buildRates();
