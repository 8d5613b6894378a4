// factq's page: submit factorial jobs and follow them live over one WebSocket.
//
// The server is the source of truth. HTTP answers (submit, cancel, a job
// fetched again after a reload) seed a job's card; after that, events over
// `WS /v1/events` move it on, and each job keeps the highest `seq` it has seen
// so that nothing older (a late HTTP answer, an event replayed after a
// reconnect) can move it backwards.
//
// The page shows the jobs this browser submitted, and no others: it keeps their
// ids in local storage and fetches each one again after a reload. It never asks
// for the server's list (`GET /v1/jobs`), which without keys holds every
// caller's jobs.

const KEY_STORAGE = "factq.apiKey";
// One list of job ids per key (and one for no key), newest first.
const JOBS_STORAGE = "factq.jobs";
const KEEP_JOBS = 50;
// The server takes at most 1,000 ids per subscribe message.
const SUBSCRIBE_CHUNK = 500;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
// A connection that stays up this long resets the backoff; one that drops at
// once (a proxy, a refused key) keeps backing off instead of hammering.
const STABLE_MS = 5000;
const TICK_MS = 100;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, cancelled: 2 };
const STATUS_LABEL = {
  queued: "Queued",
  running: "Running",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
};
const ERROR_LABEL = {
  task_error: "The task raised an error",
  timeout: "Timed out",
  worker_lost: "Its worker was lost",
  too_many_attempts: "Too many attempts",
  expired: "Expired before it started",
};
const FORMAT_LABEL = { decimal: "Decimal", hex: "Hex" };
// Hexadecimal digits per decimal digit: log(10) / log(16).
const HEX_PER_DECIMAL = Math.log(10) / Math.log(16);

const byId = (id) => document.getElementById(id);
const els = {
  form: byId("submit-form"),
  input: byId("n-input"),
  submit: byId("submit-button"),
  fieldError: byId("n-error"),
  maxN: byId("max-n"),
  presets: document.querySelectorAll(".chip[data-n]"),
  keyPanel: byId("key-panel"),
  keyForm: byId("key-form"),
  keyInput: byId("key-input"),
  keyError: byId("key-error"),
  keyStatus: byId("key-status"),
  forgetKey: byId("forget-key"),
  list: byId("jobs"),
  empty: byId("jobs-empty"),
  count: byId("jobs-count"),
  connection: byId("connection"),
  connectionText: document.querySelector("#connection .connection-text"),
  announcer: byId("announcer"),
  template: byId("job-template"),
};

const numbers = new Intl.NumberFormat();
const fmt = (value) => numbers.format(value);

/** id -> {job, seq, shownStatus, el, parts, cancelling, gone, downloadsFor, createdMs} */
const jobs = new Map();
let maxN = 1_000_000;
const formatsByTask = new Map([["factorial", ["decimal", "hex"]]]);
let clockSkewMs = 0;
let authPending = false;
// The stored jobs are not all loaded yet (at first, or one could not be
// fetched while the server was down, say): try again when the socket opens.
let listStale = true;
// Counts the times the cards were cleared for another key, so that an answer
// asked for with the old key adds nothing.
let jobsGeneration = 0;

// ---- API keys ------------------------------------------------------------

function loadKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage can be off (private modes); the key then lasts until reload.
  }
  memoryKey = key;
  els.keyStatus.hidden = !key;
}

let memoryKey = loadKey();
const currentKey = () => loadKey() || memoryKey;

/** Show the key form (once, however many calls answer 401) and pause the socket. */
function requestKey(message) {
  const firstAsk = !authPending;
  authPending = true;
  socket.stop("API key needed");
  els.keyPanel.hidden = false;
  els.keyError.textContent = message || "";
  els.keyError.hidden = !message;
  if (firstAsk) els.keyInput.focus();
}

function onKeySubmit(event) {
  event.preventDefault();
  const key = els.keyInput.value.trim();
  if (!key) {
    els.keyError.textContent = "Enter the key you were given.";
    els.keyError.hidden = false;
    els.keyInput.focus();
    return;
  }
  const changed = key !== currentKey();
  storeKey(key);
  if (changed) clearJobs();
  els.keyInput.value = "";
  els.keyPanel.hidden = true;
  authPending = false;
  refresh();
}

function onForgetKey() {
  // Its job ids are of no use without it, and should not outlive it here.
  writeStoredIds([]);
  storeKey("");
  clearJobs();
  refresh();
}

// ---- This browser's jobs -------------------------------------------------------

/** Where the current key's job ids are kept: named by a hash, so the key itself
 * is not written a second time (and is gone once forgotten). */
function jobsStorageName() {
  const key = currentKey();
  return key ? `${JOBS_STORAGE}.${hashKey(key)}` : JOBS_STORAGE;
}

/** A 53-bit string hash (cyrb53): it tells keys apart, it is no protection. */
function hashKey(text) {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

function storedIds() {
  try {
    const ids = JSON.parse(localStorage.getItem(jobsStorageName()) || "[]");
    if (!Array.isArray(ids)) return [];
    const valid = (id) => typeof id === "string" && id.length > 0 && id.length <= 100;
    return ids.filter(valid).slice(0, KEEP_JOBS);
  } catch {
    return [];
  }
}

function writeStoredIds(ids) {
  try {
    const name = jobsStorageName();
    if (ids.length) localStorage.setItem(name, JSON.stringify(ids.slice(0, KEEP_JOBS)));
    else localStorage.removeItem(name);
  } catch {
    // Storage can be off (private modes): the jobs then last until reload.
  }
}

/** A job this browser submitted: first in the list, which keeps the newest only. */
function rememberJob(jobId) {
  writeStoredIds([jobId, ...storedIds().filter((id) => id !== jobId)]);
}

function forgetJob(jobId) {
  const ids = storedIds();
  if (ids.includes(jobId)) writeStoredIds(ids.filter((id) => id !== jobId));
}

/** Take down every card: another key's jobs are not this one's. */
function clearJobs() {
  jobsGeneration += 1;
  for (const entry of jobs.values()) entry.el.remove();
  jobs.clear();
  updateCount();
}

// ---- HTTP ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

/** Call the API; errors come back as ApiError with the server's own message. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const key = currentKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server. Check the connection and try again.");
  }
  noteServerClock(response);
  if (response.status === 401) {
    requestKey(key ? "That key was not accepted. Check it and try again." : "");
    throw new ApiError(401, "unauthorized", "This server needs an API key: enter it above.");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(
      response.status,
      (error && error.type) || "http_error",
      (error && error.message) || `The server answered ${response.status}.`,
    );
  }
  return data;
}

/** Elapsed times compare the server's timestamps with this clock: correct a
 * clock that is clearly off (the Date header has whole seconds only). */
function noteServerClock(response) {
  const date = Date.parse(response.headers.get("Date") || "");
  if (Number.isNaN(date)) return;
  const skew = date + 500 - Date.now();
  clockSkewMs = Math.abs(skew) > 2000 ? skew : 0;
}

const serverNow = () => Date.now() + clockSkewMs;

// ---- Live events -----------------------------------------------------------

const socket = {
  ws: null,
  attempts: 0,
  retryTimer: 0,
  stableTimer: 0,
  stopped: true,

  /** (Re)connect from scratch, e.g. with a new key. */
  start() {
    this.halt();
    this.stopped = false;
    this.attempts = 0;
    setConnection("connecting", "Connecting…");
    this.open();
  },

  stop(reason) {
    this.halt();
    setConnection("offline", reason);
  },

  halt() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.stableTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
  },

  open() {
    clearTimeout(this.retryTimer);
    const key = currentKey();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      // No key in the URL: URLs end up in logs and histories. It goes as the
      // socket's first message instead (see onopen).
      ws = new WebSocket(`${scheme}//${location.host}/v1/events`);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      opened = true;
      // A server with keys reads the first message as the key, before any
      // subscription, and closes with 1008 when it is not one.
      if (key) ws.send(JSON.stringify({ token: key }));
      setConnection("live", "Live");
      this.stableTimer = setTimeout(() => {
        this.attempts = 0;
      }, STABLE_MS);
      // Each subscription starts with the job's current state, so whatever
      // happened while the socket was down arrives now.
      this.subscribe(unfinishedIds());
      if (listStale) loadJobs().catch(() => {});
    };
    ws.onmessage = (event) => onMessage(event.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.stableTimer);
      if (this.stopped) return;
      // A refused key closes the socket with 1008, and a browser never sees a
      // refused handshake's status: ask over HTTP whether a key is the reason
      // (a 401 there opens the key form).
      if (event.code === 1008 || !opened) api("/v1/tasks").catch(() => {});
      this.retry();
    };
  },

  retry() {
    if (this.stopped) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempts);
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    this.attempts += 1;
    setConnection("reconnecting", "Reconnecting…");
    this.retryTimer = setTimeout(() => this.open(), delay);
  },

  /** Back online, or back to the tab: try now rather than at the next backoff. */
  retryNow() {
    if (!this.stopped && !this.ws) this.open();
  },

  subscribe(ids) {
    const ws = this.ws;
    if (!ids.length || !ws || ws.readyState !== WebSocket.OPEN) return;
    for (let i = 0; i < ids.length; i += SUBSCRIBE_CHUNK) {
      ws.send(JSON.stringify({ subscribe: ids.slice(i, i + SUBSCRIBE_CHUNK) }));
    }
  },
};

function setConnection(state, text) {
  if (els.connection.dataset.state === state && els.connectionText.textContent === text) return;
  els.connection.dataset.state = state;
  els.connectionText.textContent = text;
}

function onMessage(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return;
  }
  if (message.type === "job" && message.job) {
    applyEvent(message.seq, message.job);
  } else if (message.type === "error") {
    onEventError(message);
  }
}

function onEventError(message) {
  const entry = message.id ? jobs.get(message.id) : undefined;
  if (!entry) {
    console.warn("factq events:", message.error);
    return;
  }
  if (message.error && message.error.type === "not_found") {
    forgetJob(message.id);
    entry.gone = true;
    render(entry);
    updateCount();
    return;
  }
  // The server stopped following this job (a backend hiccup): ask again.
  setTimeout(() => {
    if (!isFinished(entry)) socket.subscribe([entry.job.id]);
  }, 3000);
}

const isFinished = (entry) => entry.gone || TERMINAL.has(entry.job.status);
const unfinishedIds = () => [...jobs.values()].filter((e) => !isFinished(e)).map((e) => e.job.id);

// ---- Job state -------------------------------------------------------------

function applyEvent(seq, job) {
  const entry = jobs.get(job.id);
  if (!entry || typeof seq !== "number") return;
  if (entry.seq !== null && seq <= entry.seq) return;
  entry.seq = seq;
  update(entry, job);
}

/** A job from an HTTP answer, which carries no seq: it may only move a card forward. */
function applyHttp(job) {
  let entry = jobs.get(job.id);
  if (!entry) {
    entry = createEntry(job);
    update(entry, job);
    return entry;
  }
  const rank = RANK[job.status] ?? 0;
  const current = RANK[entry.job.status] ?? 0;
  if (rank < current || (rank === current && entry.seq !== null)) return entry;
  update(entry, job);
  return entry;
}

function update(entry, job) {
  const previous = entry.shownStatus;
  entry.job = job;
  entry.shownStatus = job.status;
  if (TERMINAL.has(job.status)) entry.cancelling = false;
  render(entry);
  updateCount();
  // Changes only: a reload listing twenty jobs should not read out twenty.
  if (previous && previous !== job.status) announce(describe(job));
}

// ---- Rendering ---------------------------------------------------------------

function createEntry(job) {
  const el = els.template.content.firstElementChild.cloneNode(true);
  const part = (selector) => el.querySelector(selector);
  const entry = {
    job,
    seq: null,
    shownStatus: null,
    el,
    cancelling: false,
    gone: false,
    downloadsFor: null,
    createdMs: Date.parse(job.created_at) || 0,
    parts: {
      title: part(".job-title"),
      badge: part(".badge-text"),
      meta: part(".job-meta"),
      progress: part(".job-progress"),
      bar: part(".bar"),
      fill: part(".bar-fill"),
      result: part(".job-result"),
      digitsCount: part(".digits-count"),
      digits: part(".digits"),
      head: part(".digits-head"),
      gap: part(".digits-gap"),
      tail: part(".digits-tail"),
      downloads: part(".downloads"),
      error: part(".job-error"),
      statusLine: part(".job-status-line"),
      cancel: part(".cancel"),
    },
  };
  const titleId = `job-${job.id}-title`;
  el.dataset.jobId = job.id;
  el.setAttribute("aria-labelledby", titleId);
  entry.parts.title.id = titleId;
  entry.parts.title.textContent = jobTitle(job);
  entry.parts.meta.append(...metaNodes(job));
  entry.parts.bar.setAttribute("aria-labelledby", titleId);
  entry.parts.cancel.addEventListener("click", () => cancelJob(entry));
  jobs.set(job.id, entry);
  place(entry);
  return entry;
}

/** Newest first, by creation time, whatever order cards arrive in. */
function place(entry) {
  for (const other of els.list.children) {
    const otherEntry = jobs.get(other.dataset.jobId);
    if (otherEntry && otherEntry.createdMs < entry.createdMs) {
      els.list.insertBefore(entry.el, other);
      return;
    }
  }
  els.list.append(entry.el);
}

function render(entry) {
  const { job, el, parts } = entry;
  const status = job.status;
  el.dataset.status = status;
  el.classList.toggle("is-gone", entry.gone);
  parts.badge.textContent = STATUS_LABEL[status] || status;
  renderProgress(entry);
  renderResult(entry);
  const failed = status === "failed" && job.error;
  parts.error.hidden = !failed;
  if (failed) {
    const label = document.createElement("strong");
    label.textContent = `${ERROR_LABEL[job.error.type] || job.error.type}: `;
    parts.error.replaceChildren(label, job.error.message);
  }
  const cancellable = !isFinished(entry);
  const cancelling = entry.cancelling || job.cancel_requested;
  parts.cancel.hidden = !cancellable;
  parts.cancel.disabled = cancelling;
  parts.cancel.textContent = cancelling ? "Cancelling…" : "Cancel";
  parts.cancel.setAttribute("aria-label", `Cancel ${jobTitle(job)}`);
  renderStatusLine(entry);
}

function renderProgress(entry) {
  const { job, parts } = entry;
  const running = job.status === "running" && !entry.gone;
  parts.progress.hidden = !running;
  if (!running) return;
  const { bar, fill } = parts;
  if (typeof job.progress === "number") {
    const percent = Math.min(100, Math.max(0, job.progress * 100));
    bar.classList.remove("indeterminate");
    fill.style.width = `${percent}%`;
    bar.setAttribute("aria-valuenow", percent.toFixed(1));
    bar.setAttribute("aria-valuetext", `${formatPercent(job.progress)} done`);
  } else {
    // Small jobs and tasks that do not report progress: show activity only.
    bar.classList.add("indeterminate");
    fill.style.width = "";
    bar.removeAttribute("aria-valuenow");
    bar.setAttribute("aria-valuetext", "working");
  }
}

function renderResult(entry) {
  const { job, parts } = entry;
  const result = job.status === "succeeded" ? job.result : null;
  parts.result.hidden = !result;
  if (!result) return;
  const hasDigits = typeof result.digits === "number" && typeof result.head === "string";
  parts.digits.hidden = !hasDigits;
  if (hasDigits) {
    parts.digitsCount.textContent = `${fmt(result.digits)} ${result.digits === 1 ? "digit" : "digits"}`;
    renderDigits(parts, result.head, result.tail || "", result.digits);
  } else {
    const { url, ...summary } = result;
    parts.digitsCount.textContent = JSON.stringify(summary).slice(0, 200);
  }
  if (entry.downloadsFor !== result.url) {
    entry.downloadsFor = result.url;
    parts.downloads.replaceChildren(...downloadLinks(job));
  }
}

/** Only the summary's head and tail ever reach the page, never the whole value. */
function renderDigits(parts, head, tail, count) {
  const shown = head.length + tail.length;
  let whole = null;
  if (count <= head.length) whole = head.slice(0, count);
  else if (count <= shown) whole = head + tail.slice(shown - count);
  parts.gap.hidden = whole !== null;
  parts.tail.hidden = whole !== null;
  if (whole !== null) {
    parts.head.textContent = whole;
    parts.digits.setAttribute("aria-label", `The value: ${whole}`);
    return;
  }
  parts.head.textContent = head;
  parts.gap.textContent = `${fmt(count - shown)} more digits`;
  parts.tail.textContent = tail;
  parts.digits.setAttribute(
    "aria-label",
    `First ${head.length} digits ${head}, then ${fmt(count - shown)} more, last ${tail.length} digits ${tail}`,
  );
}

function downloadLinks(job) {
  const formats = formatsByTask.get(job.task) || [null];
  const digits = job.result && job.result.digits;
  return formats.map((name, index) => {
    const link = document.createElement("a");
    link.className = "button download";
    // The first format is the task's default: the plain result URL.
    link.href = index === 0 ? job.result.url : `${job.result.url}?format=${encodeURIComponent(name)}`;
    link.download = fileName(job, name);
    const label = FORMAT_LABEL[name] || (name ? name[0].toUpperCase() + name.slice(1) : "Result");
    let size = "";
    if (typeof digits === "number" && name === "decimal") size = formatBytes(digits);
    if (typeof digits === "number" && name === "hex") {
      size = `≈${formatBytes(Math.ceil(digits * HEX_PER_DECIMAL))}`;
    }
    const text = document.createElement("span");
    text.textContent = label;
    link.append(text);
    if (size) {
      const note = document.createElement("span");
      note.className = "download-size";
      note.textContent = size;
      link.append(note);
    }
    link.setAttribute("aria-label", `Download ${jobTitle(job)} as ${label.toLowerCase()}${size ? `, ${size}` : ""}`);
    link.addEventListener("click", (event) => onDownload(event, link));
    return link;
  });
}

function fileName(job, format) {
  const base = job.task === "factorial" && job.input ? `${job.input.n}-factorial` : `${job.task}-${job.id.slice(0, 8)}`;
  return format && format !== "decimal" ? `${base}.${format}.txt` : `${base}.txt`;
}

/** A link cannot carry an Authorization header: with a key, fetch the file instead. */
async function onDownload(event, link) {
  const key = currentKey();
  if (!key) return;
  event.preventDefault();
  if (link.getAttribute("aria-busy") === "true") return;
  link.setAttribute("aria-busy", "true");
  try {
    const response = await fetch(link.href, { headers: { Authorization: `Bearer ${key}` } });
    if (response.status === 401) {
      requestKey("That key was not accepted. Check it and try again.");
      return;
    }
    if (!response.ok) throw new Error(`download failed (${response.status})`);
    const url = URL.createObjectURL(await response.blob());
    const save = document.createElement("a");
    save.href = url;
    save.download = link.download;
    save.click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    announce(`The download failed: ${error.message}`);
  } finally {
    link.removeAttribute("aria-busy");
  }
}

function renderStatusLine(entry) {
  entry.parts.statusLine.textContent = statusLine(entry);
}

function statusLine(entry) {
  const { job } = entry;
  if (entry.gone) return "No longer on the server (deleted, or kept past its time).";
  const metrics = job.metrics || {};
  const attempt = job.attempts > 1 ? ` · attempt ${job.attempts}` : "";
  switch (job.status) {
    case "queued":
      return `Waiting for a worker · ${formatSeconds(since(job.created_at))}`;
    case "running": {
      const elapsed = formatSeconds(since(job.started_at || job.created_at));
      if (job.cancel_requested) return `Stopping · ${elapsed}${attempt}`;
      const done = typeof job.progress === "number" ? `${formatPercent(job.progress)} · ` : "";
      return `${done}${elapsed} elapsed${attempt}`;
    }
    case "succeeded":
      return `Computed in ${formatSeconds(metrics.run_s)} · waited ${formatSeconds(metrics.queue_s)}${attempt}`;
    case "failed":
      return typeof metrics.run_s === "number" ? `Failed after ${formatSeconds(metrics.run_s)}${attempt}` : "Failed";
    case "cancelled":
      return job.started_at && typeof metrics.run_s === "number"
        ? `Cancelled after ${formatSeconds(metrics.run_s)} of computing`
        : "Cancelled before it started";
    default:
      return job.status;
  }
}

function tick() {
  for (const entry of jobs.values()) {
    if (!isFinished(entry)) renderStatusLine(entry);
  }
}

function updateCount() {
  const all = [...jobs.values()];
  els.empty.hidden = all.length > 0;
  if (!all.length) {
    els.count.textContent = "";
    return;
  }
  const counts = {};
  for (const entry of all) {
    if (!entry.gone) counts[entry.job.status] = (counts[entry.job.status] || 0) + 1;
  }
  const parts = [`${fmt(all.length)} ${all.length === 1 ? "job" : "jobs"}`];
  for (const status of ["running", "queued"]) {
    if (counts[status]) parts.push(`${fmt(counts[status])} ${status}`);
  }
  els.count.textContent = parts.join(" · ");
}

function jobTitle(job) {
  if (job.task === "factorial" && job.input && Number.isInteger(job.input.n)) return `${fmt(job.input.n)}!`;
  return job.task;
}

function metaNodes(job) {
  const nodes = [];
  const add = (text, className) => {
    const span = document.createElement("span");
    span.textContent = text;
    if (className) span.className = className;
    nodes.push(span);
    return span;
  };
  if (job.task !== "factorial") add(JSON.stringify(job.input).slice(0, 80), "meta-input");
  const created = new Date(job.created_at);
  const time = add(`submitted ${formatTime(created)}`);
  time.title = created.toLocaleString();
  const id = add(`#${job.id.slice(0, 8)}`, "meta-id");
  id.title = `Job id ${job.id}`;
  return nodes;
}

function describe(job) {
  const title = jobTitle(job);
  const status = (STATUS_LABEL[job.status] || job.status).toLowerCase();
  if (job.status === "succeeded" && job.result && typeof job.result.digits === "number") {
    return `${title} ${status}: ${fmt(job.result.digits)} digits.`;
  }
  if (job.status === "failed" && job.error) return `${title} failed: ${job.error.message}`;
  return `${title} ${status}.`;
}

function announce(text) {
  els.announcer.textContent = text;
}

// ---- Formatting --------------------------------------------------------------

function since(timestamp) {
  const start = Date.parse(timestamp || "");
  return Number.isNaN(start) ? null : Math.max(0, (serverNow() - start) / 1000);
}

function formatSeconds(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  if (seconds < 1) return `${seconds.toFixed(2)} s`;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

function formatPercent(fraction) {
  const percent = Math.min(100, Math.max(0, fraction * 100));
  return percent > 0 && percent < 10 ? `${percent.toFixed(1)}%` : `${Math.floor(percent)}%`;
}

function formatBytes(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`;
  if (bytes < 1e9) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${(bytes / 1e9).toFixed(2)} GB`;
}

function formatTime(date) {
  const sameDay = date.toDateString() === new Date().toDateString();
  const options = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (!sameDay) Object.assign(options, { month: "short", day: "numeric" });
  return date.toLocaleString(undefined, options);
}

// ---- Actions -------------------------------------------------------------------

/** Digits, optionally grouped by thousands ("1,000,000", "1 000 000", "1_000_000"). */
function parseN(raw) {
  const text = raw.trim();
  const message = `Enter a whole number from 0 to ${fmt(maxN)}.`;
  if (!text) return { error: message };
  let digits = null;
  if (/^\d+$/.test(text)) digits = text;
  else if (/^\d{1,3}([,._'\s\u00a0\u202f]\d{3})+$/.test(text)) digits = text.replace(/\D/g, "");
  if (digits === null) return { error: message };
  const n = digits.length > 15 ? Infinity : Number(digits);
  if (n > maxN) return { error: `n can be at most ${fmt(maxN)} on this server.` };
  return { n };
}

function showFieldError(message) {
  els.fieldError.textContent = message;
  els.fieldError.hidden = !message;
  els.input.setAttribute("aria-invalid", message ? "true" : "false");
}

let submitting = false;

async function onSubmit(event) {
  event.preventDefault();
  if (submitting) return;
  const { n, error } = parseN(els.input.value);
  if (error) {
    showFieldError(error);
    els.input.focus();
    return;
  }
  showFieldError("");
  submitting = true;
  els.submit.setAttribute("aria-busy", "true");
  try {
    const job = await api("/v1/jobs", { method: "POST", body: { task: "factorial", input: { n } } });
    rememberJob(job.id);
    applyHttp(job);
    socket.subscribe([job.id]);
  } catch (failure) {
    showFieldError(failure.message);
  } finally {
    submitting = false;
    els.submit.removeAttribute("aria-busy");
  }
}

async function cancelJob(entry) {
  if (entry.cancelling || isFinished(entry)) return;
  entry.cancelling = true;
  render(entry);
  try {
    applyHttp(await api(`/v1/jobs/${entry.job.id}/cancel`, { method: "POST" }));
  } catch (failure) {
    entry.cancelling = false;
    if (failure.type === "already_finished") {
      // It finished first; the socket brings its final state, or this does.
      api(`/v1/jobs/${entry.job.id}`).then(applyHttp, () => {});
    } else {
      announce(`Could not cancel ${jobTitle(entry.job)}: ${failure.message}`);
    }
    render(entry);
  }
}

async function loadTasks() {
  const data = await api("/v1/tasks");
  for (const task of data.tasks || []) formatsByTask.set(task.name, task.result_formats || []);
  const factorial = (data.tasks || []).find((task) => task.name === "factorial");
  const limit =
    factorial && ((factorial.limits && factorial.limits.max_n) ?? factorial.input_schema?.properties?.n?.maximum);
  if (Number.isSafeInteger(limit)) {
    maxN = limit;
    els.maxN.textContent = fmt(limit);
    for (const chip of els.presets) chip.hidden = Number(chip.dataset.n) > limit;
  }
  // Cards drawn before the catalogue came may lack a task's formats.
  for (const entry of jobs.values()) {
    entry.downloadsFor = null;
    render(entry);
  }
}

/** Fetch the stored jobs that have no card yet; one that answers 404 (deleted,
 * expired, or another key's) is dropped from the list for good. */
async function loadJobs() {
  const generation = jobsGeneration;
  const ids = storedIds().filter((id) => !jobs.has(id));
  const answers = await Promise.allSettled(ids.map((id) => api(`/v1/jobs/${encodeURIComponent(id)}`)));
  if (generation !== jobsGeneration) return;
  const fresh = [];
  let failure = null;
  answers.forEach((answer, index) => {
    if (answer.status === "fulfilled") {
      const known = jobs.has(answer.value.id);
      const entry = applyHttp(answer.value);
      if (!known && !isFinished(entry)) fresh.push(entry.job.id);
    } else if (answer.reason.status === 404) {
      forgetJob(ids[index]);
    } else {
      failure = failure || answer.reason;
    }
  });
  listStale = failure !== null;
  socket.subscribe(fresh);
  if (failure) throw failure;
  if (!jobs.size) els.empty.textContent = "No jobs from this browser yet. Submit one above and it appears here, live.";
}

async function refresh() {
  listStale = true;
  const [, listed] = await Promise.allSettled([loadTasks(), loadJobs()]);
  if (listed.status === "rejected" && listed.reason.status !== 401 && !jobs.size) {
    els.empty.textContent = `Could not load this browser's jobs: ${listed.reason.message}`;
  }
  if (!authPending) socket.start();
}

function boot() {
  els.keyStatus.hidden = !currentKey();
  els.form.addEventListener("submit", onSubmit);
  els.input.addEventListener("input", () => {
    if (!els.fieldError.hidden) showFieldError("");
  });
  for (const chip of els.presets) {
    chip.addEventListener("click", () => {
      els.input.value = chip.dataset.n;
      showFieldError("");
      els.input.focus();
    });
  }
  els.keyForm.addEventListener("submit", onKeySubmit);
  els.forgetKey.addEventListener("click", onForgetKey);
  window.addEventListener("online", () => socket.retryNow());
  // A job submitted in another tab of this browser shows here too.
  window.addEventListener("storage", (event) => {
    if (event.key === jobsStorageName()) loadJobs().catch(() => {});
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") socket.retryNow();
  });
  setInterval(tick, TICK_MS);
  updateCount();
  refresh();
}

boot();
