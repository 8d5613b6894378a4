// factq's page: submit jobs of any task the server runs and follow them live
// over one WebSocket.
//
// The form is built from the task catalogue (`GET /v1/tasks`): a field for each
// property of the chosen task's input schema. Until the catalogue comes (or when
// it cannot), the factorial's form is there, as the server always runs it.
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
const FORMAT_LABEL = { decimal: "Decimal", hex: "Hex", json: "JSON", f32: "float32" };
// File name endings of the formats known here; any other is `.<format>`.
const FORMAT_EXTENSION = { decimal: ".txt", hex: ".hex.txt", json: ".json", f32: ".f32", text: ".txt" };
const DEFAULT_TASK = "factorial";
// The factorial as the server has always described it: the form until the
// catalogue says otherwise.
const FALLBACK_TASK = {
  name: DEFAULT_TASK,
  description: "n!, exact, as decimal and hexadecimal digits.",
  input_schema: {
    type: "object",
    properties: { n: { type: "integer", minimum: 0, maximum: 1_000_000 } },
    required: ["n"],
  },
  limits: { max_n: 1_000_000 },
  result_formats: ["decimal", "hex"],
};
// What a schema cannot say: how the page has always shown the factorial's n.
const FIELD_EXTRAS = {
  "factorial.n": { note: "compute n!", suffix: "!", value: "1000000", presets: [1000, 100000, 1000000] },
};
// The generic summary shows this many of its keys, each value this long at most.
const SUMMARY_KEYS = 20;
const SUMMARY_VALUE_CHARS = 200;
// Hexadecimal digits per decimal digit: log(10) / log(16).
const HEX_PER_DECIMAL = Math.log(10) / Math.log(16);

const byId = (id) => document.getElementById(id);
const els = {
  form: byId("submit-form"),
  taskPicker: byId("task-picker"),
  taskSelect: byId("task-select"),
  taskDescription: byId("task-description"),
  fields: byId("task-fields"),
  actions: byId("form-actions"),
  formError: byId("form-error"),
  submit: byId("submit-button"),
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
/** name -> the task as the catalogue describes it; the factorial until it comes. */
const tasks = new Map([[DEFAULT_TASK, FALLBACK_TASK]]);
const formatsByTask = new Map([[DEFAULT_TASK, FALLBACK_TASK.result_formats]]);
/** The chosen task's fields: {spec, el, control, error, read()} each. */
let fields = [];
/** What was typed into each task's fields, kept across a change of task. */
const drafts = new Map();
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
  constructor(status, type, message, details = []) {
    super(message);
    this.status = status;
    this.type = type;
    // `[{loc: "input.n", message}, ...]` for an input the server refused.
    this.details = Array.isArray(details) ? details : [];
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
      error && error.details,
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
      vector: part(".vector"),
      vectorValues: part(".vector-values"),
      vectorNote: part(".vector-note"),
      summary: part(".summary"),
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
  const kind = summaryKind(result);
  parts.digits.hidden = kind !== "digits";
  parts.vector.hidden = kind !== "embedding";
  parts.summary.hidden = kind !== "other";
  parts.digitsCount.hidden = kind === "other";
  if (kind === "digits") {
    parts.digitsCount.textContent = `${fmt(result.digits)} ${result.digits === 1 ? "digit" : "digits"}`;
    renderDigits(parts, result.head, result.tail || "", result.digits);
  } else if (kind === "embedding") {
    renderEmbedding(parts, result);
  } else {
    renderSummary(parts, result);
  }
  if (entry.downloadsFor !== result.url) {
    entry.downloadsFor = result.url;
    parts.downloads.replaceChildren(...downloadLinks(job));
  }
}

/** How to show a summary: a factorial's digits, an embedding's vectors, or any other's keys. */
function summaryKind(result) {
  if (typeof result.digits === "number" && typeof result.head === "string") return "digits";
  const { dimension, count, first } = result;
  if (Number.isInteger(dimension) && Number.isInteger(count) && Array.isArray(first)) return "embedding";
  return "other";
}

/** The vectors' count and size, and the first values of the first one, rounded. */
function renderEmbedding(parts, { dimension, count, first }) {
  const vectors = `${fmt(count)} ${count === 1 ? "vector" : "vectors"}`;
  parts.digitsCount.textContent = `${vectors} of ${fmt(dimension)} ${dimension === 1 ? "dimension" : "dimensions"}`;
  const values = first.map(formatComponent);
  const more = dimension > values.length;
  parts.vectorValues.textContent = `[${values.join(", ")}${more ? ", …" : ""}]`;
  parts.vectorValues.hidden = !values.length;
  const shown = more ? `the first ${fmt(values.length)} of its ${fmt(dimension)} values` : "its values";
  parts.vectorNote.textContent = count > 0 ? `The first vector, ${shown}` : "No vectors";
  parts.vector.setAttribute("aria-label", `${parts.vectorNote.textContent}: ${values.join(", ")}`);
}

/** Any other task's summary: each key and its value, as they come. */
function renderSummary(parts, result) {
  const entries = Object.entries(result).filter(([key]) => key !== "url");
  const nodes = [];
  for (const [key, value] of entries.slice(0, SUMMARY_KEYS)) {
    const term = document.createElement("dt");
    term.textContent = key;
    const detail = document.createElement("dd");
    detail.textContent = formatSummaryValue(value);
    nodes.push(term, detail);
  }
  if (entries.length > SUMMARY_KEYS) {
    const term = document.createElement("dt");
    term.textContent = "…";
    const detail = document.createElement("dd");
    detail.textContent = `${fmt(entries.length - SUMMARY_KEYS)} more`;
    nodes.push(term, detail);
  }
  parts.summary.replaceChildren(...nodes);
  parts.summary.hidden = !nodes.length;
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
  const known = formatsByTask.get(job.task);
  const formats = known && known.length ? known : [null];
  return formats.map((name, index) => {
    const link = document.createElement("a");
    link.className = "button download";
    // The first format is the task's default: the plain result URL.
    link.href = index === 0 ? job.result.url : `${job.result.url}?format=${encodeURIComponent(name)}`;
    link.download = fileName(job, name);
    const label = FORMAT_LABEL[name] || (name ? name[0].toUpperCase() + name.slice(1) : "Result");
    const size = downloadSize(job.result, name);
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

/** The file's size where the summary tells it: digits, or float32 vectors. */
function downloadSize(result, format) {
  const { digits, dimension, count } = result;
  if (typeof digits === "number" && format === "decimal") return formatBytes(digits);
  if (typeof digits === "number" && format === "hex") return `≈${formatBytes(Math.ceil(digits * HEX_PER_DECIMAL))}`;
  if (Number.isInteger(dimension) && Number.isInteger(count) && format === "f32") {
    return formatBytes(dimension * count * 4);
  }
  return "";
}

function fileName(job, format) {
  const base = job.task === "factorial" && job.input ? `${job.input.n}-factorial` : `${job.task}-${job.id.slice(0, 8)}`;
  if (!format) return `${base}.txt`;
  return base + (FORMAT_EXTENSION[format] || `.${format}`);
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
  if (job.status === "succeeded" && job.result && summaryKind(job.result) === "embedding") {
    return `${title} ${status}: ${fmt(job.result.count)} vectors of ${fmt(job.result.dimension)} dimensions.`;
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

/** One value of a vector: four decimals show its shape without a wall of digits. */
function formatComponent(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  const rounded = value.toFixed(4);
  // No "-0.0000" for a tiny negative.
  return Number(rounded) === 0 ? "0.0000" : rounded;
}

function formatSummaryValue(value) {
  if (typeof value === "string") return value.slice(0, SUMMARY_VALUE_CHARS);
  if (typeof value === "number") return Number.isInteger(value) ? fmt(value) : String(Number(value.toPrecision(6)));
  const text = JSON.stringify(value);
  return text.length > SUMMARY_VALUE_CHARS ? `${text.slice(0, SUMMARY_VALUE_CHARS - 1)}…` : text;
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

// ---- The form -----------------------------------------------------------------

/** The catalogue's tasks in the select, the factorial first, and the chosen one's form. */
function showTasks(list) {
  const ordered = [...list].sort((a, b) => (b.name === DEFAULT_TASK) - (a.name === DEFAULT_TASK));
  tasks.clear();
  for (const task of ordered) {
    tasks.set(task.name, task);
    formatsByTask.set(task.name, Array.isArray(task.result_formats) ? task.result_formats : []);
  }
  const chosen = tasks.has(formTask) ? formTask : ordered[0].name;
  els.taskSelect.replaceChildren(...ordered.map((task) => new Option(task.name, task.name)));
  els.taskSelect.value = chosen;
  // One task is no choice: the form is simply its form.
  els.taskPicker.hidden = tasks.size < 2;
  chooseTask(chosen);
}

let formTask = DEFAULT_TASK;

function chooseTask(name) {
  saveDraft();
  const task = tasks.get(name) || FALLBACK_TASK;
  formTask = task.name;
  const about = [];
  if (typeof task.description === "string" && task.description) about.push(task.description);
  if (task.consumers === 0) about.push("No worker serves it now: its jobs wait until one does.");
  els.taskDescription.textContent = about.join(" ");
  els.taskDescription.hidden = !about.length;
  buildFields(task);
}

function saveDraft() {
  if (fields.length) drafts.set(formTask, Object.fromEntries(fields.map((field) => [field.spec.name, field.value()])));
}

/** A field for each property of the task's input; the typed values, and the focus, kept. */
function buildFields(task) {
  const focused = fields.find((field) => field.control === document.activeElement);
  const draft = drafts.get(task.name) || {};
  els.fields.replaceChildren();
  fields = fieldSpecs(task).map((spec) => createField(spec, draft[spec.name]));
  els.fields.append(...fields.map((field) => field.el));
  // One line to fill: the button beside it, as the factorial's form has always
  // had it; otherwise under the fields.
  const row = fields.length === 1 ? fields[0].row : null;
  (row || els.actions).append(els.submit);
  els.actions.hidden = Boolean(row);
  showFormError("");
  const again = focused && fields.find((field) => field.spec.name === focused.spec.name);
  if (again) again.control.focus();
}

/** What the form needs to know of each property of the task's input schema. */
function fieldSpecs(task) {
  const schema = (task.input_schema && typeof task.input_schema === "object" && task.input_schema) || {};
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const limits = (task.limits && typeof task.limits === "object" && task.limits) || {};
  return Object.entries(schema.properties || {}).map(([name, raw]) => {
    const prop = resolveSchema(schema, raw);
    const spec = {
      name,
      prop,
      kind: fieldKind(schema, prop),
      required: required.has(name),
      extras: FIELD_EXTRAS[`${task.name}.${name}`] || {},
    };
    // A deployment's limit (`max_n` for `n`, say) is the one that applies.
    const limit = limits[`max_${name}`];
    if (spec.kind === "integer") {
      spec.min = prop.minimum ?? (typeof prop.exclusiveMinimum === "number" ? Math.floor(prop.exclusiveMinimum) + 1 : undefined);
      spec.max = Number.isSafeInteger(limit)
        ? limit
        : prop.maximum ?? (typeof prop.exclusiveMaximum === "number" ? Math.ceil(prop.exclusiveMaximum) - 1 : undefined);
    } else if (spec.kind === "lines") {
      spec.minItems = prop.minItems;
      spec.maxItems = Number.isSafeInteger(limit) ? limit : prop.maxItems;
      spec.item = resolveSchema(schema, prop.items);
    }
    return spec;
  });
}

/** The schema of a property itself: through `$ref`s into `$defs`, and past an optional's `null`. */
function resolveSchema(root, node) {
  let current = node && typeof node === "object" ? node : {};
  for (let depth = 0; depth < 8; depth += 1) {
    const { $ref, anyOf, oneOf, ...rest } = current;
    if (typeof $ref === "string" && $ref.startsWith("#/$defs/")) {
      current = { ...((root.$defs || {})[$ref.slice("#/$defs/".length)] || {}), ...rest };
      continue;
    }
    const options = (anyOf || oneOf || []).filter((option) => option && option.type !== "null");
    if (options.length !== 1) return current;
    current = { ...options[0], ...rest };
  }
  return current;
}

function fieldKind(root, prop) {
  const type = Array.isArray(prop.type) ? prop.type.find((name) => name !== "null") : prop.type;
  if (type === "integer" || type === "number" || type === "boolean") return type;
  if (type === "string") return Array.isArray(prop.enum) && prop.enum.length ? "choice" : "string";
  if (type === "array" && resolveSchema(root, prop.items).type === "string") return "lines";
  // Objects, mixed arrays, anything else: typed as JSON.
  return "json";
}

/** Ids named after the property (`n-input`, `n-error`, `max-n`), unless the page uses them. */
function fieldIdBase(name) {
  const safe = name.replace(/[^A-Za-z0-9_-]/g, "_") || "field";
  const taken = [`${safe}-input`, `${safe}-hint`, `${safe}-error`, `max-${safe}`].some((id) => byId(id));
  return taken ? `field-${safe}` : safe;
}

function createField(spec, saved) {
  const { name, kind, extras, prop } = spec;
  const base = fieldIdBase(name);
  const el = document.createElement("div");
  el.className = "field";
  el.dataset.field = name;
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.id = `${base}-hint`;
  hint.append(...hintNodes(spec, base));
  hint.hidden = !hint.textContent;
  const error = document.createElement("p");
  error.className = "field-error";
  error.id = `${base}-error`;
  error.setAttribute("role", "alert");
  error.hidden = true;
  const initial = saved ?? extras.value ?? prop.default;

  let control;
  let row = null;
  if (kind === "boolean") {
    control = document.createElement("input");
    control.type = "checkbox";
    control.checked = initial === true;
    const label = document.createElement("label");
    label.className = "check";
    label.append(control, name);
    el.append(label);
  } else {
    const label = document.createElement("label");
    label.htmlFor = `${base}-input`;
    label.append(name);
    const note = extras.note || (spec.required ? "" : "optional");
    if (note) {
      const span = document.createElement("span");
      span.className = "label-note";
      span.textContent = ` (${note})`;
      label.append(span);
    }
    el.append(label);
    if (kind === "lines" || kind === "json") {
      control = document.createElement("textarea");
      control.rows = kind === "lines" ? 4 : 3;
      control.spellcheck = kind === "lines";
      if (typeof initial === "string") control.value = initial;
      else if (kind === "lines" && Array.isArray(initial)) control.value = initial.join("\n");
      else if (initial !== undefined) control.value = JSON.stringify(initial);
      el.append(control);
    } else if (kind === "choice") {
      control = document.createElement("select");
      const options = prop.enum.map((value, index) => new Option(String(value), String(index)));
      if (!spec.required) options.unshift(new Option("—", ""));
      control.append(...options);
      const index = prop.enum.findIndex((value) => String(value) === String(initial));
      control.value = index >= 0 ? String(index) : control.options[0].value;
      el.append(control);
    } else {
      control = document.createElement("input");
      control.type = "text";
      control.autocomplete = "off";
      control.spellcheck = false;
      if (kind === "integer") control.inputMode = "numeric";
      if (kind === "number") control.inputMode = "decimal";
      if (initial !== undefined && initial !== null) control.value = String(initial);
      const wrap = document.createElement("div");
      wrap.className = "input-wrap";
      wrap.append(control);
      if (extras.suffix) {
        control.classList.add("has-suffix");
        const suffix = document.createElement("span");
        suffix.className = "input-suffix";
        suffix.setAttribute("aria-hidden", "true");
        suffix.textContent = extras.suffix;
        wrap.append(suffix);
      }
      row = document.createElement("div");
      row.className = "field-row";
      row.append(wrap);
      el.append(row);
    }
  }
  control.id = `${base}-input`;
  control.name = name;
  control.required = spec.required;
  control.setAttribute("aria-describedby", `${hint.id} ${error.id}`);
  el.append(hint, error);

  const field = {
    spec,
    el,
    control,
    error,
    row,
    value: () => (kind === "boolean" ? control.checked : control.value),
    read: () => readField(spec, control),
  };
  if (Array.isArray(extras.presets)) el.append(presetChips(field));
  return field;
}

/** The field's hint: what it takes, from the schema. */
function hintNodes(spec, base) {
  const { kind, prop } = spec;
  const nodes = [];
  if (kind === "integer") {
    const max = document.createElement("span");
    max.id = `max-${base}`;
    max.textContent = spec.max === undefined ? "" : fmt(spec.max);
    if (spec.min !== undefined && spec.max !== undefined) nodes.push(`A whole number from ${fmt(spec.min)} to `, max, ".");
    else if (spec.max !== undefined) nodes.push("A whole number up to ", max, ".");
    else if (spec.min !== undefined) nodes.push(`A whole number, at least ${fmt(spec.min)}.`);
    else nodes.push("A whole number.");
  } else if (kind === "number") {
    nodes.push(`${capitalize(numberRange(prop))}.`);
  } else if (kind === "lines") {
    let text = "One per line; blank lines are left out.";
    if (spec.maxItems !== undefined) text += ` At most ${fmt(spec.maxItems)} ${spec.maxItems === 1 ? "line" : "lines"}.`;
    nodes.push(text);
  } else if (kind === "json") {
    nodes.push("As JSON.");
  }
  // Numbers say their range already; the factorial's description says no more.
  const isRange = kind === "integer" || kind === "number";
  if (typeof prop.description === "string" && prop.description && !isRange) nodes.push(` ${prop.description}`);
  if (!spec.required && prop.default !== undefined && prop.default !== null && kind !== "boolean") {
    nodes.push(` Default: ${typeof prop.default === "string" ? prop.default : JSON.stringify(prop.default)}.`);
  }
  if (nodes.length && typeof nodes[0] === "string") nodes[0] = nodes[0].trimStart();
  return nodes;
}

function presetChips(field) {
  const group = document.createElement("div");
  group.className = "presets";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Example values of ${field.spec.name}`);
  const label = document.createElement("span");
  label.className = "presets-label";
  label.setAttribute("aria-hidden", "true");
  label.textContent = "Try";
  group.append(label);
  for (const value of field.spec.extras.presets) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.textContent = fmt(value);
    chip.hidden = field.spec.max !== undefined && value > field.spec.max;
    chip.addEventListener("click", () => {
      field.control.value = String(value);
      showFieldError(field, "");
      field.control.focus();
    });
    group.append(chip);
  }
  return group;
}

/** The field's value for the input: `{value}`, `{omit: true}` when left empty and
 * optional, or `{error}` saying what to change. */
function readField(spec, control) {
  const { kind, name, prop } = spec;
  if (kind === "boolean") return { value: control.checked };
  if (kind === "choice") {
    if (control.value === "") return spec.required ? { error: `Choose ${name}.` } : { omit: true };
    return { value: prop.enum[Number(control.value)] };
  }
  const raw = control.value;
  if (kind === "lines") return readLines(spec, raw);
  if (!raw.trim() && kind !== "string") {
    return spec.required ? { error: emptyMessage(spec) } : { omit: true };
  }
  if (kind === "integer") return readWhole(spec, raw);
  if (kind === "number") return readNumber(spec, raw);
  if (kind === "json") {
    try {
      return { value: JSON.parse(raw) };
    } catch (error) {
      return { error: `Enter ${name} as JSON (${error.message}).` };
    }
  }
  if (!raw) return spec.required ? { error: `Enter ${name}.` } : { omit: true };
  if (typeof prop.maxLength === "number" && raw.length > prop.maxLength) {
    return { error: `${name} can be at most ${fmt(prop.maxLength)} characters.` };
  }
  return { value: raw };
}

function emptyMessage(spec) {
  if (spec.kind === "integer") return `Enter ${wholeRange(spec)}.`;
  if (spec.kind === "number") return `Enter ${numberRange(spec.prop)}.`;
  return `Enter ${spec.name}.`;
}

function wholeRange({ min, max }) {
  if (min !== undefined && max !== undefined) return `a whole number from ${fmt(min)} to ${fmt(max)}`;
  if (max !== undefined) return `a whole number up to ${fmt(max)}`;
  if (min !== undefined) return `a whole number of at least ${fmt(min)}`;
  return "a whole number";
}

/** Digits, optionally grouped by thousands ("1,000,000", "1 000 000", "1_000_000"). */
function readWhole(spec, raw) {
  const text = raw.trim();
  const message = `Enter ${wholeRange(spec)}.`;
  const signed = spec.min === undefined || spec.min < 0;
  const sign = signed && text.startsWith("-") ? -1 : 1;
  const unsigned = sign < 0 ? text.slice(1) : text;
  let digits = null;
  if (/^\d+$/.test(unsigned)) digits = unsigned;
  else if (/^\d{1,3}([,._'\s\u00a0\u202f]\d{3})+$/.test(unsigned)) digits = unsigned.replace(/\D/g, "");
  if (digits === null) return { error: message };
  const value = digits.length > 15 ? sign * Infinity : sign * Number(digits);
  if (spec.max !== undefined && value > spec.max) return { error: `${spec.name} can be at most ${fmt(spec.max)} on this server.` };
  if (spec.min !== undefined && value < spec.min) return { error: `${spec.name} must be at least ${fmt(spec.min)}.` };
  if (!Number.isSafeInteger(value)) return { error: message };
  return { value };
}

function numberRange(prop) {
  const low = prop.minimum ?? prop.exclusiveMinimum;
  const high = prop.maximum ?? prop.exclusiveMaximum;
  if (typeof low === "number" && typeof high === "number") return `a number from ${low} to ${high}`;
  if (typeof high === "number") return `a number up to ${high}`;
  if (typeof low === "number") return `a number of at least ${low}`;
  return "a number";
}

function readNumber(spec, raw) {
  const { prop } = spec;
  const text = raw.trim();
  const value = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text) ? Number(text) : NaN;
  const inRange =
    Number.isFinite(value) &&
    !(typeof prop.minimum === "number" && value < prop.minimum) &&
    !(typeof prop.maximum === "number" && value > prop.maximum) &&
    !(typeof prop.exclusiveMinimum === "number" && value <= prop.exclusiveMinimum) &&
    !(typeof prop.exclusiveMaximum === "number" && value >= prop.exclusiveMaximum);
  return inRange ? { value } : { error: `Enter ${numberRange(prop)}.` };
}

/** One string a line, blank lines left out. */
function readLines(spec, raw) {
  const lines = raw.split(/\r?\n/).filter((line) => line.trim());
  const least = Math.max(spec.minItems || 0, spec.required ? 1 : 0);
  if (!lines.length && !spec.required) return { omit: true };
  if (lines.length < least) {
    return { error: least === 1 ? "Enter at least one line." : `Enter at least ${fmt(least)} lines.` };
  }
  if (spec.maxItems !== undefined && lines.length > spec.maxItems) {
    return { error: `At most ${fmt(spec.maxItems)} lines: this has ${fmt(lines.length)}.` };
  }
  const longest = spec.item && spec.item.maxLength;
  const tooLong = typeof longest === "number" ? lines.findIndex((line) => line.length > longest) : -1;
  if (tooLong >= 0) return { error: `Line ${fmt(tooLong + 1)} is longer than ${fmt(longest)} characters.` };
  return { value: lines };
}

function showFieldError(field, message) {
  field.error.textContent = message;
  field.error.hidden = !message;
  field.control.setAttribute("aria-invalid", message ? "true" : "false");
}

function showFormError(message) {
  els.formError.textContent = message;
  els.formError.hidden = !message;
}

/** The field a refusal names (`input.n`), else the only one; null for the form as a whole. */
function fieldForError(failure) {
  const loc = (failure.details[0] && failure.details[0].loc) || "";
  const [root, name] = String(loc).split(".");
  const named = root === "input" && fields.find((field) => field.spec.name === name);
  if (named) return named;
  return fields.length === 1 && failure.status === 422 ? fields[0] : null;
}

function capitalize(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

// ---- Actions -------------------------------------------------------------------

let submitting = false;

async function onSubmit(event) {
  event.preventDefault();
  if (submitting) return;
  for (const field of fields) showFieldError(field, "");
  showFormError("");
  const input = {};
  for (const field of fields) {
    const answer = field.read();
    if (answer.error) {
      showFieldError(field, answer.error);
      field.control.focus();
      return;
    }
    if (!answer.omit) input[field.spec.name] = answer.value;
  }
  submitting = true;
  els.submit.setAttribute("aria-busy", "true");
  try {
    const job = await api("/v1/jobs", { method: "POST", body: { task: formTask, input } });
    rememberJob(job.id);
    applyHttp(job);
    socket.subscribe([job.id]);
  } catch (failure) {
    const field = fieldForError(failure);
    if (field) showFieldError(field, failure.message);
    else showFormError(failure.message);
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
  const listed = Array.isArray(data && data.tasks) ? data.tasks : [];
  const valid = listed.filter((task) => task && typeof task.name === "string" && task.name);
  if (valid.length) showTasks(valid);
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
  els.fields.addEventListener("input", (event) => {
    const field = fields.find((each) => each.control === event.target);
    if (field && !field.error.hidden) showFieldError(field, "");
  });
  els.taskSelect.addEventListener("change", () => chooseTask(els.taskSelect.value));
  // What was typed before this script ran is kept: the page's own factorial field.
  const typed = byId("n-input");
  if (typed) drafts.set(DEFAULT_TASK, { n: typed.value });
  showTasks([FALLBACK_TASK]);
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
