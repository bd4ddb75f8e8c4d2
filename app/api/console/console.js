// L104 Node console: reads /self/status every few seconds and runs heals, with the admin
// token from sessionStorage sent as a bearer token (no cookie, no session, no CSRF surface).
// Everything is built with textContent: nothing from the node is ever parsed as HTML.
"use strict";

const REFRESH_MS = 3000;
const TOKEN_KEY = "l104.admin_token";
let timer = null;

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  const s = Number(value);
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function clock(unix) {
  if (!unix) return "-";
  return new Date(unix * 1000).toLocaleTimeString();
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function signedIn(yes) {
  $("sign-in").hidden = yes;
  $("sign-out").hidden = !yes;
  if (!yes) {
    $("data").hidden = true;
    $("summary").textContent = "not signed in";
  }
}

async function call(path, options) {
  const headers = { Authorization: `Bearer ${token()}` };
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  return { status: response.status, body };
}

function refusal(result) {
  const message = result.body && result.body.error ? result.body.error.message : "";
  if (result.status === 403) return `Admin is off on this node: ${message}`;
  if (result.status === 401) return "Wrong admin token: the node refused it.";
  return `The node answered ${result.status}. ${message}`;
}

async function refresh() {
  if (!token()) return;
  let result;
  try {
    result = await call("/self/status");
  } catch (error) {
    showError(`The node does not answer: ${error}`);
    return;
  }
  if (result.status !== 200) {
    stop();
    sessionStorage.removeItem(TOKEN_KEY);
    signedIn(false);
    showError(refusal(result));
    return;
  }
  showError("");
  render(result.body);
}

function render(status) {
  $("data").hidden = false;
  $("summary").textContent =
    `${status.mode === "simulator" ? "SIMULATOR mode" : "live"} · version ${status.version}` +
    ` · up ${seconds(status.uptime_seconds)} · state ${status.state_backend}` +
    (status.circuit_open ? " · EVERY BREAKER OPEN" : "");
  renderModels(status.models);
  renderWorkers(status.workers, status.rate_limit);
  renderHedges(status.hedges);
  renderClients(status.clients || {});
  renderButtons(status.heal_levels || [], status.heal_actions || []);
  renderList("heals", status.heals, (h) =>
    `${clock(h.at)} ${h.level} by ${h.trigger}: ${(h.actions || []).join(", ") || "-"}`);
  renderList("events", status.events, (e) => {
    const detail = ["model", "key", "reason", "level", "trigger", "to_model", "from_state"]
      .filter((k) => e[k] !== undefined && e[k] !== null)
      .map((k) => `${k}=${e[k]}`).join(" ");
    return `${clock(e.at)} ${e.event} ${detail} (pid ${e.pid})`;
  });
}

function renderModels(models) {
  const body = $("models").tBodies[0];
  body.replaceChildren();
  for (const [name, m] of Object.entries(models)) {
    const row = el("tr");
    row.dataset.model = name;
    row.append(el("td", name));
    row.append(el("td", m.circuit_state, `state-${m.circuit_state}`));
    row.append(el("td", m.failures));
    row.append(el("td", clock(m.opened_at)));
    row.append(el("td", m.circuit_state === "open" ? `in ${seconds(m.retry_after_seconds)}` : "-"));
    row.append(el("td", m.cooldown_seconds > 0 ? `${seconds(m.cooldown_seconds)} (${m.cooldown_reason})` : "-"));
    row.append(el("td", m.recent ? m.recent.calls : 0));
    row.append(el("td", m.recent ? m.recent.errors : 0));
    const keys = Object.entries(m.keys || {}).map(([id, k]) => `${id}: ${k.state}`).join(", ");
    row.append(el("td", keys, "keys"));
    body.append(row);
  }
}

function renderWorkers(workers, rateLimit) {
  const body = $("workers").tBodies[0];
  body.replaceChildren();
  for (const w of workers) {
    const row = el("tr");
    row.append(el("td", w.pid));
    row.append(el("td", seconds(w.age_seconds)));
    row.append(el("td", w.requests));
    row.append(el("td", w.in_flight));
    row.append(el("td", `${w.rss_mb} MB`));
    const b = w.retry_budget;
    row.append(el("td", b ? `${b.extra_attempts} of ${b.extra_allowed} extra / ${b.window_seconds} s` : "-"));
    const h = w.hedge_budget;
    row.append(el("td", h ? `${h.extra_attempts} of ${h.extra_allowed} / ${h.window_seconds} s` : "-"));
    row.append(el("td", w.pending_recycle
      ? `pending (${w.pending_recycle}) from ${clock(w.recycle_waits_until)}` : "-"));
    body.append(row);
  }
  $("limits").textContent = rateLimit && rateLimit.limit
    ? `Rate limit ${rateLimit.limit}: ${rateLimit.refused} refused so far.`
    : "No rate limit (RATE_LIMIT is unset).";
}

function renderClients(clients) {
  const body = $("clients").tBodies[0];
  body.replaceChildren();
  const used = (c, name) => {
    const w = c.windows[name];
    return w ? `${w.used} of ${w.limit} (reset in ${seconds(w.reset_seconds)})` : "-";
  };
  for (const [id, c] of Object.entries(clients)) {
    const row = el("tr");
    row.dataset.client = id;
    row.append(el("td", id));
    row.append(el("td", c.models ? c.models.join(", ") : "all"));
    row.append(el("td", c.limits.max_in_flight ? `${c.in_flight} of ${c.limits.max_in_flight}` : c.in_flight));
    row.append(el("td", used(c, "requests_per_minute")));
    row.append(el("td", used(c, "tokens_per_minute")));
    row.append(el("td", used(c, "tokens_per_day")));
    body.append(row);
  }
  $("clients-note").textContent = Object.keys(clients).length
    ? "" : "No clients: the node is open to anyone (CLIENTS_FILE and NODE_API_KEYS unset).";
}

function renderHedges(hedges) {
  if (!hedges || !hedges.enabled) {
    $("hedges").textContent = "Hedging is off (HEDGE_ENABLED, HEDGE_MAX).";
    return;
  }
  const outcomes = Object.entries(hedges.outcomes).map(([k, n]) => `${k} ${n}`).join(", ");
  const delays = Object.entries(hedges.delays).map(([model, kinds]) =>
    `${model} ${Object.entries(kinds).map(([k, d]) => `${k} ${d === null ? "-" : seconds(d)}`).join(" ")}`
  ).join("; ");
  $("hedges").textContent = `Hedges: ${outcomes || "none yet"}. Stalled attempts: ${hedges.stalls}.` +
    (delays ? ` Hedge delays: ${delays}.` : "");
}

function renderList(id, items, line) {
  const list = $(id);
  list.replaceChildren(...(items || []).map((item) => el("li", line(item))));
  if (!items || !items.length) list.replaceChildren(el("li", "none yet", "muted"));
}

let buttonsShown = false;
function renderButtons(levels, actions) {
  if (buttonsShown) return;
  buttonsShown = true;
  for (const level of levels) {
    const button = el("button", `Heal: ${level}`);
    button.type = "button";
    button.dataset.query = `level=${encodeURIComponent(level)}`;
    button.addEventListener("click", () => heal(button.dataset.query, button.textContent));
    $("levels").append(button);
  }
  for (const action of actions) {
    if (action === "recycle_workers") continue; // its own button, with a confirmation
    const button = el("button", action.replaceAll("_", " "));
    button.type = "button";
    button.dataset.query = `${encodeURIComponent(action)}=true`;
    button.addEventListener("click", () => heal(button.dataset.query, button.textContent));
    $("actions").append(button);
  }
}

async function heal(query, label) {
  const out = $("heal-result");
  out.textContent = `${label}…`;
  const result = await call(`/self/heal?${query}`, { method: "POST" });
  if (result.status !== 200) {
    out.textContent = refusal(result);
    return;
  }
  const pending = Object.entries(result.body.pending || {})
    .map(([action, what]) => `${action}: ${what}`).join("; ");
  out.textContent = `${label}: done (${(result.body.actions || []).join(", ")})` +
    (pending ? `; pending: ${pending}` : "");
  refresh();
}

function confirmRecycle(show) {
  $("recycle").hidden = show;
  $("recycle-confirm").hidden = !show;
  $("recycle-cancel").hidden = !show;
}

function start() {
  stop();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function stop() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    signedIn(true);
    start();
  });
  $("sign-out").addEventListener("click", () => {
    stop();
    sessionStorage.removeItem(TOKEN_KEY);
    signedIn(false);
  });
  $("recycle").addEventListener("click", () => confirmRecycle(true));
  $("recycle-cancel").addEventListener("click", () => confirmRecycle(false));
  $("recycle-confirm").addEventListener("click", () => {
    confirmRecycle(false);
    heal("recycle_workers=true", "Recycle workers");
  });
  if (token()) {
    signedIn(true);
    start();
  } else {
    signedIn(false);
    adminEnabled();
  }
});

// Before asking for a token: is ADMIN_TOKEN set at all?
async function adminEnabled() {
  const response = await fetch("/self/console/config", { cache: "no-store" });
  const config = await response.json();
  if (!config.admin_enabled) {
    $("sign-in").hidden = true;
    showError("Admin is off on this node: ADMIN_TOKEN is not set, so there is nothing to show.");
  }
}
