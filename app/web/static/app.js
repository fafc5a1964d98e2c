// babelsearch page: search, audit and ingest views over the service's own JSON API (same origin only).
"use strict";
const RTL = new Set(["ar", "he", "fa", "ur", "yi", "ps", "sd", "ug", "dv"]);
const $ = (id) => document.getElementById(id);
const state = { view: "search", q: "", langs: [], ql: "", per: "", k: "10", mode: "calibrated" };
let languages = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value; else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function detailText(body, status) {
  const detail = body && (body.detail ?? (body.error && body.error.message));
  if (typeof detail === "string") return `${status}: ${detail}`;
  if (Array.isArray(detail)) return `${status}: ` + detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return `${status}: the service answered with an error`;
}

async function api(path, options = {}) {
  const init = { method: options.body === undefined ? "GET" : "POST", headers: { Accept: "application/json" } };
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  Object.assign(init.headers, options.headers || {});
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error(`network error: ${err.message}`);
  }
  const body = await response.json().catch(() => null);
  const ms = performance.now() - started;
  if (!response.ok) throw new Error(detailText(body, response.status));
  return { body, ms, at: performance.now() };
}

// --- URL state -----------------------------------------------------------------------------------------

function readUrl() {
  const p = new URLSearchParams(location.search);
  state.view = ["search", "audit", "ingest"].includes(p.get("view")) ? p.get("view") : "search";
  state.q = p.get("q") || "";
  state.langs = (p.get("langs") || "").split(",").filter(Boolean);
  state.ql = p.get("ql") || "";
  state.per = p.get("per") || "";
  state.k = p.get("k") || "10";
  state.mode = ["raw", "both"].includes(p.get("mode")) ? p.get("mode") : "calibrated";
}

function writeUrl() {
  const p = new URLSearchParams();
  if (state.view !== "search") p.set("view", state.view);
  if (state.q) p.set("q", state.q);
  if (state.langs.length) p.set("langs", state.langs.join(","));
  if (state.ql) p.set("ql", state.ql);
  if (state.per) p.set("per", state.per);
  if (state.k && state.k !== "10") p.set("k", state.k);
  if (state.mode !== "calibrated") p.set("mode", state.mode);
  const query = p.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

function syncForm() {
  $("q").value = state.q;
  $("per").value = state.per;
  $("k").value = state.k;
  ensureOption(state.ql);
  $("ql").value = state.ql;
  for (const radio of document.querySelectorAll("input[name=mode]")) radio.checked = radio.value === state.mode;
  for (const chip of document.querySelectorAll(".chip")) chip.setAttribute("aria-pressed", String(state.langs.includes(chip.dataset.lang)));
}

function readForm() {
  state.q = $("q").value.trim();
  state.per = $("per").value.trim();
  state.k = $("k").value.trim() || "10";
  state.ql = $("ql").value;
  state.mode = document.querySelector("input[name=mode]:checked").value;
}

// --- views ---------------------------------------------------------------------------------------------

function showView(view) {
  state.view = view;
  for (const tab of document.querySelectorAll(".tab")) {
    const active = tab.dataset.view === view;
    tab.setAttribute("aria-current", active ? "page" : "false");
    $(`view-${tab.dataset.view}`).hidden = !active;
  }
  showError("");
  writeUrl();
}

function ensureOption(code) {
  if (!code || [...$("ql").options].some((o) => o.value === code)) return;
  $("ql").append(el("option", { value: code, text: code }));
}

async function loadLanguages() {
  try {
    const { body } = await api("/languages");
    languages = Object.keys(body.languages).filter((code) => code && code !== "null");
    const chips = $("chips");
    chips.replaceChildren();
    for (const code of languages) {
      const chip = el("button", { type: "button", class: "chip", "data-lang": code, "aria-pressed": "false",
        text: `${code} (${body.languages[code]})` });
      chip.addEventListener("click", () => {
        state.langs = state.langs.includes(code) ? state.langs.filter((c) => c !== code) : [...state.langs, code];
        syncForm();
        if (state.q) search();
      });
      chips.append(chip);
      ensureOption(code);
    }
  } catch (err) {
    showError(`languages: ${err.message}`);
  }
}

// --- search --------------------------------------------------------------------------------------------

function request(calibration) {
  const body = { query: state.q, k: Number(state.k) };
  if (state.langs.length) body.languages = state.langs;
  if (state.per) body.per_language = Number(state.per);
  if (state.ql) body.query_language = state.ql;
  if (calibration) body.calibration = calibration;
  return api("/search", { body });
}

function renderHits(title, response, ms) {
  const list = el("ol", { class: "hits" });
  for (const hit of response.results) {
    const item = el("li", { class: "hit", lang: hit.language || null, dir: RTL.has(hit.language) ? "rtl" : "auto",
      "data-id": hit.id });
    item.append(
      el("div", { class: "meta", dir: "ltr" },
        el("span", { class: "rank", text: `#${hit.rank}` }),
        el("span", { class: "badge", text: hit.language || "?" }),
        el("span", { class: "score", text: `score ${hit.score.toFixed(3)}` }),
        el("span", { class: "id", text: hit.id })),
      el("p", { class: "text", text: hit.text }));
    list.append(item);
  }
  const cal = response.calibration;
  const info = `${response.results.length} results · ${ms.toFixed(0)} ms (server ${response.timing_ms.total} ms) · ` +
    `ranking: ${cal.method}${cal.note ? ` (${cal.note})` : ""}`;
  const column = el("section", { class: "column", "aria-label": title },
    el("h3", { text: title }), el("p", { class: "latency", text: info }));
  for (const warning of response.warnings || []) column.append(el("p", { class: "warning", text: warning }));
  if (!response.results.length) column.append(el("p", { text: "No results." }));
  column.append(list);
  return column;
}

let searchSeq = 0;
async function search() {
  writeUrl();
  if (!state.q) return;
  const seq = ++searchSeq;
  showError("");
  $("status").textContent = "Searching…";
  const modes = state.mode === "both" ? ["raw", "calibrated"] : [state.mode];
  try {
    const answers = await Promise.all(modes.map((m) => request(m === "raw" ? "none" : null)));
    if (seq !== searchSeq) return;
    const out = $("results");
    out.replaceChildren(...answers.map((a, i) => renderHits(modes[i] === "raw" ? "Raw (no calibration)" : "Calibrated", a.body, a.ms)));
    out.classList.toggle("side-by-side", modes.length > 1);
    const first = answers[0].body, det = first.language_detection;
    let status = `Query language: ${first.query_language || "unknown"}`;
    if (det) status += ` (detected, confidence ${det.confidence.toFixed(2)}; change it with “Query language”)`;
    $("status").textContent = status;
    ensureOption(first.query_language);
    const ql = $("ql").options[0];
    ql.textContent = det ? `auto-detect (${det.language || det.best_guess || "?"})` : "auto-detect";
    // First result painted, measured from the API's answer (the browser test reads it).
    const answered = Math.max(...answers.map((a) => a.at));
    requestAnimationFrame(() => setTimeout(() => { document.body.dataset.paintMs = (performance.now() - answered).toFixed(1); }));
  } catch (err) {
    if (seq !== searchSeq) return;
    $("status").textContent = "";
    $("results").replaceChildren();
    showError(err.message);
  }
}

// --- audit ---------------------------------------------------------------------------------------------

const fmt = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(2));

function heatColor(v) {
  if (v === null || v === undefined) return "";
  const light = 97 - Math.round(Math.max(0, Math.min(1, v)) * 62);
  return `hsl(210 70% ${light}%)`;
}

function heatmap(title, summary, langs) {
  // Rows: query language; columns: passage language; cell: share of that language in the queries' top-k.
  const table = el("table", { class: "heatmap" }, el("caption", { text: title }));
  const head = el("tr", {}, el("th", { scope: "col", text: "query \\ passage" }));
  for (const p of langs) head.append(el("th", { scope: "col", text: p }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const q of langs) {
    const row = el("tr", {}, el("th", { scope: "row", text: q }));
    const figures = (summary.per_language || {})[q] || {};
    const shares = figures.top_k_languages || null;  // full row when the service reports it
    for (const p of langs) {
      let v = shares ? shares[p] ?? 0 : (p === q ? figures.own_language_top_k_share : null);
      const cell = el("td", { class: "cell", text: fmt(v), title: `${q} queries: share of ${p} in top-${summary.k}` });
      const color = heatColor(v);
      if (color) { cell.style.backgroundColor = color; if (v > 0.6) cell.classList.add("dark"); }
      row.append(cell);
    }
    body.append(row);
  }
  table.append(body);
  return table;
}

function figuresTable(raw, cal, langs) {
  const table = el("table", { class: "figures" }, el("caption", { text: "Per query language, raw vs calibrated" }));
  const head = el("tr", {}, el("th", { scope: "col", text: "language" }));
  for (const name of ["rank distance raw", "rank distance calibrated", "same language first raw",
    "same language first calibrated", "mAP raw", "mAP calibrated"]) head.append(el("th", { scope: "col", text: name }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  const rows = [["all", raw, cal], ...langs.map((l) => [l, raw.per_language[l] || {}, cal.per_language[l] || {}])];
  for (const [name, r, c] of rows) {
    const first = (s) => (s.same_language_first && typeof s.same_language_first === "object" ? s.same_language_first.rate : s.same_language_first);
    body.append(el("tr", {}, el("th", { scope: "row", text: name }),
      el("td", { text: fmt(r.rank_distance) }), el("td", { text: fmt(c.rank_distance) }),
      el("td", { text: fmt(first(r)) }), el("td", { text: fmt(first(c)) }),
      el("td", { text: fmt(r.map) }), el("td", { text: fmt(c.map) })));
  }
  table.append(body);
  return table;
}

async function runAudit() {
  showError("");
  $("audit-status").textContent = "Running the audit…";
  try {
    const { body, ms } = await api("/audit", { body: {} });
    const compare = body.compare || {};
    const served = body.calibration ? body.calibration.method : "none";
    const raw = compare.none || body, cal = compare[served] || body;
    const langs = Object.keys(body.collection ? body.collection.languages : body.language_share || {}).sort();
    const partial = !Object.values(cal.per_language || {}).some((f) => f.top_k_languages);
    $("audit-out").replaceChildren(
      el("p", { text: `${body.n_queries} queries, top-${body.k}, calibrated = ${served} · ${ms.toFixed(0)} ms` }),
      el("div", { class: "side-by-side" }, heatmap("Raw: language share of the top-k", raw, langs),
        heatmap(`Calibrated (${served}): language share of the top-k`, cal, langs)),
      el("p", { class: "hint", text: partial ? "Off-diagonal cells (—) need per-language top-k shares, which this service version does not report; the diagonal is each language's share of its own queries' top-k." : "Each row sums to 1: where a language's queries find their top-k passages." }),
      figuresTable(raw, cal, langs));
    $("audit-status").textContent = "Audit done.";
  } catch (err) {
    $("audit-status").textContent = "";
    showError(err.message);
  }
}

// --- ingest --------------------------------------------------------------------------------------------

async function ingest(event) {
  event.preventDefault();
  showError("");
  const status = $("ingest-status");
  const file = $("file").files[0];
  const text = file ? await file.text() : $("jsonl").value;
  const docs = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    try { docs.push(JSON.parse(lines[i])); } catch (err) { showError(`line ${i + 1}: not JSON (${err.message})`); return; }
  }
  if (!docs.length) { showError("no documents: paste one JSON object per line"); return; }
  status.textContent = `Sending ${docs.length} documents…`;
  try {
    const { body, ms } = await api("/documents", { body: docs, headers: { Authorization: `Bearer ${$("key").value}` } });
    status.textContent = `Added ${body.added}, replaced ${body.replaced} (${ms.toFixed(0)} ms); the collection has ${body.documents} documents.`;
    loadLanguages();
  } catch (err) {
    status.textContent = "";
    showError(err.message);
  }
}

// --- start ---------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  readUrl();
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); readForm(); search(); });
  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", () => { readForm(); search(); });
  $("ql").addEventListener("change", () => { readForm(); search(); });
  $("run-audit").addEventListener("click", runAudit);
  $("ingest-form").addEventListener("submit", ingest);
  showView(state.view);
  await loadLanguages();
  syncForm();
  document.body.dataset.ready = "true";
  if (state.q) search();
});
