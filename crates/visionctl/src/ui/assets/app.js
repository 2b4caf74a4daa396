// The web view of `visionctl ui` (docs/WEBVIEW.md). Vanilla JS, no
// dependencies. Every text from the cluster goes through textContent or
// attribute setters: never innerHTML.
"use strict";

const PHASES = ["Pending", "Queued", "Admitted", "Running", "Succeeded", "Failed", "Rejected", "Suspended"];
const PAGE = 50;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

// el("td", {class: "x", "data-testid": "y"}, "text", child, ...)
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function age(ms, now) {
  if (!ms) return "-";
  let s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 120) return m + "m";
  const h = Math.floor(m / 60);
  return h < 48 ? h + "h" : Math.floor(h / 24) + "d";
}

function duration(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return (ms / 60000).toFixed(1) + " min";
}

function ratio(used, max) {
  return max === null || max === undefined ? `${used}` : `${used}/${max}`;
}

function bar(used, max) {
  if (!max) return null;
  const pct = Math.min(100, Math.round((100 * used) / max));
  const b = el("div", { class: "bar" });
  const f = el("div", { class: pct >= 100 ? "fill full" : "fill" });
  f.style.width = pct + "%";
  b.append(f);
  return b;
}

// ---- state ----
let summary = null;
let lastJobsVersion = -1;
let listTimer = null;
let listInFlight = false;
const list = { offset: 0 };
let detailKey = null;
let detailFinal = false;
let detailTimer = null;

// ---- overview ----
function renderStatus(ok, text) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (ok ? "live" : "down");
  s.dataset.state = ok ? "live" : "down";
}

function renderSummary(msg) {
  summary = msg.summary;
  const h = msg.health;
  const synced = h.jobsSynced && h.queuesSynced && h.algorithmsSynced;
  renderStatus(true, synced ? `live · ${summary.jobs} jobs` : "loading…");
  document.body.dataset.synced = synced ? "true" : "false";
  document.body.dataset.version = String(summary.version);
  const note = $("note");
  note.hidden = !msg.namespaceNote;
  note.textContent = msg.namespaceNote || "";
  const errs = Object.entries(h.errors || {});
  $("errors").hidden = errs.length === 0;
  $("errors").replaceChildren(...errs.map(([w, e]) => el("div", {}, `watch of ${w}: ${e}`)));

  $("phases").replaceChildren(
    el("div", { class: "phase total", "data-testid": "total-jobs", "data-value": summary.jobs },
      el("b", {}, summary.jobs), el("span", {}, "jobs")),
    ...PHASES.map((p) => {
      const n = summary.jobsByPhase[p] || 0;
      return el("a", { class: "phase p-" + p, href: "#/", "data-testid": "total-" + p, "data-value": n,
        title: "show the " + p + " jobs", "data-phase": p }, el("b", {}, n), el("span", {}, p));
    }),
  );

  fill($("queues").tBodies[0], summary.queues.map((q) => {
    const reasons = Object.entries(q.waitingByReason);
    // The operator's head (the queue's status) with its reason word and
    // sentence; before the operator names one, the index's first waiting job.
    const head = q.head
      ? [el("b", {}, q.head), q.headWaitReason ? el("span", { class: "chip", "data-testid": "head-reason" }, q.headWaitReason) : null,
        q.headReason ? el("div", { class: "sub" }, q.headReason) : null]
      : q.firstWaiting
        ? [el("b", {}, `${q.firstWaiting.namespace}/${q.firstWaiting.name}`),
          el("span", { class: "chip", "data-testid": "head-reason" }, q.firstWaiting.reason)]
        : ["-"];
    return el("tr", { id: "queue-" + q.name, "data-testid": "queue-row", "data-queue": q.name },
      el("td", { "data-testid": "queue-name" }, q.name,
        q.paused ? el("span", { class: "tag" }, "paused") : null,
        q.exists ? null : el("span", { class: "tag warn", title: "jobs name it, but it does not exist or you may not read it" }, "unknown queue")),
      el("td", { "data-testid": "queue-slots", "data-value": q.slotsUsed, "data-max": q.maxRunning ?? "" },
        ratio(q.slotsUsed, q.maxRunning), bar(q.slotsUsed, q.maxRunning)),
      el("td", { "data-testid": "queue-gpus", "data-value": q.gpusUsed, "data-max": q.maxGpus ?? "" },
        ratio(q.gpusUsed, q.maxGpus), bar(q.gpusUsed, q.maxGpus)),
      el("td", { "data-testid": "queue-waiting", "data-value": q.waiting },
        ratio(q.waiting, q.maxPending)),
      el("td", { "data-testid": "queue-reasons" }, ...(reasons.length ? reasons.map(([r, n]) =>
        el("span", { class: "chip", "data-testid": "reason-" + r, "data-value": n }, `${r} ${n}`)) : ["-"])),
      el("td", { "data-testid": "queue-head", "data-head": q.head || "", title: "the queue's status (the operator's view)" }, ...head),
    );
  }));

  fill($("algorithms").tBodies[0], summary.algorithms.map((a) => {
    const breaker = a.hasBreaker ? (a.breaker || "Closed") : "none";
    return el("tr", { id: "algorithm-" + a.name, "data-testid": "algorithm-row", "data-algorithm": a.name },
      el("td", { "data-testid": "algorithm-name" }, a.name,
        a.exists ? null : el("span", { class: "tag warn", title: "jobs name it, but it does not exist or you may not read it" }, "unknown algorithm")),
      el("td", { "data-testid": "algorithm-running", "data-value": a.jobsRunning },
        ratio(a.jobsRunning, a.maxRunning)),
      el("td", { "data-testid": "algorithm-breaker", class: "breaker b-" + breaker }, breaker),
      el("td", { "data-testid": "algorithm-recent-failures" }, a.recentFailures ?? "-"),
      el("td", { "data-testid": "algorithm-failed", "data-value": a.jobsFailed }, a.jobsFailed),
    );
  }));

  drawThroughput(summary.series);
  drawWait(summary.series);
  updateChoices();

  if (summary.version !== lastJobsVersion) {
    lastJobsVersion = summary.version;
    if (!$("overview").hidden) scheduleList();
    if (!$("detail").hidden && detailKey && !detailFinal) scheduleDetail();
  }
}

function axes(g, maxY, fmt) {
  g.append(svg("line", { x1: 40, y1: 140, x2: 600, y2: 140, class: "axis" }));
  for (const f of [0.5, 1]) {
    const y = 140 - 130 * f;
    g.append(svg("line", { x1: 40, y1: y, x2: 600, y2: y, class: "grid" }));
    const t = svg("text", { x: 36, y: y + 4, class: "tick", "text-anchor": "end" });
    t.textContent = fmt(maxY * f);
    g.append(t);
  }
  const t0 = svg("text", { x: 40, y: 156, class: "tick" });
  t0.textContent = "-10 min";
  const t1 = svg("text", { x: 600, y: 156, class: "tick", "text-anchor": "end" });
  t1.textContent = "now";
  g.append(t0, t1);
}

function drawThroughput(s) {
  const box = $("chart-throughput");
  const n = s.succeeded.length;
  const tot = s.succeeded.map((v, i) => v + s.failed[i]);
  const maxY = Math.max(1, ...tot);
  const w = 560 / n;
  const nodes = [];
  const g = svg("g");
  axes(g, maxY, (v) => String(Math.round(v)));
  for (let i = 0; i < n; i++) {
    const hs = (130 * s.succeeded[i]) / maxY;
    const hf = (130 * s.failed[i]) / maxY;
    const x = 40 + i * w + 1;
    if (hs > 0) g.append(svg("rect", { x, y: 140 - hs, width: w - 2, height: hs, class: "ok" }));
    if (hf > 0) g.append(svg("rect", { x, y: 140 - hs - hf, width: w - 2, height: hf, class: "bad" }));
  }
  nodes.push(g);
  box.replaceChildren(...nodes);
  box.dataset.total = String(tot.reduce((a, b) => a + b, 0));
}

function drawWait(s) {
  const box = $("chart-wait");
  const n = s.waitMaxMs.length;
  const maxY = Math.max(1000, ...s.waitMaxMs.map((v) => v || 0));
  const w = 560 / n;
  const g = svg("g");
  axes(g, maxY, duration);
  const line = (vals, cls) => {
    let d = "";
    vals.forEach((v, i) => {
      if (v === null) return;
      const x = 40 + i * w + w / 2;
      const y = 140 - (130 * v) / maxY;
      d += (d && vals[i - 1] !== null ? " L" : " M") + x.toFixed(1) + " " + y.toFixed(1);
      g.append(svg("circle", { cx: x, cy: y, r: 2, class: cls }));
    });
    if (d) g.append(svg("path", { d: d.trim(), class: "line " + cls }));
  };
  line(s.waitMaxMs, "max");
  line(s.waitMeanMs, "mean");
  box.replaceChildren(g);
  box.dataset.admitted = String(s.admitted.reduce((a, b) => a + b, 0));
}

// ---- filters and the job list ----
let choicesKey = "";
function setOptions(select, values, first) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, first), ...values.map((v) => el("option", { value: v }, v)));
  select.value = values.includes(keep) ? keep : "";
}

async function updateChoices() {
  try {
    const r = await fetch("/api/choices");
    if (!r.ok) return;
    const c = await r.json();
    const key = JSON.stringify(c);
    if (key === choicesKey) return;
    choicesKey = key;
    setOptions($("f-queue"), c.queues, "any queue");
    setOptions($("f-algorithm"), c.algorithms, "any algorithm");
    setOptions($("f-namespace"), c.namespaces, "any namespace");
  } catch (_) { /* the next summary retries */ }
}

function filterParams() {
  const p = new URLSearchParams();
  const add = (k, v) => { if (v) p.set(k, v); };
  add("q", $("f-q").value.trim());
  add("phase", $("f-phase").value);
  add("queue", $("f-queue").value);
  add("algorithm", $("f-algorithm").value);
  add("namespace", $("f-namespace").value);
  p.set("offset", String(list.offset));
  p.set("limit", String(PAGE));
  return p;
}

// At most one refresh of the current page a second.
function scheduleList() {
  if (listTimer) return;
  listTimer = setTimeout(() => { listTimer = null; loadList(); }, 1000);
}

async function loadList() {
  if (listInFlight) { scheduleList(); return; }
  listInFlight = true;
  const params = filterParams();
  try {
    const r = await fetch("/api/jobs?" + params);
    const page = await r.json();
    if (params.toString() !== filterParams().toString()) return; // filters changed meanwhile
    const now = summary ? summary.nowMs : Date.now();
    fill($("jobs").tBodies[0], page.items.map((j) => el("tr", { "data-testid": "job-row", "data-phase": j.phase, "data-name": j.name },
      el("td", {}, j.namespace),
      el("td", {}, el("a", { href: "#/job/" + encodeURIComponent(j.namespace) + "/" + encodeURIComponent(j.name), "data-testid": "job-link" }, j.name)),
      el("td", { class: "p-" + j.phase, "data-testid": "job-phase" }, j.phase),
      el("td", {}, j.reason || ""),
      el("td", {}, j.queue),
      el("td", {}, j.algorithm),
      el("td", {}, j.priority),
      el("td", {}, j.attempts),
      el("td", {}, age(j.createdMs, now)),
    )));
    const from = page.total === 0 ? 0 : page.offset + 1;
    const to = page.offset + page.items.length;
    const range = $("jobs-range");
    range.textContent = `${from}–${to} of ${page.total}`;
    range.dataset.total = String(page.total);
    range.dataset.query = params.toString();
    $("prev").disabled = page.offset === 0;
    $("next").disabled = to >= page.total;
  } catch (e) {
    $("jobs-range").textContent = "cannot load the jobs: " + e;
  } finally {
    listInFlight = false;
  }
}

function filtersChanged() {
  list.offset = 0;
  loadList();
}

// ---- one job ----
function scheduleDetail() {
  if (detailTimer) return;
  detailTimer = setTimeout(() => { detailTimer = null; loadDetail(); }, 2000);
}

function kv(rows) {
  return rows.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => el("tr", { "data-key": k }, el("th", {}, k), el("td", { "data-testid": "status-" + k }, v)));
}

async function loadDetail() {
  if (!detailKey) return;
  const [ns, name] = detailKey;
  $("d-title").textContent = `${ns}/${name}`;
  let d;
  try {
    const r = await fetch("/api/jobs/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name));
    d = await r.json();
    if (!r.ok) throw new Error(d.error || r.statusText);
  } catch (e) {
    $("d-error").hidden = false;
    $("d-error").textContent = String(e.message || e);
    return;
  }
  if (!detailKey || detailKey[0] !== ns || detailKey[1] !== name) return;
  $("d-error").hidden = true;
  const job = d.job;
  const st = job.status || {};
  const spec = job.spec || {};
  detailFinal = ["Succeeded", "Failed", "Rejected"].includes(st.phase);
  document.body.dataset.detailLoaded = `${ns}/${name}`;
  fill($("d-status").tBodies[0], kv([
    ["phase", st.phase || "Pending"],
    ["reason", st.reason],
    ["message", st.message],
    ["queue", spec.queue],
    ["algorithm", spec.algorithm],
    ["priority", spec.priority],
    ["attempts", st.attempts],
    ["gpus", st.gpus],
    ["pod", st.podName],
    ["created", job.metadata.creationTimestamp],
    ["queued", st.queuedAt],
    ["admitted", st.admittedAt],
    ["started", st.startedAt],
    ["finished", st.finishedAt],
  ]));
  $("d-result").textContent = st.result === undefined ? "(no result)" : JSON.stringify(st.result, null, 2);
  fill($("d-conditions").tBodies[0], (st.conditions || []).map((c) => el("tr", { "data-testid": "condition-row", "data-type": c.type },
    el("td", {}, c.type), el("td", {}, c.status), el("td", {}, c.reason || ""),
    el("td", {}, c.message || ""), el("td", {}, c.lastTransitionTime || ""))));
  fill($("d-events").tBodies[0], d.events.map((e) => el("tr", { "data-testid": "event-row", "data-reason": e.reason },
    el("td", {}, e.type), el("td", {}, e.reason), el("td", {}, e.message), el("td", {}, e.count),
    el("td", {}, e.lastMs ? new Date(e.lastMs).toISOString() : ""), el("td", {}, e.source))));
  $("d-events-error").hidden = !d.eventsError;
  $("d-events-error").textContent = d.eventsError || "";
  const log = d.log || {};
  $("d-log-pod").textContent = log.pod ? `pod ${log.pod}${log.container ? ", container " + log.container : ""}` : "";
  const logBox = $("d-log");
  if (log.text !== undefined) {
    logBox.textContent = log.text === "" ? "(the log is empty)" : log.text;
    logBox.dataset.state = "text";
  } else {
    logBox.textContent = log.message || "";
    logBox.dataset.state = "message";
  }
}

// ---- routing and the stream ----
function route() {
  const m = location.hash.match(/^#\/job\/([^/]+)\/([^/]+)$/);
  if (m) {
    detailKey = [decodeURIComponent(m[1]), decodeURIComponent(m[2])];
    detailFinal = false;
    delete document.body.dataset.detailLoaded;
    $("overview").hidden = true;
    $("detail").hidden = false;
    for (const id of ["d-status", "d-conditions", "d-events"]) $(id).tBodies[0].replaceChildren();
    $("d-result").textContent = "";
    $("d-log").textContent = "";
    loadDetail();
  } else {
    detailKey = null;
    $("detail").hidden = true;
    $("overview").hidden = false;
    loadList();
  }
}

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("summary", (ev) => {
    try { renderSummary(JSON.parse(ev.data)); } catch (e) { renderStatus(false, "bad summary: " + e); }
  });
  es.onerror = () => renderStatus(false, "disconnected: reconnecting…");
}

function init() {
  setOptions($("f-phase"), PHASES, "any phase");
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  let typing = null;
  $("f-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(filtersChanged, 250); });
  for (const id of ["f-phase", "f-queue", "f-algorithm", "f-namespace"]) $(id).addEventListener("change", filtersChanged);
  $("prev").addEventListener("click", () => { list.offset = Math.max(0, list.offset - PAGE); loadList(); });
  $("next").addEventListener("click", () => { list.offset += PAGE; loadList(); });
  $("phases").addEventListener("click", (e) => {
    const a = e.target.closest("[data-phase]");
    if (!a) return;
    e.preventDefault();
    $("f-phase").value = a.dataset.phase;
    filtersChanged();
    $("jobs").scrollIntoView({ behavior: "smooth" });
  });
  window.addEventListener("hashchange", route);
  route();
  connect();
}

init();
