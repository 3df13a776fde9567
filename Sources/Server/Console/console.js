// YOLOSwap console: standards-only JavaScript, no framework, no build step. Everything it shows comes from the
// service's own API (openapi.yaml); everything it does goes through the same calls, with the operator's token as a
// Bearer header. Text from the server is always set with textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "yoloswap.token";
const STAGES = ["queued", "verifying", "loading", "validating", "warming", "ready"];
const STATS_WINDOW = 120;
const TIMELINE_LIMIT = 200;

const state = {
  token: null,
  principal: null,        // {name, role} once signed in
  slots: [],
  repository: [],
  events: [],             // newest first: {id?, event}
  seenEvents: new Set(),
  lastEventId: null,
  stream: null,           // AbortController of the event stream
  timers: [],
  cards: new Map(),       // slot name -> card elements
  streamRows: new Map(),  // stream id -> its table row's elements
  releaseCards: new Map(), // slot name -> its release card's elements
  preview: null,          // the stream preview shown: {id, controller, url}
  session: 0,             // bumped at each sign-in and sign-out: answers to an earlier session's calls are dropped
};

/// Whether the session that made a call is still the current one (nothing of a signed-out session is shown).
const current = (session) => session === state.session && state.token !== null;

const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const canAct = () => state.principal !== null && state.principal.role !== "viewer";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

// MARK: API

/// One call; resolves to {status, body} (body: parsed JSON, or null). Never throws for an HTTP status.
async function api(method, path, {json, body, contentType, token = state.token} = {}) {
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
  let payload = body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  } else if (contentType) {
    headers["Content-Type"] = contentType;
  }
  let response;
  try {
    response = await fetch(path, {method, headers, body: payload, cache: "no-store"});
  } catch (error) {
    return {status: 0, body: {detail: "the service cannot be reached (" + error.message + ")"}};
  }
  let parsed = null;
  const text = await response.text();
  if (text) {
    try { parsed = JSON.parse(text); } catch { parsed = {detail: text}; }
  }
  return {status: response.status, body: parsed};
}

const problem = (result) => (result.body && (result.body.detail || result.body.title)) || "HTTP " + result.status;

// MARK: Signing in

// Counts sign-ins: only the latest one's answer counts (a double click, or Enter while the stored token's sign-in
// still waits, would otherwise start two sessions, the first one's event stream beyond sign-out's reach).
let signInAttempt = 0;

async function signIn(token, {fromStorage = false} = {}) {
  const attempt = ++signInAttempt;
  const result = await api("GET", "/v1/whoami", {token});
  if (attempt !== signInAttempt) return false;
  if (result.status !== 200) {
    // Only a refused token is forgotten: a server restarting (503, no answer) keeps the tab's session.
    if (result.status === 401 || result.status === 403) sessionStorage.removeItem(TOKEN_KEY);
    const why = result.status === 401
      ? "The token was not accepted: " + problem(result) + ". Check it and sign in again."
      : result.status === 0 || result.status >= 500
      ? "The service cannot be reached (" + problem(result) + "); your token is kept: sign in again once it is back."
      : "Cannot sign in: " + problem(result);
    showMessage(fromStorage && result.status === 401 ? "Your session has ended. " + why : why);
    signedOut();
    return false;
  }
  state.token = token;
  state.principal = result.body;
  sessionStorage.setItem(TOKEN_KEY, token);
  showMessage("");
  $("token").value = "";
  $("token").hidden = true;
  $("sign-in-button").hidden = true;
  $("sign-out-button").hidden = false;
  $("who").textContent = "signed in as " + state.principal.name + " (" + state.principal.role + ")"
    + (canAct() ? "" : " — read only");
  $("slots-hint").textContent = canAct() ? "" : "Viewers see the slots but cannot change them.";
  await start();
  return true;
}

function signedOut() {
  stop();
  state.token = null;
  state.principal = null;
  $("token").hidden = false;
  $("sign-in-button").hidden = false;
  $("sign-out-button").hidden = true;
  $("who").textContent = "";
  $("slots-hint").textContent = "Sign in with a token to see the slots. Anyone may try an image where the service "
    + "allows anonymous detection.";
  $("slots").replaceChildren();
  state.cards.clear();
  $("timeline").replaceChildren();
  $("stats").replaceChildren();
  $("audit").tBodies[0].replaceChildren();
  setBadge($("audit-state"), "unknown", "");
  setBadge($("connection"), "offline", "offline");
  $("stream-state").textContent = "not connected";
  $("releases-panel").hidden = true;
  $("releases").replaceChildren();
  state.releaseCards.clear();
  $("streams-panel").hidden = true;
  $("streams").tBodies[0].replaceChildren();
  state.streamRows.clear();
  updateControls();
}

function setBadge(node, stateName, text) {
  node.dataset.state = stateName;
  node.textContent = text;
}

// MARK: Lifecycle

async function start() {
  stop();
  const session = state.session;
  await Promise.all([refreshSlots(), refreshRepository()]);
  await loadTimeline();
  // Signed out, or signed in again, meanwhile: that session's timers and stream are the ones to run.
  if (!current(session)) return;
  refreshAudit();
  refreshStats();
  probeOptionalPanels();
  state.timers.push(setInterval(ticking(refreshStats), 2000));
  state.timers.push(setInterval(ticking(refreshSlots), 5000));
  state.timers.push(setInterval(ticking(probeOptionalPanels), 10000));
  state.timers.push(setInterval(ticking(() => $("streams-panel").hidden ? null : refreshStreams()), 2000));
  state.timers.push(setInterval(ticking(() => $("releases-panel").hidden ? null : refreshReleases()), 2000));
  // The model list too: a model copied into the repository appears without signing in again.
  state.timers.push(setInterval(ticking(refreshRepository), 30000));
  runStream();
}

// A refresher for a timer: a tick is skipped while the page is hidden (another tab in front) and while the call the
// tick before made still waits — a slow server would otherwise get one more of the same request every tick, each
// holding one of the few connections a browser opens to a server.
function ticking(refresh) {
  let running = false;
  return async () => {
    if (running || document.hidden) return;
    running = true;
    try { await refresh(); } finally { running = false; }
  };
}

function stop() {
  state.session += 1;
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearTimeout(refreshPending);
  refreshPending = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.lastEventId = null;
  state.events = [];
  state.seenEvents.clear();
  closePreview();
}

// MARK: Event stream (server-sent events over fetch, so that the token goes in a header)

async function runStream() {
  const controller = new AbortController();
  if (state.stream) state.stream.abort();
  state.stream = controller;
  let retry = 2000;
  while (state.stream === controller) {
    const headers = {Authorization: "Bearer " + state.token};
    if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
    try {
      const response = await fetch("/v1/events/stream", {headers, signal: controller.signal, cache: "no-store"});
      if (response.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        signedOut();
        showMessage("Your token is no longer accepted; sign in again.");
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      setBadge($("connection"), "live", "live");
      $("stream-state").textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = parseMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (message.retry) retry = message.retry;
          if (message.id) state.lastEventId = message.id;
          if (message.event) handleMessage(message);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    if (state.stream !== controller) return;
    setBadge($("connection"), "offline", "reconnecting");
    $("stream-state").textContent = "reconnecting…";
    await sleep(retry);
  }
}

/// One server-sent message: {event, data, id, retry}; comment lines are ignored.
function parseMessage(block) {
  const message = {event: null, data: [], id: null, retry: null};
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") message.event = value;
    else if (field === "data") message.data.push(value);
    else if (field === "id") message.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) message.retry = Number(value);
  }
  if (message.data.length && !message.event) message.event = "message";
  message.data = message.data.join("\n");
  return message;
}

function handleMessage(message) {
  let data;
  try { data = JSON.parse(message.data); } catch { return; }
  if (message.event === "ready" && !data.resumed) {
    loadTimeline();  // missed events (or a restarted server): read the log afresh
  } else if (message.event === "swap") {
    addEvent(data, message.id, true);
    scheduleRefresh();
  } else if (message.event === "load") {
    // Progress of a load, whoever started it; this page's own loads show theirs as they poll.
    const card = state.cards.get(data.slot);
    if (card && !card.busy) {
      showStages(card, data.state, data.reason);
      setStatus(card, "loading " + data.model + ": " + data.state, data.state === "failed" ? "error" : "info");
    }
  }
}

let refreshPending = null;
function scheduleRefresh() {
  if (refreshPending) return;
  refreshPending = setTimeout(() => {
    refreshPending = null;
    refreshSlots();
    refreshAudit();
    refreshReleases();
  }, 150);
}

// MARK: Timeline

const eventKey = (e) => [e.time, e.slot, e.operation, e.result, e.generation, e.operation_id].join("|");

async function loadTimeline() {
  const session = state.session;
  if (!current(session)) return;
  const result = await api("GET", "/v1/events?limit=" + TIMELINE_LIMIT);
  if (!current(session) || result.status !== 200) return;
  // Oldest first, so that the newest ends on top.
  for (const event of result.body.events.slice().reverse()) addEvent(event, null, false);
}

function describeModel(model) {
  if (!model) return null;
  return model.id + (model.sha256 ? " (" + model.sha256.slice(0, 12) + ")" : "");
}

function addEvent(event, id, fresh) {
  const key = eventKey(event);
  if (state.seenEvents.has(key)) return;
  state.seenEvents.add(key);
  state.events.unshift({id, event, key});
  // The keys go with the events they stand for: a dashboard left open for months keeps TIMELINE_LIMIT of each.
  if (state.events.length > TIMELINE_LIMIT) state.seenEvents.delete(state.events.pop().key);
  const from = describeModel(event.from);
  const to = describeModel(event.to);
  const change = from && to ? from + " → " + to : (to || from || "");
  const time = new Date(event.time);
  const item = el("li", {
    dataset: {id: id || "", slot: event.slot, operation: event.operation, result: event.result},
    class: fresh ? "fresh" : null,
  },
  el("time", {datetime: event.time}, time.toLocaleTimeString()),
  el("strong", {}, event.slot), " · ", event.operation, " · ", event.result,
  change ? " · " + change : "",
  event.generation !== undefined && event.generation !== null ? " · generation " + event.generation : "",
  event.timings && event.timings.total_ms !== undefined ? " · " + event.timings.total_ms.toFixed(0) + " ms" : "",
  event.reason ? el("div", {class: "hint"}, event.reason) : null);
  const list = $("timeline");
  // Newest first, by time (a replayed or loaded event may be older than what is shown).
  const before = Array.from(list.children).find((li) => {
    const shown = li.querySelector("time");
    return shown && new Date(shown.getAttribute("datetime")) < time;
  });
  list.insertBefore(item, before || null);
  while (list.children.length > TIMELINE_LIMIT) list.lastElementChild.remove();
}

// MARK: Slots

async function refreshSlots() {
  const session = state.session;
  if (!current(session)) return;
  const result = await api("GET", "/v1/slots");
  if (!current(session)) return;
  if (result.status !== 200) {
    $("slots-hint").textContent = "Slots: " + problem(result);
    return;
  }
  state.slots = result.body.slots;
  const container = $("slots");
  for (const slot of state.slots) renderSlot(container, slot);
  for (const [name, card] of state.cards) {
    if (!state.slots.some((s) => s.name === name)) { card.root.remove(); state.cards.delete(name); }
  }
  for (const select of [$("try-slot"), $("stream-slot")]) {
    const chosen = select.value;
    select.replaceChildren(...state.slots.map((s) => el("option", {value: s.name}, s.name)));
    if (state.slots.some((s) => s.name === chosen)) select.value = chosen;
  }
  updateControls();
}

function slotCard(container, name) {
  let card = state.cards.get(name);
  if (card) return card;
  const root = $("slot-template").content.firstElementChild.cloneNode(true);
  root.dataset.slot = name;
  card = {
    root,
    name: root.querySelector(".slot-name"),
    generation: root.querySelector(".generation"),
    roles: root.querySelector(".roles tbody"),
    switch: root.querySelector(".switch"),
    rollback: root.querySelector(".rollback"),
    discard: root.querySelector(".discard"),
    load: root.querySelector(".load"),
    model: root.querySelector(".load-model"),
    activate: root.querySelector(".load-activate"),
    stages: root.querySelector(".stages"),
    status: root.querySelector(".slot-status"),
    busy: false,
    slot: null,
  };
  card.name.textContent = name;
  card.switch.addEventListener("click", () => act(card, "POST", "switch", "switched"));
  card.rollback.addEventListener("click", () => act(card, "POST", "rollback", "rolled back"));
  card.discard.addEventListener("click", () => act(card, "DELETE", "staged", "staged model discarded"));
  card.load.addEventListener("submit", (event) => { event.preventDefault(); load(card); });
  fillRepository(card);
  container.append(root);
  state.cards.set(name, card);
  return card;
}

function renderSlot(container, slot) {
  const card = slotCard(container, slot.name);
  card.slot = slot;
  card.generation.textContent = "generation " + slot.generation;
  const rows = ["active", "staged", "standby"].map((role) => {
    const model = slot[role];
    if (!model) return el("tr", {dataset: {role}}, el("td", {}, role), el("td", {colspan: "5", class: "hint"}, "—"));
    return el("tr", {dataset: {role, sha256: model.sha256}},
      el("td", {}, role),
      el("td", {title: model.path}, model.id.split("@")[0]),
      el("td", {class: "mono"}, model.version),
      el("td", {class: "mono", title: model.sha256}, model.sha256.slice(0, 12)),
      el("td", {}, (model.memory_bytes / 1048576).toFixed(1) + " MiB"),
      el("td", {}, model.provider + (model.device && model.device !== "host" ? " (" + model.device + ")" : "")));
  });
  card.roles.replaceChildren(...rows);
  if (slot.operation && !card.busy) {
    const op = slot.operation;
    showStages(card, op.state, op.reason);
    if (!card.status.textContent || card.status.dataset.last === "yes") {
      setStatus(card, "last load: " + op.model + " " + op.state, op.state === "failed" ? "error" : "info");
      card.status.dataset.last = "yes";
    }
  }
}

function fillRepository(card) {
  const chosen = card.model.value;
  card.model.replaceChildren(...state.repository.map((m) =>
    el("option", {value: m.path}, m.path + (m.signed ? " (signed)" : ""))));
  if (state.repository.some((m) => m.path === chosen)) card.model.value = chosen;
}

async function refreshRepository() {
  const session = state.session;
  if (!current(session)) return;
  const result = await api("GET", "/v1/repository");
  if (!current(session) || result.status !== 200) return;
  // Unchanged: the lists are left alone (refilled, an open one would close under the user's pointer).
  if (JSON.stringify(result.body.models) === JSON.stringify(state.repository)) return;
  state.repository = result.body.models;
  for (const card of state.cards.values()) fillRepository(card);
  updateControls();
}

/// Operator controls are enabled only for an operator, and only where the action applies.
function updateControls() {
  const operator = canAct();
  for (const card of state.cards.values()) {
    const slot = card.slot || {};
    card.switch.disabled = !operator || card.busy || !slot.staged;
    card.rollback.disabled = !operator || card.busy || !slot.standby;
    card.discard.disabled = !operator || card.busy || !slot.staged;
    for (const control of card.load.querySelectorAll(".op-control")) {
      control.disabled = !operator || card.busy || state.repository.length === 0;
    }
    card.root.querySelectorAll(".op-control").forEach((c) => {
      c.title = operator ? "" : "Needs an operator token";
    });
  }
  for (const card of state.releaseCards.values()) {
    const phase = card.release ? card.release.phase : "";
    const steerable = ["running", "paused"].includes(phase);
    card.toggle.textContent = phase === "paused" ? "Resume" : "Pause";
    card.toggle.disabled = !operator || card.busy || !steerable;
    card.promote.disabled = !operator || card.busy || !steerable;
    card.abort.disabled = !operator || card.busy || !(steerable || phase === "loading");
    for (const c of [card.toggle, card.promote, card.abort]) c.title = operator ? "" : "Needs an operator token";
  }
  $("streams-panel").querySelectorAll(".op-control").forEach((c) => {
    c.disabled = !operator;
    c.title = operator ? "" : "Needs an operator token";
  });
  if (startingStream) $("stream-start-button").disabled = true;
  for (const row of state.streamRows.values()) if (row.busy) row.stop.disabled = true;
}

function setStatus(card, text, kind = "info") {
  card.status.textContent = text;
  card.status.dataset.kind = kind;
  card.status.dataset.last = "no";
}

async function act(card, method, path, done) {
  card.busy = true;
  updateControls();
  const result = await api(method, "/v1/slots/" + encodeURIComponent(card.name.textContent) + "/" + path);
  card.busy = false;
  if (result.status === 200) setStatus(card, done + ": generation " + (result.body.generation ?? "?"));
  else setStatus(card, problem(result), "error");
  await refreshSlots();
}

// The load's stages: those passed done, the current one marked. A failed or cancelled load has no stage of its own
// (its state is the outcome): the stages before the last one shown for it are done, that one failed, none after it
// (not "ready"); with none shown before (a page opened after the load), none is marked done.
function showStages(card, stage, reason) {
  card.stages.hidden = false;
  const failed = stage === "failed" || stage === "cancelled";
  if (!failed) card.lastStage = stage;
  const upTo = failed ? (STAGES.includes(card.lastStage) && card.lastStage !== "ready" ? card.lastStage : null) : stage;
  let reached = upTo !== null;
  card.stages.replaceChildren(...STAGES.map((name) => {
    let itemState = "todo";
    if (name === upTo) { itemState = failed ? "failed" : "current"; reached = false; }
    else if (reached) itemState = "done";
    if (stage === "ready" && name === "ready") itemState = "done";
    return el("li", {dataset: {stage: name, state: itemState}}, name);
  }));
  // The last stage is kept after the outcome (the slots' refresh draws the same failed load again); a new load's
  // "queued" replaces it.
  if (failed) card.stages.append(el("li", {dataset: {stage, state: "failed"}}, stage));
  if (failed && reason) setStatus(card, reason, "error");
}

async function load(card) {
  const model = card.model.value;
  if (!model) return;
  card.busy = true;
  updateControls();
  setStatus(card, "loading " + model + "…");
  showStages(card, "queued");
  const slot = encodeURIComponent(card.name.textContent);
  let result = await api("POST", "/v1/slots/" + slot + "/load", {json: {model, activate: card.activate.checked}});
  if (result.status !== 202 && result.status !== 200) {
    card.busy = false;
    setStatus(card, problem(result), "error");
    card.stages.hidden = true;
    updateControls();
    return;
  }
  let operation = result.body;
  const session = state.session;
  while (!["ready", "failed", "cancelled"].includes(operation.state)) {
    showStages(card, operation.state);
    await sleep(250);
    if (!current(session)) return;
    result = await api("GET", "/v1/operations/" + encodeURIComponent(operation.id));
    if (result.status !== 200) break;
    operation = result.body;
  }
  showStages(card, operation.state, operation.reason);
  card.busy = false;
  if (operation.state === "ready") {
    setStatus(card, (operation.activate ? "switched to " : "staged ") + (operation.model_id || model)
      + " in " + (operation.timings.total_ms || 0).toFixed(0) + " ms");
  }
  await refreshSlots();
}

// MARK: Request statistics

async function refreshStats() {
  const session = state.session;
  if (!current(session)) return;
  const result = await api("GET", "/v1/stats?window=" + STATS_WINDOW);
  if (!current(session) || result.status !== 200) return;
  const container = $("stats");
  const names = new Set(result.body.slots.map((s) => s.slot));
  for (const slot of state.slots) {
    if (!names.has(slot.name)) result.body.slots.push({slot: slot.name, requests: 0, series: [], rate_rps: 0});
  }
  for (const slot of result.body.slots) {
    let box = container.querySelector('[data-slot="' + CSS.escape(slot.slot) + '"]');
    if (!box) {
      box = el("div", {class: "stats-slot", dataset: {slot: slot.slot}},
        el("h3", {}, slot.slot), el("p", {class: "stats-figures"}), el("canvas", {width: "600", height: "120"}));
      container.append(box);
    }
    const ms = (v) => (v === undefined || v === null ? "–" : v.toFixed(1) + " ms");
    box.querySelector(".stats-figures").textContent = slot.rate_rps.toFixed(2) + " req/s · p50 " + ms(slot.p50_ms)
      + " · p99 " + ms(slot.p99_ms) + " · " + slot.requests + " requests"
      + (slot.errors ? " · " + slot.errors + " failed" : "");
    drawStats(box.querySelector("canvas"), slot, result.body.end, result.body.window_s);
  }
}

function drawStats(canvas, slot, end, span) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 120;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const start = end - span + 1;
  const x = (t) => ((t - start) / span) * width;
  const barWidth = Math.max(1, width / span - 1);
  const maxRate = Math.max(1, ...slot.series.map((p) => p.requests));
  const maxLatency = Math.max(1, ...slot.series.map((p) => p.p99_ms || 0));
  g.fillStyle = "#c8dcf0";
  for (const p of slot.series) {
    const h = (p.requests / maxRate) * (height - 14);
    g.fillRect(x(p.t), height - h, barWidth, h);
  }
  const line = (key, color) => {
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    for (const p of slot.series) {
      if (p[key] === undefined || p[key] === null) { drawing = false; continue; }
      const px = x(p.t) + barWidth / 2;
      const py = height - (p[key] / maxLatency) * (height - 14);
      if (drawing) g.lineTo(px, py); else g.moveTo(px, py);
      drawing = true;
    }
    g.stroke();
  };
  line("p50_ms", "#1a7f37");
  line("p99_ms", "#c0362c");
  // Swap markers: this slot's events in the window.
  g.strokeStyle = "#8250df";
  g.fillStyle = "#8250df";
  g.font = "10px system-ui, sans-serif";
  for (const {event} of state.events) {
    if (event.slot !== slot.slot || event.result !== "succeeded") continue;
    const t = new Date(event.time).getTime() / 1000;
    if (t < start || t > end + 1) continue;
    g.beginPath();
    g.moveTo(x(t), 0);
    g.lineTo(x(t), height);
    g.stroke();
    g.fillText(event.operation, Math.min(x(t) + 2, width - 40), 10);
  }
  g.fillStyle = "#5d6874";
  g.fillText(maxRate + " req/s · p99 max " + maxLatency.toFixed(0) + " ms", 4, height - 3);
}

// MARK: Audit trail

async function refreshAudit() {
  const body = $("audit").tBodies[0];
  if (!canAct()) {
    body.replaceChildren(el("tr", {}, el("td", {colspan: "7", class: "hint"},
      "The audit trail is for operators: sign in with an operator token to see it.")));
    setBadge($("audit-state"), "unknown", "not shown");
    return;
  }
  const session = state.session;
  const [entries, verification] = await Promise.all([
    api("GET", "/v1/audit?limit=20"), api("GET", "/v1/audit/verify")]);
  if (!current(session)) return;
  if (verification.status === 200) {
    const v = verification.body;
    setBadge($("audit-state"), v.intact ? "intact" : "broken", v.intact
      ? "chain verified: " + v.entries + " entries"
      : "chain BROKEN at #" + v.break.sequence + ": " + v.break.reason);
  } else {
    setBadge($("audit-state"), "unknown", problem(verification));
  }
  if (entries.status !== 200) {
    body.replaceChildren(el("tr", {}, el("td", {colspan: "7", class: "hint"}, problem(entries))));
    return;
  }
  if (entries.body.entries.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", {colspan: "7", class: "hint"}, "No entries yet.")));
    return;
  }
  body.replaceChildren(...entries.body.entries.map((e) => el("tr", {dataset: {result: e.result}},
    el("td", {class: "mono", title: e.hash}, e.id),
    el("td", {}, new Date(e.time).toLocaleString()),
    el("td", {}, e.actor),
    el("td", {}, e.action),
    el("td", {}, e.slot || ""),
    el("td", {title: e.sha256 || ""}, e.model_path || ""),
    el("td", {title: e.reason || ""}, e.result))));
}

// MARK: Try an image

async function tryImage(file) {
  if (!file) return;
  const slot = $("try-slot").value;
  const conf = $("try-conf").value || "0.25";
  const query = "?conf=" + encodeURIComponent(conf) + (slot ? "&slot=" + encodeURIComponent(slot) : "");
  $("try-stamp").textContent = "detecting…";
  const type = file.type === "image/png" ? "image/png" : "image/jpeg";
  const [result, bitmap] = await Promise.all([
    api("POST", "/v1/detect" + query, {body: file, contentType: type}),
    createImageBitmap(file).catch(() => null),
  ]);
  const table = $("try-detections");
  if (result.status !== 200) {
    $("try-stamp").textContent = "";
    table.hidden = true;
    showMessage("Detection failed: " + problem(result)
      + (result.status === 401 ? " (sign in, or allow anonymous detection)" : ""));
    return;
  }
  showMessage("");
  const {model, detections, image, timings_ms: timings} = result.body;
  $("try-stamp").textContent = model.slot + " · " + model.id + " · sha256 " + model.sha256.slice(0, 12)
    + " · generation " + model.generation + " · " + model.provider + " · " + timings.total.toFixed(1) + " ms";
  drawDetections(bitmap, image, detections, model);
  table.tBodies[0].replaceChildren(...detections.map((d, i) => el("tr", {dataset: {
    classId: d.class_id, confidence: d.confidence, x1: d.box.x1, y1: d.box.y1, x2: d.box.x2, y2: d.box.y2}},
  el("td", {}, i + 1), el("td", {}, d.class_name), el("td", {}, d.confidence.toFixed(3)),
  ...["x1", "y1", "x2", "y2"].map((k) => el("td", {class: "mono"}, d.box[k].toFixed(1))))));
  table.hidden = false;
}

function drawDetections(bitmap, image, detections, model) {
  const canvas = $("try-canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const g = canvas.getContext("2d");
  g.fillStyle = "#ddd";
  g.fillRect(0, 0, image.width, image.height);
  if (bitmap) g.drawImage(bitmap, 0, 0, image.width, image.height);
  const scale = Math.max(1, image.width / 640);
  g.lineWidth = 2 * scale;
  g.font = (12 * scale).toFixed(0) + "px system-ui, sans-serif";
  detections.forEach((d) => {
    const hue = (d.class_id * 47) % 360;
    g.strokeStyle = "hsl(" + hue + " 90% 45%)";
    g.strokeRect(d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1);
    const label = d.class_name + " " + d.confidence.toFixed(2);
    const w = g.measureText(label).width + 6 * scale;
    g.fillStyle = "hsl(" + hue + " 90% 45%)";
    g.fillRect(d.box.x1, Math.max(0, d.box.y1 - 16 * scale), w, 16 * scale);
    g.fillStyle = "#fff";
    g.fillText(label, d.box.x1 + 3 * scale, Math.max(12 * scale, d.box.y1 - 4 * scale));
  });
  const stamp = model.id + " · " + model.sha256.slice(0, 12) + " · gen " + model.generation;
  const w = g.measureText(stamp).width + 10 * scale;
  g.fillStyle = "rgba(0,0,0,.65)";
  g.fillRect(0, image.height - 20 * scale, w, 20 * scale);
  g.fillStyle = "#fff";
  g.fillText(stamp, 5 * scale, image.height - 6 * scale);
}

// MARK: Optional panels (releases, streams): shown when their endpoints answer

async function probeOptionalPanels() {
  const session = state.session;
  try { await refreshReleases(); } catch (error) { console.error("releases panel:", error); }
  if (!current(session)) return;
  await refreshStreams();
  if (!current(session)) return;
  document.body.dataset.optionalPanels = "probed";
}

// MARK: Releases: a card for each slot whose GET /v1/slots/{slot}/release answers (its release running or the last one)

/// Numbered as the stream list's requests are: an answer older than the one last drawn is dropped (an action's own
/// answer counts as drawn). One refresh at a time: a timer tick while one runs is skipped.
let releaseListAsked = 0;
let releaseListDrawn = 0;
let releaseRefreshRunning = false;

const isRelease = (body) => body && typeof body === "object" && typeof body.slot === "string"
  && typeof body.phase === "string" && typeof body.strategy === "string" && body.variants
  && typeof body.variants === "object";

async function refreshReleases() {
  if (releaseRefreshRunning) return;
  releaseRefreshRunning = true;
  try { await refreshReleasesOnce(); } finally { releaseRefreshRunning = false; }
}

async function refreshReleasesOnce() {
  const session = state.session;
  const asked = ++releaseListAsked;
  const found = new Map();   // slot -> its release, or null where the slot has none (404)
  for (const slot of state.slots) {
    const result = await api("GET", "/v1/slots/" + encodeURIComponent(slot.name) + "/release");
    if (!current(session)) return;
    if (result.status === 200 && isRelease(result.body) && result.body.slot === slot.name) {
      found.set(slot.name, result.body);
    } else if (result.status === 404) {
      found.set(slot.name, null);
    }
    // Anything else (unreachable, 5xx): that slot's card stays as it was until an answer says otherwise.
  }
  if (asked < releaseListDrawn) return;
  releaseListDrawn = asked;
  const slots = new Set(state.slots.map((slot) => slot.name));
  for (const [slot, card] of state.releaseCards) {
    if (!slots.has(slot) || found.get(slot) === null) { card.root.remove(); state.releaseCards.delete(slot); }
  }
  for (const release of found.values()) {
    if (!release) continue;
    let card = state.releaseCards.get(release.slot);
    if (!card) {
      card = makeReleaseCard(release.slot);
      $("releases").append(card.root);
      state.releaseCards.set(release.slot, card);
    }
    fillReleaseCard(card, release);
  }
  $("releases-panel").hidden = state.releaseCards.size === 0;
  updateControls();
}

const VARIANT_COLUMNS = ["variant", "requests", "errors", "p50 ms", "p99 ms", "detections / image",
  "mean confidence"];
const fixed = (value, digits) => (typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—");
const releaseModel = (model) => (model ? (model.name || model.id) + " · " + model.sha256.slice(0, 12) : "—");

/// The card's elements are made once and kept (a click is never lost to a refresh; the details stay open).
function makeReleaseCard(slot) {
  const button = (name, text) => el("button", {type: "button", class: "op-control release-" + name}, text);
  const card = {
    slot, busy: false, release: null, figuresJSON: "",
    title: el("h3"), models: el("p", {class: "release-models"}), step: el("p", {class: "release-step"}),
    reason: el("p", {class: "release-reason"}), variants: el("tbody"),
    agreement: el("p", {class: "release-agreement"}),
    toggle: button("toggle", "Pause"), promote: button("promote", "Promote"), abort: button("abort", "Abort"),
    figures: el("div"),
  };
  card.toggle.addEventListener("click", () =>
    releaseAction(card, card.release && card.release.phase === "paused" ? "resume" : "pause"));
  card.promote.addEventListener("click", () => releaseAction(card, "promote"));
  card.abort.addEventListener("click", () => releaseAction(card, "abort"));
  card.root = el("article", {class: "release", dataset: {slot}}, card.title, card.models, card.step, card.reason,
    el("table", {class: "release-variants"},
      el("thead", {}, el("tr", {}, ...VARIANT_COLUMNS.map((name) => el("th", {}, name)))), card.variants),
    card.agreement, el("div", {class: "actions"}, card.toggle, card.promote, card.abort),
    el("details", {}, el("summary", {}, "All figures"), card.figures));
  return card;
}

function fillReleaseCard(card, release) {
  const r = release;
  card.release = r;
  Object.assign(card.root.dataset, {phase: r.phase, strategy: r.strategy, candidatePercent: r.candidate_percent});
  card.title.replaceChildren(r.slot + " · " + r.strategy + " ",
    el("span", {class: "badge", dataset: {state: r.phase}}, r.phase.replace("_", " ")));
  card.models.replaceChildren("candidate ",
    el("span", {class: "mono"}, r.candidate ? releaseModel(r.candidate) : r.model),
    " against baseline ", el("span", {class: "mono"}, releaseModel(r.baseline)));
  const share = fixed(r.candidate_percent, 1) + " % of requests to the candidate";
  card.step.textContent = (r.step ? "step " + (r.step.index + 1) + " of " + r.step.count + ", " : "") + share
    + " · started by " + r.started_by + " at " + new Date(r.created_at).toLocaleString();
  card.reason.textContent = r.reason || "";
  card.reason.dataset.kind = ["rolled_back", "aborted", "failed"].includes(r.phase) ? "error" : "info";
  card.reason.hidden = !r.reason;
  card.variants.replaceChildren(...Object.keys(r.variants).sort().map((name) => {
    const v = r.variants[name];
    return el("tr", {dataset: {variant: name, requests: v.requests}}, el("td", {}, name), el("td", {}, v.requests),
      el("td", {}, v.errors + (v.requests ? " (" + fixed(100 * v.error_rate, 1) + " %)" : "")),
      el("td", {}, fixed(v.p50_ms, 1)), el("td", {}, fixed(v.p99_ms, 1)),
      el("td", {}, fixed(v.detections_per_image, 2)), el("td", {}, fixed(v.mean_confidence, 3)));
  }));
  const a = r.agreement;
  const m = r.mirror;
  card.agreement.textContent = [
    a ? "agreement over " + a.pairs + " pairs (" + a.disagreeing + " disagreeing): F1 " + fixed(a.f1, 3)
      + ", precision " + fixed(a.precision, 3) + ", recall " + fixed(a.recall, 3) + ", mean IoU "
      + fixed(a.mean_iou, 3) + ", latency ratio " + fixed(a.latency_ratio, 2) : null,
    m ? "mirrored " + m.mirrored + ", shed " + (m.shed_queue_full + m.shed_saturated) + ", failed " + m.failed : null,
  ].filter(Boolean).join(" · ");
  card.agreement.hidden = !a && !m;
  card.agreement.dataset.pairs = a ? a.pairs : "";
  // Every request chosen for mirroring ends up run, shed or failed.
  card.agreement.dataset.mirrorAccounted = m ? m.mirrored + m.shed_queue_full + m.shed_saturated + m.failed : "";
  // Rebuilt only when a figure changed (a text selection in it survives the refreshes in between).
  const figuresJSON = JSON.stringify(r);
  if (figuresJSON !== card.figuresJSON) {
    card.figuresJSON = figuresJSON;
    card.figures.replaceChildren(renderJSON(r));
  }
}

/// What each action is said to have done, and the phase it leads to.
const RELEASE_DONE = {pause: "paused", resume: "resumed", promote: "promoted", abort: "aborted"};
const RELEASE_PHASE_AFTER = {pause: "paused", resume: "running", promote: "promoted", abort: "aborted"};

async function releaseAction(card, action) {
  const session = state.session;
  card.busy = true;
  updateControls();
  const result = await api("POST", "/v1/slots/" + encodeURIComponent(card.slot) + "/release/" + action);
  if (!current(session)) return;
  card.busy = false;
  if (result.status === 200 && isRelease(result.body)) {
    // Newer than any list request already sent: their answers must not draw the phase before this action.
    releaseListDrawn = ++releaseListAsked;
    const r = result.body;
    fillReleaseCard(card, r);
    if (r.phase === RELEASE_PHASE_AFTER[action]) {
      showMessage("Release on " + card.slot + " " + RELEASE_DONE[action] + ".", "info");
    } else {
      // Answered, but not in the phase the action leads to: a rule or another operator got there first.
      showMessage("The release on " + card.slot + " was not " + RELEASE_DONE[action] + ": it is "
        + r.phase.replace("_", " ") + (r.reason ? " (" + r.reason + ")" : "") + ".");
    }
  } else {
    showMessage("Cannot " + action + " the release on " + card.slot + ": " + problem(result));
  }
  updateControls();
  scheduleRefresh();
}

// MARK: Streams: shown where the service runs them (GET /v1/streams answers 200)

/// Each list request is numbered: an answer older than the one last drawn is dropped (the 2 s timer, the panel probe
/// and a start or stop all ask, and their answers may cross).
let streamListAsked = 0;
let streamListDrawn = 0;

async function refreshStreams() {
  const session = state.session;
  const asked = ++streamListAsked;
  const result = await api("GET", "/v1/streams");
  if (!current(session) || asked < streamListDrawn) return;
  streamListDrawn = asked;
  const streams = result.status === 200 && result.body && Array.isArray(result.body.streams) ? result.body.streams
    : null;
  $("streams-panel").hidden = streams === null;
  if (streams !== null) renderStreams(streams); else closePreview();
}

const finished = (stream) => ["ended", "failed", "stopped"].includes(stream.state);
const stampText = (model) =>
  model.id.split("@")[0] + " · " + model.sha256.slice(0, 12) + " · gen " + model.generation;

/// Updates the table in place, one row per stream (rows and their buttons are kept, so a click is never lost to a
/// refresh that replaced the button under the pointer).
function renderStreams(streams) {
  const body = $("streams").tBodies[0];
  body.querySelector("tr.empty")?.remove();
  for (const [id, row] of state.streamRows) {
    if (!streams.some((s) => s.id === id)) { row.root.remove(); state.streamRows.delete(id); }
  }
  for (const stream of streams) {
    let row = state.streamRows.get(stream.id);
    if (!row) {
      const cells = Array.from({length: 7}, () => el("td"));
      const watch = el("button", {type: "button", class: "stream-watch"});
      watch.addEventListener("click", () => {
        if (state.preview && state.preview.id === stream.id) closePreview(); else openPreview(stream.id);
      });
      const stop = el("button", {type: "button", class: "op-control stream-stop"});
      const root = el("tr", {dataset: {stream: stream.id}}, ...cells, el("td", {}, watch, " ", stop));
      row = {root, cells, watch, stop, busy: false};
      stop.addEventListener("click", () => stopStream(stream.id, row));
      cells[0].className = "mono";
      body.append(row.root);
      state.streamRows.set(stream.id, row);
    }
    const last = stream.switches.length ? stream.switches[stream.switches.length - 1] : null;
    Object.assign(row.root.dataset, {state: stream.state, framesDetected: stream.frames_detected,
      framesDropped: stream.frames_dropped});
    const texts = [
      stream.id,
      // A file by its name (the whole path is the cell's title), a URL or device as given.
      (stream.source.includes("://") ? stream.source : stream.source.split("/").pop())
        + (stream.live ? " (live)" : ""),
      stream.slot,
      stream.state + (stream.reconnects ? ", " + stream.reconnects + " reconnects" : ""),
      stream.frames_detected + " / " + stream.frames_dropped
        + (stream.viewer_drops ? " (" + stream.viewer_drops + " not sent to slow viewers)" : ""),
      stream.model ? stampText(stream.model) : "—",
      last ? "frame " + last.frame + ": gen " + (last.from ? last.from.generation : "?") + " → "
        + (last.to ? last.to.generation : "?") : "—",
    ];
    texts.forEach((text, i) => { if (row.cells[i].textContent !== text) row.cells[i].textContent = text; });
    row.cells[1].title = stream.source;
    row.cells[3].title = stream.last_error || "";
    row.cells[5].title = stream.model ? stream.model.sha256 : "";
    row.watch.textContent = state.preview && state.preview.id === stream.id ? "Hide preview" : "Preview";
    row.stop.textContent = finished(stream) ? "Remove" : "Stop";
  }
  if (streams.length === 0) {
    body.append(el("tr", {class: "empty"}, el("td", {colspan: "8", class: "hint"}, "No streams.")));
  }
  if (state.preview && !state.streamRows.has(state.preview.id)) closePreview();
  updateControls();
}

let startingStream = false;

async function startStream() {
  if (startingStream) return;
  const session = state.session;
  const request = {source: $("stream-source").value.trim(), slot: $("stream-slot").value || undefined};
  const name = $("stream-name").value.trim();
  if (name !== "") request.name = name;
  const fps = $("stream-fps").value;
  if (fps !== "") request.fps_cap = Number(fps);
  if ($("stream-policy").value) request.back_pressure = $("stream-policy").value;
  startingStream = true;
  updateControls();
  const result = await api("POST", "/v1/streams", {json: request});
  startingStream = false;
  if (!current(session)) return;
  updateControls();
  if (result.status !== 201) {
    showMessage("The stream was not started: " + problem(result));
    return;
  }
  showMessage("Stream " + result.body.id + " started on " + result.body.source + ".", "info");
  await refreshStreams();
  if (current(session) && state.streamRows.has(result.body.id)) openPreview(result.body.id);
}

async function stopStream(id, row) {
  if (row.busy) return;
  const session = state.session;
  row.busy = true;
  updateControls();
  const result = await api("DELETE", "/v1/streams/" + encodeURIComponent(id));
  row.busy = false;
  if (!current(session)) return;
  if (result.status === 200) {
    showMessage("Stream " + id + " stopped: " + result.body.frames_detected + " frames detected, "
      + result.body.frames_dropped + " dropped.", "info");
  } else {
    showMessage("Stream " + id + " was not stopped: " + problem(result));
  }
  await refreshStreams();
}

function closePreview() {
  const preview = state.preview;
  if (!preview) return;
  state.preview = null;
  preview.controller.abort();
  if (preview.url) URL.revokeObjectURL(preview.url);
  const image = $("stream-preview");
  image.removeAttribute("src");
  delete image.dataset.frame;
  delete image.dataset.stream;
  $("stream-preview-figure").hidden = true;
  for (const row of state.streamRows.values()) row.watch.textContent = "Preview";
}

/// Shows a stream's annotated preview. The MJPEG is fetched with the token in a header (an <img src> cannot send
/// one) and each part's JPEG is handed to the <img> as a blob URL.
async function openPreview(id) {
  closePreview();
  const preview = {id, controller: new AbortController(), url: null};
  state.preview = preview;
  const image = $("stream-preview");
  const caption = $("stream-preview-caption");
  image.dataset.stream = id;
  $("stream-preview-figure").hidden = false;
  caption.textContent = id + ": connecting…";
  const row = state.streamRows.get(id);
  if (row) row.watch.textContent = "Hide preview";
  let lastFrame = null;
  try {
    const response = await fetch("/v1/streams/" + encodeURIComponent(id) + "/preview.mjpeg",
      {headers: {Authorization: "Bearer " + state.token}, signal: preview.controller.signal, cache: "no-store"});
    if (!response.ok) {
      caption.textContent = id + ": no preview (HTTP " + response.status + ")";
      return;
    }
    for await (const part of mjpegParts(response.body.getReader())) {
      if (state.preview !== preview) return;
      // The service's placeholder while it has no frame to show (X-Frame -1): said, not drawn over the last frame.
      if (part.frame === -1) {
        if (lastFrame === null) caption.textContent = id + ": waiting for a frame";
        continue;
      }
      const url = URL.createObjectURL(new Blob([part.jpeg], {type: "image/jpeg"}));
      if (preview.url) URL.revokeObjectURL(preview.url);
      preview.url = url;
      image.src = url;
      image.dataset.frame = String(part.frame);
      lastFrame = part.frame;
      caption.textContent = id + ": frame " + part.frame;
    }
    if (state.preview === preview) {
      caption.textContent = id + ": the stream has ended"
        + (lastFrame === null ? "" : " (last frame " + lastFrame + ")");
    }
  } catch (error) {
    if (state.preview === preview && error.name !== "AbortError") caption.textContent = id + ": " + error.message;
  } finally {
    preview.controller.abort();  // a malformed body ends the preview: nothing more is downloaded
  }
}

const MJPEG_HEADER_LIMIT = 8192;
const MJPEG_PART_LIMIT = 64 << 20;
const MJPEG_BOUNDARY = "--frame\r\n";

/// The parts of a multipart/x-mixed-replace body as the service writes them (`--frame` CRLF, headers with
/// Content-Length and X-Frame, CRLF CRLF, the JPEG, CRLF): yields {frame, jpeg}. A part that does not start with the
/// boundary, has no usable length, headers past 8 KiB, a JPEG past 64 MiB or no CRLF after it ends the preview with an
/// error rather than buffering without bound. Chunks are kept as they arrive and joined once per part.
async function* mjpegParts(reader) {
  const pending = new ByteQueue();
  const fill = async () => {
    const {value, done} = await reader.read();
    if (!done) pending.push(value);
    return !done;
  };
  for (;;) {
    let end = pending.indexOfCRLFCRLF();
    while (end < 0) {
      if (pending.length > MJPEG_HEADER_LIMIT) throw new Error("malformed preview: no part header");
      if (!(await fill())) {
        if (pending.length === 0) return;
        throw new Error("malformed preview: the body ends inside a part header");
      }
      end = pending.indexOfCRLFCRLF();
    }
    const headers = new TextDecoder().decode(pending.take(end + 4));
    if (!headers.startsWith(MJPEG_BOUNDARY)) throw new Error("malformed preview: a part without the boundary");
    const length = Number((/\r\nContent-Length: *(\d+)\r\n/i.exec(headers) || [])[1]);
    const frame = Number((/\r\nX-Frame: *(-?\d+)\r\n/i.exec(headers) || [])[1]);
    if (!Number.isSafeInteger(length) || length > MJPEG_PART_LIMIT) {
      throw new Error("malformed preview: a part without a usable Content-Length");
    }
    while (pending.length < length + 2) {
      if (!(await fill())) throw new Error("malformed preview: the body ends inside a part");
    }
    const jpeg = pending.take(length);
    const tail = pending.take(2);
    if (tail[0] !== 13 || tail[1] !== 10) throw new Error("malformed preview: no CRLF after a part");
    yield {frame: Number.isSafeInteger(frame) ? frame : null, jpeg};
  }
}

/// Bytes received and not yet parsed, as the chunks they came in (no copy per chunk).
class ByteQueue {
  constructor() { this.chunks = []; this.length = 0; }

  push(chunk) {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /// The offset of the first CRLF CRLF, or -1; looks at the first 8 KiB + 4 bytes at most.
  indexOfCRLFCRLF() {
    const window = this.peek(Math.min(this.length, MJPEG_HEADER_LIMIT + 4));
    for (let i = 0; i + 3 < window.length; i++) {
      if (window[i] === 13 && window[i + 1] === 10 && window[i + 2] === 13 && window[i + 3] === 10) return i;
    }
    return -1;
  }

  peek(count) {
    const out = new Uint8Array(count);
    let filled = 0;
    for (const chunk of this.chunks) {
      if (filled === count) break;
      const part = chunk.subarray(0, Math.min(chunk.length, count - filled));
      out.set(part, filled);
      filled += part.length;
    }
    return out;
  }

  take(count) {
    const out = this.peek(count);
    let left = count;
    while (left > 0) {
      const chunk = this.chunks[0];
      if (chunk.length <= left) {
        this.chunks.shift();
        left -= chunk.length;
      } else {
        this.chunks[0] = chunk.subarray(left);
        left = 0;
      }
    }
    this.length -= count;
    return out;
  }
}

/// A defensive rendering of any JSON value: objects as key/value tables, arrays of objects as tables with the union
/// of their keys, nesting bounded.
function renderJSON(value, depth = 0) {
  if (value === null || value === undefined) return el("span", {class: "hint"}, "—");
  if (typeof value !== "object") {
    const text = typeof value === "number" && !Number.isInteger(value) ? value.toFixed(4) : String(value);
    return el("span", {class: typeof value === "string" && /^[0-9a-f]{64}$/.test(value) ? "mono" : null},
      /^[0-9a-f]{64}$/.test(text) ? text.slice(0, 12) : text);
  }
  if (depth > 4) return el("span", {class: "mono"}, JSON.stringify(value).slice(0, 200));
  if (Array.isArray(value)) {
    if (value.length === 0) return el("span", {class: "hint"}, "none");
    if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap((v) => Object.keys(v)))].slice(0, 12);
      return el("table", {class: "json-table"},
        el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", {}, k)))),
        el("tbody", {}, ...value.slice(0, 100).map((v) => el("tr", {},
          ...keys.map((k) => el("td", {}, renderJSON(v[k], depth + 1)))))));
    }
    return el("span", {}, value.slice(0, 50).map((v) => (typeof v === "object" ? JSON.stringify(v) : v)).join(", "));
  }
  return el("table", {class: "json-table"}, el("tbody", {}, ...Object.entries(value).slice(0, 50).map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", {}, renderJSON(v, depth + 1))))));
}

// MARK: Wiring

function wire() {
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) { showMessage("Type a token first."); return; }
    signIn(token);
  });
  $("sign-out-button").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    signedOut();
    showMessage("Signed out.", "info");
  });
  $("image-input").addEventListener("change", (event) => tryImage(event.target.files[0]));
  $("stream-start").addEventListener("submit", (event) => { event.preventDefault(); startStream(); });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    tryImage(event.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  signedOut();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved, {fromStorage: true});
});
