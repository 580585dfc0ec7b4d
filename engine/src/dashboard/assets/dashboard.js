// The dashboard: one `update` event a second from /dashboard/events, drawn into the page.
// Every figure is also on /metrics; elements carry data-figure (and data-endpoint or data-flow)
// so that tests can read them.
"use strict";

const POINTS = 300; // five minutes of seconds per chart
const series = { t: [], rate: {}, errors: {}, p95: {} };
const charts = {};
let updates = 0;

function text(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return typeof value === "number" ? value.toFixed(digits === undefined ? 0 : digits) : String(value);
}

function cell(row, value, figure, endpoint, digits) {
  const td = document.createElement("td");
  td.textContent = text(value, digits);
  if (figure) td.dataset.figure = figure;
  if (endpoint !== undefined) td.dataset.endpoint = endpoint;
  row.appendChild(td);
  return td;
}

function setFigure(name, value, digits) {
  for (const el of document.querySelectorAll(`[data-figure="${name}"]`)) {
    el.textContent = text(value, digits);
    el.classList.toggle("bad", name === "dlq_size" && value > 0);
  }
}

function drawEndpoints(endpoints) {
  const body = document.getElementById("endpoints");
  body.replaceChildren();
  for (const e of endpoints) {
    const row = document.createElement("tr");
    cell(row, e.name, "endpoint", e.name);
    cell(row, e.rate, "rate", e.name, 2);
    const errors = cell(row, e.error_pct, "error_pct", e.name, 1);
    if (e.error_pct > 5) errors.classList.add("bad");
    cell(row, e.p50_ms, "p50_ms", e.name, 1);
    cell(row, e.p95_ms, "p95_ms", e.name, 1);
    cell(row, e.p99_ms, "p99_ms", e.name, 1);
    for (const cls of ["2xx", "4xx", "5xx"]) cell(row, e.requests_total[cls] || 0, `requests_${cls}`, e.name);
    body.appendChild(row);
  }
}

function drawFlows(flows) {
  const body = document.getElementById("flows");
  body.replaceChildren();
  for (const f of flows) {
    const row = document.createElement("tr");
    const totals = f.messages_total;
    const other = Object.entries(totals)
      .filter(([k]) => k !== "answered" && k !== "failed")
      .reduce((s, [, v]) => s + v, 0);
    for (const [value, figure] of [[f.flow, "flow"], [totals.answered || 0, "answered"], [totals.failed || 0, "failed"], [other, "other"]]) {
      const td = cell(row, value, `messages_${figure}`);
      td.dataset.flow = f.flow;
      if (figure === "failed" && value > 0) td.classList.add("bad");
    }
    body.appendChild(row);
  }
}

function drawAlerts(alerts) {
  const list = document.getElementById("alerts");
  list.replaceChildren();
  if (alerts === null) {
    list.innerHTML = '<li class="quiet">alert state unavailable (database)</li>';
    return;
  }
  if (alerts.length === 0) {
    list.innerHTML = '<li class="quiet">none firing</li>';
    return;
  }
  for (const a of alerts) {
    const li = document.createElement("li");
    li.className = a.state;
    li.dataset.alert = a.alert;
    li.textContent = `${a.alert}: ${a.state} since ${new Date(a.since * 1000).toLocaleTimeString()}`;
    list.appendChild(li);
  }
}

function chart(id, key, names) {
  const el = document.getElementById(id);
  const data = [series.t, ...names.map((n) => series[key][n])];
  if (!charts[id] || charts[id].series.length !== names.length + 1) {
    if (charts[id]) charts[id].destroy();
    const colors = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
    charts[id] = new uPlot({
      width: 380, height: 160,
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 1.5, spanGaps: true }))],
      axes: [{}, { size: 50 }],
      legend: { show: true },
    }, data, el);
  } else {
    charts[id].setData(data);
  }
}

function record(update) {
  const names = update.figures.endpoints.map((e) => e.name);
  series.t.push(update.figures.at);
  for (const key of ["rate", "errors", "p95"]) {
    for (const n of names) series[key][n] = series[key][n] || new Array(series.t.length - 1).fill(null);
  }
  for (const e of update.figures.endpoints) {
    series.rate[e.name].push(update.figures.span > 0 ? e.rate : null);
    series.errors[e.name].push(e.error_pct);
    series.p95[e.name].push(e.p95_ms);
  }
  for (const key of ["rate", "errors", "p95"]) {
    for (const n of Object.keys(series[key])) {
      const s = series[key][n];
      while (s.length < series.t.length) s.push(null);
    }
  }
  if (series.t.length > POINTS) {
    series.t.shift();
    for (const key of ["rate", "errors", "p95"]) for (const n of Object.keys(series[key])) series[key][n].shift();
  }
  if (typeof uPlot !== "undefined") {
    chart("chart-rate", "rate", names);
    chart("chart-errors", "errors", names);
    chart("chart-p95", "p95", names);
  }
}

function apply(update) {
  const f = update.figures;
  setFigure("config_version", update.config.version.slice(0, 12));
  document.getElementById("config-version").title = update.config.version;
  document.getElementById("config-loaded").textContent = new Date(update.config.loaded_at * 1000).toLocaleString();
  const reloads = update.config.reloads;
  setFigure("reloads_succeeded", reloads.succeeded);
  setFigure("reloads_rejected", reloads.rejected);
  const lastError = document.getElementById("last-error");
  lastError.hidden = !reloads.last_error;
  lastError.textContent = reloads.last_error ? `last rejected reload: ${reloads.last_error}` : "";
  const leader = document.getElementById("leader");
  leader.textContent = update.alerts_leader ? "evaluates alerts" : "not the alert leader";
  setFigure("dlq_size", f.dlq_size);
  setFigure("outbox_pending", f.outbox_pending);
  setFigure("sending_paused", f.sending_paused);
  document.getElementById("span").textContent = text(f.span, 0);
  drawEndpoints(f.endpoints);
  drawFlows(f.flows);
  drawAlerts(update.alerts);
  record(update);
  updates += 1;
  document.body.dataset.updates = String(updates);
}

function connect() {
  const status = document.getElementById("connection");
  const events = new EventSource("/dashboard/events");
  events.addEventListener("update", (e) => {
    status.textContent = "live";
    status.className = "badge live";
    apply(JSON.parse(e.data));
  });
  events.onerror = () => {
    status.textContent = "reconnecting…";
    status.className = "badge down";
  };
}

connect();
