// cdss dashboard: plain JavaScript, no external assets. The token lives in sessionStorage only.
// Every value from the server is inserted with textContent (never as HTML).
"use strict";

const TOKEN_KEY = "cdss.token";
const STATS_INTERVAL_MS = 5000;
let whoami = null;
let statsTimer = null;
let lastSignature = null;
const thumbs = new Map(); // job id -> object URL (each thumbnail is fetched, and audited, once)

const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function say(text, info = false) {
  const m = $("message");
  m.textContent = text || "";
  m.className = info ? "info" : "";
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: "Bearer " + token() });
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    signOut(false);
    throw new Error("the token was refused (401); sign in again");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return response;
}

async function json(path, options) { return (await api(path, options)).json(); }

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function emptyRow(tbody, columns, text) {
  const tr = document.createElement("tr");
  const td = cell(tr, text, "empty");
  td.colSpan = columns;
  tbody.appendChild(tr);
}

function time(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : ""; }

// ------------------------------------------------------------------ session
async function signIn(secret) {
  sessionStorage.setItem(TOKEN_KEY, secret);
  try {
    whoami = await json("/api/v1/auth/whoami");
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    say(e.message);
    return;
  }
  $("whoami-name").textContent = whoami.name;
  $("whoami-role").textContent = whoami.role;
  $("login").hidden = true;
  $("session").hidden = false;
  $("main").hidden = false;
  document.body.dataset.role = whoami.role;
  say("");
  await refreshStats();
  statsTimer = setInterval(refreshStats, STATS_INTERVAL_MS);
}

function signOut(tellServer = true) {
  if (tellServer && token()) {
    fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: "Bearer " + token() } });
  }
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(statsTimer);
  statsTimer = null;
  whoami = null;
  lastSignature = null;
  thumbs.forEach((url) => URL.revokeObjectURL(url));
  thumbs.clear();
  $("login").hidden = false;
  $("session").hidden = true;
  $("main").hidden = true;
  delete document.body.dataset.role;
}

// ------------------------------------------------------------------ queue (no patient data)
async function refreshStats() {
  let s;
  try {
    s = await json("/api/v1/stats");
  } catch (e) {
    say(e.message);
    return;
  }
  $("stat-received").textContent = s.received;
  $("stat-analysed").textContent = s.analysed;
  $("stat-delivered").textContent = s.delivered;
  $("stat-failed").textContent = s.failed;
  $("stat-queue-jobs").textContent = s.queue_depth.jobs;
  $("stat-running").textContent = s.jobs.running;
  $("stat-queue-deliveries").textContent = s.queue_depth.deliveries;
  $("stat-workers").textContent = s.workers ? `${s.workers.alive}/${s.workers.expected}` : "n/a";
  $("stats-updated").textContent = "updated " + time(s.generated_at);
  // Patient data (studies, failures) is re-read only when something changed: each read is audited.
  const signature = JSON.stringify([s.jobs, s.deliveries, s.received, s.results]);
  if (signature !== lastSignature) {
    lastSignature = signature;
    await Promise.all([refreshStudies(), refreshFailures()]);
  }
}

// ------------------------------------------------------------------ studies
function findingsText(study) {
  const parts = study.findings.map((f) => f.text || (f.state === "succeeded" ? "no findings recorded" : f.state));
  return parts.join(" · ");
}

async function thumbnail(jobId, td) {
  if (!thumbs.has(jobId)) {
    const response = await api(`/api/v1/jobs/${jobId}/overlay.png?size=160`);
    const blob = await response.blob();
    thumbs.set(jobId, URL.createObjectURL(blob));
    thumbs.set(jobId + ":overlay", response.headers.get("X-Overlay"));
  }
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = `job ${jobId}`;
  img.src = thumbs.get(jobId);
  td.appendChild(img);
  if (thumbs.get(jobId + ":overlay") !== "rendered") {
    const note = document.createElement("div");
    note.className = "placeholder";
    note.textContent = "no overlay (no results yet)";
    td.appendChild(note);
  }
}

async function refreshStudies() {
  const tbody = $("studies-table").querySelector("tbody");
  let page;
  try {
    page = await json("/api/v1/studies?limit=10");
  } catch (e) {
    say(e.message);
    return;
  }
  tbody.replaceChildren();
  if (page.items.length === 0) emptyRow(tbody, 7, "no studies yet");
  for (const study of page.items) {
    const tr = document.createElement("tr");
    tr.dataset.studyId = study.id;
    cell(tr, time(study.created_at));
    cell(tr, study.accession_number);
    cell(tr, study.patient_id);
    cell(tr, study.modalities.join(", "));
    const status = cell(tr, "");
    const badge = document.createElement("span");
    badge.className = "status " + study.status;
    badge.textContent = study.status;
    status.appendChild(badge);
    cell(tr, findingsText(study), "findings");
    const thumbCell = cell(tr, "");
    tbody.appendChild(tr);
    const job = study.findings.find((f) => f.state === "succeeded") || study.findings[0];
    if (job) {
      thumbnail(job.job_id, thumbCell).catch(() => {
        thumbCell.textContent = "image not available";
        thumbCell.className = "placeholder";
      });
    } else {
      thumbCell.textContent = "no analysis";
      thumbCell.className = "placeholder";
    }
  }
}

// ------------------------------------------------------------------ failures
function actionButton(label, handler) {
  const button = document.createElement("button");
  button.textContent = label;
  button.className = "act";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await handler();
      lastSignature = null;
      await refreshStats();
    } catch (e) {
      say(e.message);
      button.disabled = false;
    }
  });
  return button;
}

async function refreshFailures() {
  let jobs, deliveries;
  try {
    [jobs, deliveries] = await Promise.all([
      json("/api/v1/jobs?status=dead&limit=50"),
      json("/api/v1/deliveries?status=dead&limit=50"),
    ]);
  } catch (e) {
    say(e.message);
    return;
  }
  const admin = whoami && whoami.role === "admin";
  const jt = $("dead-jobs").querySelector("tbody");
  jt.replaceChildren();
  if (jobs.items.length === 0) emptyRow(jt, 6, "none");
  for (const job of jobs.items) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.id;
    cell(tr, job.id);
    cell(tr, job.accession_number);
    cell(tr, job.analysis || "–");
    cell(tr, `${job.attempts}/${job.max_attempts}`);
    cell(tr, job.last_error, "err");
    const td = cell(tr, "");
    if (admin) {
      td.appendChild(actionButton("Re-run", async () => {
        await json(`/api/v1/jobs/${job.id}/rerun`, { method: "POST" });
        say(`job ${job.id} queued again`, true);
      }));
    }
    jt.appendChild(tr);
  }
  const dt = $("dead-deliveries").querySelector("tbody");
  dt.replaceChildren();
  if (deliveries.items.length === 0) emptyRow(dt, 6, "none");
  for (const d of deliveries.items) {
    const tr = document.createElement("tr");
    tr.dataset.deliveryId = d.id;
    cell(tr, d.id);
    cell(tr, d.accession_number);
    cell(tr, d.kind);
    cell(tr, `${d.destination} (${d.ae_title}@${d.host}:${d.port})`);
    cell(tr, d.last_error, "err");
    const td = cell(tr, "");
    if (admin) {
      td.appendChild(actionButton("Retry", async () => {
        await json(`/api/v1/deliveries/${d.id}/retry`, { method: "POST" });
        say(`delivery ${d.id} queued again`, true);
      }));
    }
    dt.appendChild(tr);
  }
}

// ------------------------------------------------------------------ audit
async function searchAudit() {
  const params = new URLSearchParams({ limit: "50" });
  const add = (key, value) => { if (value) params.set(key, value); };
  add("event", $("audit-event").value);
  add("user", $("audit-user").value.trim());
  add("accession", $("audit-accession").value.trim());
  add("text", $("audit-text").value.trim());
  if ($("audit-failures").checked) params.set("failures_only", "true");
  let page;
  try {
    page = await json("/api/v1/audit/events?" + params.toString());
  } catch (e) {
    say(e.message);
    return;
  }
  const summary = $("audit-summary");
  summary.className = "";
  summary.textContent = `${page.items.length} of ${page.total} events (newest first)`;
  const tbody = $("audit-table").querySelector("tbody");
  tbody.replaceChildren();
  if (page.items.length === 0) emptyRow(tbody, 8, "no matching events");
  for (const e of page.items) {
    const tr = document.createElement("tr");
    tr.dataset.seq = e.seq;
    cell(tr, e.seq);
    cell(tr, time(e.occurred_at));
    cell(tr, `${e.event_id} ${e.event_name}${e.event_type ? " / " + e.event_type : ""}`);
    cell(tr, e.action);
    cell(tr, e.outcome, e.outcome ? "err" : "");
    cell(tr, e.user);
    cell(tr, e.source);
    cell(tr, e.description);
    tbody.appendChild(tr);
  }
}

async function verifyChain() {
  const summary = $("audit-summary");
  try {
    const r = await json("/api/v1/audit/verify");
    if (r.ok) {
      summary.className = "ok";
      summary.textContent = `chain OK: ${r.events} events, head ${r.head_seq}:${r.head_hash}`;
    } else {
      summary.className = "bad";
      summary.textContent = `chain BROKEN at seq ${r.problem.seq} (${r.problem.kind}): ${r.problem.message}`;
    }
  } catch (e) {
    say(e.message);
  }
}

// ------------------------------------------------------------------ wiring
document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const secret = $("token-input").value.trim();
    $("token-input").value = "";
    if (secret) signIn(secret);
  });
  $("logout-button").addEventListener("click", () => signOut(true));
  $("refresh-studies").addEventListener("click", () => { refreshStudies(); refreshFailures(); });
  $("audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchAudit(); });
  $("audit-verify").addEventListener("click", verifyChain);
  if (token()) signIn(token());
});
