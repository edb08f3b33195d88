// jobtrail web page: a job list and a job's live log. No build step, no dependencies.
// Every piece of job data reaches the page through textContent, never as markup, and the
// server's Content-Security-Policy allows no script but this file.
"use strict";

(() => {
  const WINDOW = 2000; // newest log lines kept in the page while following
  const MAX_LINES = 20000; // with "load older", never more than this many
  const OLDER_PAGE = 2000;
  const STATUSES = new Set(["pending", "running", "completed", "failed", "cancelled"]);
  const LEVELS = new Set(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]);
  const MASK = "********"; // what the server shows for a secret value (it never stores them)
  const SECRET = /pass(word|wd|phrase)?|secret|token|api_?key|private_?key|credential|auth/i;
  const JOB_HASH = /^#\/jobs\/([a-z][a-z0-9_]{0,47}-[0-9a-f]{12})$/;
  const FAILURE_ORDER = ["play", "task", "host", "message", "rc", "stderr", "stdout"];

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const statusClass = (s) => (STATUSES.has(s) ? `st-${s}` : "st-unknown");

  // A running job whose cancel was asked for is still running until its process tree is gone
  // (cancel_requested in the job JSON): it reads "cancelling…", so nobody asks twice.
  function statusBadge(job, badge = el("span")) {
    const cancelling = job.status === "running" && job.cancel_requested === true;
    badge.className = `status ${cancelling ? "st-cancelling" : statusClass(job.status)}`;
    badge.textContent = cancelling ? "cancelling…" : String(job.status);
    return badge;
  }
  const levelClass = (l) => (LEVELS.has(l) ? `lv-${l}` : "lv-INFO");

  function setConn(text) {
    $("conn").textContent = text;
  }

  // -- the API, with a token prompt on 401 ---------------------------------------------
  let tokenWaiters = null;

  function askToken(message) {
    if (tokenWaiters === null) {
      tokenWaiters = [];
      $("token-message").textContent = message;
      $("token-dialog").hidden = false;
      $("token").focus();
    }
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (!/^[\x21-\x7e]+$/.test(token) || /[;,"\\]/.test(token)) {
      $("token-message").textContent = "That does not look like a token (printable ASCII, no ; , \" or \\).";
      return;
    }
    const secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = `jobtrail_token=${token}; path=/; SameSite=Strict${secure}`;
    $("token").value = "";
    $("token-dialog").hidden = true;
    const waiters = tokenWaiters || [];
    tokenWaiters = null;
    waiters.forEach((resolve) => resolve());
  });

  async function api(path, options = {}) {
    let message = "This server wants a token: paste the one it was started with.";
    for (;;) {
      const response = await fetch(path, { credentials: "same-origin", ...options });
      if (response.status !== 401) return response;
      await askToken(message);
      message = "That token was refused; try again.";
    }
  }

  // a 4xx's detail: jobtrail's own sentence, or FastAPI's list of what failed validation
  function detailText(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail
        .map((d) => {
          const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "query" && p !== "body").join(".") : "";
          return where ? `${where}: ${d.msg}` : String(d.msg);
        })
        .join("; ");
    }
    return `HTTP ${status}`;
  }

  async function apiJSON(path, options) {
    const response = await api(path, options);
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const err = new Error(detailText(body, response.status));
      err.status = response.status;
      throw err;
    }
    return body;
  }

  // -- small formatting helpers ---------------------------------------------------------
  function age(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h`;
    return `${Math.floor(s / 86400)} d`;
  }

  // Times arrive as UTC ISO 8601 ("…T12:00:00.123456Z"); a person reads them in the browser's
  // zone, with the zone named, so a time copied from the page still says which it is.
  const ZONED = new Intl.DateTimeFormat("en-US", {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
    hourCycle: "h23", timeZoneName: "short",
  });

  function parseTime(iso) {
    // Date.parse takes milliseconds at most, and reads a time without a zone as local
    const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,3})?\d*(Z|[+-]\d\d:?\d\d)?$/.exec(String(iso || ""));
    return m ? new Date(`${m[1]}${m[2] || ""}${m[3] || "Z"}`) : null;
  }

  function zonedParts(iso) {
    const when = parseTime(iso);
    if (!when || Number.isNaN(when.getTime())) return null;
    const p = {};
    for (const { type, value } of ZONED.formatToParts(when)) p[type] = value;
    return {
      date: `${p.year}-${p.month}-${p.day}`,
      time: `${p.hour}:${p.minute}:${p.second}`,
      ms: p.fractionalSecond,
      zone: p.timeZoneName,
    };
  }

  // "2026-11-25 21:00:01 GMT+9": job times
  function localTime(iso) {
    const t = zonedParts(iso);
    return t ? `${t.date} ${t.time} ${t.zone}` : String(iso || "");
  }

  // "21:00:01.123 GMT+9": a log line's time (the date is in its tooltip)
  function shortTime(iso) {
    const t = zonedParts(iso);
    return t ? `${t.time}.${t.ms} ${t.zone}` : String(iso || "");
  }

  function progressBar(pct) {
    const bar = el("progress");
    bar.max = 100;
    bar.value = Number(pct) || 0;
    bar.title = `${Math.round(Number(pct) || 0)}%`;
    return bar;
  }

  function show(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  // -- the job list -------------------------------------------------------------------------
  function renderJobs(jobs) {
    const rows = jobs.map((job) => {
      const tr = el("tr");
      tr.dataset.jobId = job.job_id;
      const cell = (content) => {
        const td = el("td");
        if (content instanceof Node) td.append(content);
        else td.textContent = content === null || content === undefined ? "" : String(content);
        tr.append(td);
        return td;
      };
      cell(statusBadge(job));
      cell(job.job_type);
      const link = el("a", null, job.job_id);
      link.href = `#/jobs/${encodeURIComponent(job.job_id)}`;
      cell(link);
      cell(progressBar(job.progress));
      cell(job.current_step || "");
      cell(age(job.created_at)).title = localTime(job.created_at);
      cell(formatDuration(job.duration_s)).className = "duration";
      return tr;
    });
    $("jobs-body").replaceChildren(...rows);
    $("jobs-empty").hidden = jobs.length > 0;
  }

  let jobTypes = null;
  let playbooksAsked = false;

  // the playbooks the server has, offered as suggestions for ansible_playbook's playbook
  async function loadPlaybooks() {
    if (playbooksAsked) return;
    playbooksAsked = true;
    let body;
    try {
      body = await apiJSON("/api/playbooks");
    } catch (_) {
      return; // an older server, or none configured: the field stays a plain text field
    }
    const list = Array.isArray(body) ? body : (body && body.playbooks) || [];
    const names = list.map((p) => (typeof p === "string" ? p : p && (p.name || p.path))).filter(Boolean);
    $("playbook-list").replaceChildren(
      ...names.map((name) => {
        const option = el("option");
        option.value = String(name);
        return option;
      }),
    );
  }

  function kindOf(prop) {
    const options = prop.anyOf || prop.oneOf || [prop];
    const kinds = new Set();
    for (const option of options) {
      if (!option.type) return "json";
      (Array.isArray(option.type) ? option.type : [option.type]).forEach((k) => kinds.add(k));
    }
    kinds.delete("null");
    if (kinds.size === 1) {
      const [only] = kinds;
      if (["integer", "number", "boolean", "string"].includes(only)) return only;
    }
    return "json";
  }

  function renderParams() {
    const box = $("submit-params");
    box.replaceChildren();
    const type = (jobTypes || []).find((t) => t.name === $("submit-type").value);
    $("submit-desc").textContent = type ? type.description || "" : "";
    if (!type) return;
    const schema = type.params_schema || {};
    const required = new Set(schema.required || []);
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      const kind = kindOf(prop);
      const label = el("label", "param");
      label.append(el("span", "param-name", required.has(name) ? `${name} *` : name));
      const input = el("input");
      input.name = name;
      input.dataset.kind = kind;
      if (kind === "boolean") {
        input.type = "checkbox";
        input.checked = prop.default === true;
      } else {
        if (kind === "integer" || kind === "number") {
          input.type = "number";
          input.step = kind === "integer" ? "1" : "any";
        } else {
          input.type = SECRET.test(name) ? "password" : "text";
        }
        if (prop.default !== undefined && prop.default !== null) {
          input.placeholder = `default: ${show(prop.default)}`;
        } else if (kind === "json") {
          input.placeholder = 'JSON, e.g. ["a", "b"]';
        }
        input.required = required.has(name);
        if (type.name === "ansible_playbook" && name === "playbook") {
          input.setAttribute("list", "playbook-list");
          loadPlaybooks();
        }
      }
      label.append(input);
      if (prop.description) label.append(el("small", null, prop.description));
      box.append(label);
    }
  }

  async function loadTypes() {
    if (jobTypes !== null) return;
    try {
      jobTypes = await apiJSON("/api/job-types");
    } catch (err) {
      $("submit-error").textContent = `cannot load job types: ${err.message}`;
      return;
    }
    const select = $("submit-type");
    select.replaceChildren(
      ...jobTypes.map((t) => {
        const option = el("option", null, t.name);
        option.value = t.name;
        return option;
      }),
    );
    renderParams();
  }

  $("submit-type").addEventListener("change", renderParams);

  function submitLimits() {
    // the two optional fields; left empty, the job type's or the server's limits apply
    const limits = {};
    if ($("submit-memory").value !== "") limits.memory_mb = Number($("submit-memory").value);
    if ($("submit-timeout").value !== "") limits.timeout_s = Number($("submit-timeout").value);
    return limits;
  }

  $("submit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("submit-error").textContent = "";
    const params = {};
    for (const input of $("submit-params").querySelectorAll("input")) {
      const kind = input.dataset.kind;
      if (kind === "boolean") {
        params[input.name] = input.checked;
      } else if (input.value !== "") {
        if (kind === "integer" || kind === "number") params[input.name] = Number(input.value);
        else if (kind === "string") params[input.name] = input.value;
        else {
          try {
            params[input.name] = JSON.parse(input.value);
          } catch (_) {
            params[input.name] = input.value;
          }
        }
      }
    }
    try {
      const job = await apiJSON("/api/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ type: $("submit-type").value, params, ...submitLimits() }),
      });
      location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
    } catch (err) {
      $("submit-error").textContent = err.message;
    }
  });

  function showList() {
    $("job-view").hidden = true;
    $("list-view").hidden = false;
    document.title = "jobtrail";
    let stopped = false;
    let timer = null;
    const refresh = async () => {
      try {
        const listing = await apiJSON("/api/jobs?limit=100");
        if (!stopped) {
          renderJobs(listing.jobs);
          setConn("");
        }
      } catch (err) {
        setConn(`cannot list jobs: ${err.message}`);
      }
      if (!stopped) timer = setTimeout(refresh, 1000);
    };
    loadTypes();
    refresh();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  // -- one job: its head, failure digest, playbook tables, actions and live log --------------------
  const HALF_WINDOW = 1000; // lines loaded either side of a search match that is not on show
  const SEARCH_PAGE = 500; // matches asked for at a time (their seqs only: context=0)
  const PLAYBOOK_POLL = 1500; // ms between looks at a running playbook's hosts and tasks
  const SLOWEST = 10;
  const RECAP = ["ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"];
  const EXCEPTION_KEYS = new Set(["kind", "type", "message", "causes", "frame"]);

  const causeText = (c) => (c && typeof c === "object" ? [c.type, c.message].filter(Boolean).join(": ") : show(c));

  // the exception and its causes, outermost first, down to the root; the exception itself is
  // not repeated when `causes` starts with it
  function exceptionChain(failure) {
    const chain = [];
    if (failure.type || failure.message) chain.push({ type: failure.type, message: failure.message });
    for (const cause of Array.isArray(failure.causes) ? failure.causes : []) {
      const last = chain[chain.length - 1];
      if (last && cause && last.type === cause.type && last.message === cause.message) continue;
      chain.push(cause);
    }
    return chain;
  }

  function frameText(frame) {
    if (!frame || typeof frame !== "object") return "";
    let text = String(frame.file || "?");
    if (frame.line !== null && frame.line !== undefined) text += `:${frame.line}`;
    if (frame.function) text += ` in ${frame.function}`;
    return text;
  }

  function showFailure(job) {
    const box = $("failure");
    if (job.status !== "failed" || (!job.error && !job.failure)) {
      box.hidden = true;
      return;
    }
    $("failure-error").textContent = job.error || "";
    const fields = $("failure-fields");
    fields.replaceChildren();
    const failure = job.failure && typeof job.failure === "object" ? job.failure : {};
    const add = (key, label, content) => {
      const dd = el("dd");
      dd.dataset.key = key;
      if (content instanceof Node) dd.append(content);
      else dd.textContent = content;
      fields.append(el("dt", null, label), dd);
    };
    let skip = new Set();
    if (failure.kind === "exception") {
      // a Python exception: the root cause first, then the chain that led to it and where
      const chain = exceptionChain(failure);
      if (chain.length) add("root-cause", "root cause", causeText(chain[chain.length - 1]));
      if (chain.length > 1) {
        const list = el("ol", "causes");
        for (const cause of chain) list.append(el("li", null, causeText(cause)));
        add("causes", "chain", list);
      }
      if (failure.frame) add("frame", "where", frameText(failure.frame));
      skip = EXCEPTION_KEYS;
    }
    const keys = [
      ...FAILURE_ORDER.filter((k) => k in failure),
      ...Object.keys(failure).filter((k) => !FAILURE_ORDER.includes(k)),
    ];
    for (const key of keys) {
      const value = failure[key];
      if (skip.has(key) || value === null || value === undefined || value === "") continue;
      if (key === "hosts" && Array.isArray(value)) {
        add(key, key, value.map(String).join(", "));
      } else if (key === "stderr" || key === "stdout" || typeof value === "object") {
        add(key, key, el("pre", null, show(value)));
      } else {
        add(key, key, show(value));
      }
    }
    box.hidden = false;
  }

  function jobLinks(ids) {
    const dd = el("dd");
    ids.forEach((id, i) => {
      if (i) dd.append(", ");
      const link = el("a", null, id);
      link.href = `#/jobs/${encodeURIComponent(id)}`;
      dd.append(link);
    });
    return dd;
  }

  function renderMeta(job) {
    const meta = $("job-meta");
    meta.replaceChildren();
    const add = (key, value) => {
      if (value === null || value === undefined || value === "") return;
      meta.append(el("dt", null, key), el("dd", null, show(value)));
    };
    add("type", job.job_type);
    add("params", Object.keys(job.params || {}).length ? job.params : null);
    add("created", job.created_at && localTime(job.created_at));
    add("started", job.started_at && localTime(job.started_at));
    add("ended", job.completed_at && localTime(job.completed_at));
    if (job.rerun_of) meta.append(el("dt", null, "rerun of"), jobLinks([job.rerun_of]));
    if (Array.isArray(job.reruns) && job.reruns.length) meta.append(el("dt", null, "reruns"), jobLinks(job.reruns));
    if (job.status === "completed") add("result", job.result);
    if (job.records_dropped) add("records dropped", job.records_dropped);
    add("log note", job.log_note);
  }

  // the text of a field's value as `field=KEY:VALUE` compares it: a string as it is, any other
  // JSON scalar as its JSON text
  const fieldText = (value) => (typeof value === "string" ? value : JSON.stringify(value));

  function fieldChips(fields) {
    if (!fields || typeof fields !== "object") return null;
    const box = el("span", "fields");
    for (const [key, value] of Object.entries(fields)) {
      if (key === "…") {
        box.append(el("span", "chip cut", value)); // "N more fields cut"
        continue;
      }
      const text = fieldText(value);
      const chip = el("button", "chip", `${key}=${text}`);
      chip.type = "button";
      chip.dataset.key = key;
      chip.dataset.value = text;
      chip.title = `show only the lines with ${key}=${text}`;
      box.append(chip);
    }
    return box.childElementCount ? box : null;
  }

  const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  // what to mark inside a matching line; the server decides which lines match, so a pattern the
  // browser's RegExp reads differently from RE2 only loses the marks, never a match
  function markPattern(q, regex, ignoreCase) {
    try {
      return new RegExp(regex ? q : escapeRegExp(q), ignoreCase ? "gi" : "g");
    } catch (_) {
      return null;
    }
  }

  function formatDuration(seconds) {
    const s = Number(seconds);
    if (seconds === null || seconds === undefined || !Number.isFinite(s) || s < 0) return "";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 59.95) return `${s.toFixed(1)} s`;
    const pad = (n) => String(Math.floor(n)).padStart(2, "0");
    if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${pad((s % 3600) / 60)} min`;
  }

  function showJob(jobId) {
    $("list-view").hidden = true;
    $("job-view").hidden = false;
    document.title = `${jobId} · jobtrail`;
    const base = `/api/jobs/${encodeURIComponent(jobId)}`;
    const logEl = $("log");
    const listeners = new AbortController();
    const on = (id, type, fn) => $(id).addEventListener(type, fn, { signal: listeners.signal });

    let job = null; // the last job JSON
    const state = { status: "", cancel_requested: false }; // status events may omit the flag
    let source = null;
    let ended = false;
    let closed = false;
    let lastSeq = 0; // highest seq received: records at or below it are duplicates
    let pending = [];
    let paused = false;
    let pausedItems = [];
    let pausedDropped = 0;
    let flushTimer = null;
    let keep = WINDOW; // lines kept; grows with "load older"
    let retryTimer = null;
    let stopping = ""; // the server said it is stopping: kept on show while the page reconnects
    let fields = []; // [key, value] filters, from clicked field chips
    let detached = false; // showing the lines around a search match instead of following
    let missed = 0; // live lines that arrived while detached
    let durationBase = null;
    let durationAt = 0;
    let playbookTimer = null;
    let looking = false;
    let lookAgain = false;
    let playbookTicks = 0;
    let badHosts = []; // failed or unreachable in the host recap
    let searchTimer = null;
    let searchToken = 0;
    let stepping = false;
    const noSearch = () => ({ key: "", q: "", total: 0, seqs: [], set: new Set(), more: false, nextAfter: null, index: -1, pattern: null });
    let found = noSearch();

    $("job-title").textContent = jobId;
    $("job-status").textContent = "";
    $("job-step").textContent = "";
    $("job-percent").textContent = "";
    $("job-duration").textContent = "";
    $("job-meta").replaceChildren();
    $("failure").hidden = true;
    $("job-problem").hidden = true;
    $("action-error").hidden = true;
    $("rerun-secrets").hidden = true;
    $("rerun-secret-fields").replaceChildren();
    for (const id of ["cancel", "rerun", "rerun-failed"]) $(id).hidden = true;
    $("playbook").hidden = true;
    $("running-now").hidden = true;
    $("hosts-body").replaceChildren();
    $("tasks-body").replaceChildren();
    $("search").value = "";
    $("search-info").textContent = "";
    $("search-prev").disabled = true;
    $("search-next").disabled = true;
    $("field-filters").replaceChildren();
    $("pause").textContent = "Pause";
    $("pause").disabled = false;
    $("older").disabled = false;
    $("newest").hidden = true;
    logEl.replaceChildren();
    $("download").setAttribute("download", `${jobId}.log`);

    const problem = (text) => {
      $("job-problem").textContent = text;
      $("job-problem").hidden = false;
    };
    const actionError = (text) => {
      $("action-error").textContent = text;
      $("action-error").hidden = !text;
    };
    const active = () => state.status === "pending" || state.status === "running";

    // -- status, duration and the buttons -------------------------------------------------------
    function showDuration() {
      let seconds = durationBase;
      if (seconds !== null && state.status === "running") seconds += (performance.now() - durationAt) / 1000;
      $("job-duration").textContent = formatDuration(seconds);
    }
    const durationTimer = setInterval(showDuration, 1000);

    function updateStatus(update) {
      const changed = Boolean(update.status) && update.status !== state.status;
      if (update.status) state.status = update.status;
      if (typeof update.cancel_requested === "boolean") state.cancel_requested = update.cancel_requested;
      statusBadge(state, $("job-status"));
      $("job-progress").value = Number(update.progress) || 0;
      $("job-percent").textContent = `${Math.round(Number(update.progress) || 0)}%`;
      if (update.current_step !== undefined) $("job-step").textContent = update.current_step || "";
      if ("duration_s" in update) {
        durationBase = typeof update.duration_s === "number" ? update.duration_s : null;
        durationAt = performance.now();
      }
      showDuration();
      updateActions();
      // pending -> running: the job JSON has the start (and a playbook's tables begin)
      if (changed && job && job.status !== state.status && !("duration_s" in update)) refreshJob();
    }

    function failedHosts() {
      const failure = job && job.failure && typeof job.failure === "object" ? job.failure : {};
      const named = Array.isArray(failure.hosts) ? failure.hosts : failure.host ? [failure.host] : [];
      return [...new Set([...named.map(String), ...badHosts])];
    }

    function updateActions() {
      const cancel = $("cancel");
      cancel.hidden = !active();
      cancel.disabled = state.cancel_requested === true;
      cancel.textContent = state.cancel_requested ? "Cancelling…" : "Cancel";
      $("rerun").hidden = job === null || active();
      const playbook = job !== null && job.job_type === "ansible_playbook";
      $("rerun-failed").hidden = !(playbook && state.status === "failed" && failedHosts().length);
      $("rerun-failed").title = `rerun with limit ${failedHosts().join(",")}`;
    }

    on("cancel", "click", async () => {
      actionError("");
      $("cancel").disabled = true;
      try {
        updateStatus(await apiJSON(`${base}/cancel`, { method: "POST" }));
      } catch (err) {
        actionError(`cannot cancel: ${err.message}`);
        refreshJob();
      }
    });

    let rerunBody = {}; // what the last rerun asked for, sent again with the secrets filled in

    async function rerun(body, button) {
      actionError("");
      button.disabled = true;
      try {
        const next = await apiJSON(`${base}/rerun`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        location.hash = `#/jobs/${encodeURIComponent(next.job_id)}`;
      } catch (err) {
        actionError(`cannot rerun: ${err.message}`);
        if (err.status === 422 && !body.params) askSecrets(body);
      } finally {
        button.disabled = false;
      }
    }

    // the params whose values were masked (never stored): a secret itself gets a password
    // field; a value with a secret inside it is given again whole, as JSON
    function askSecrets(body) {
      const masked = Object.entries((job && job.params) || {}).filter(
        ([, value]) => value === MASK || JSON.stringify(value).includes(JSON.stringify(MASK)),
      );
      if (!masked.length) return;
      rerunBody = body;
      $("rerun-secret-fields").replaceChildren(
        ...masked.map(([key, value]) => {
          const label = el("label", "param");
          const input = el("input");
          input.name = key;
          input.required = true;
          if (value === MASK) {
            input.type = "password";
          } else {
            input.type = "text";
            input.dataset.kind = "json";
            input.value = JSON.stringify(value);
          }
          label.append(el("span", "param-name", key), input);
          return label;
        }),
      );
      $("rerun-secrets").hidden = false;
      $("rerun-secret-fields").querySelector("input").focus();
    }

    on("rerun-secrets", "submit", (ev) => {
      ev.preventDefault();
      const params = {};
      for (const input of $("rerun-secret-fields").querySelectorAll("input")) {
        if (input.dataset.kind !== "json") {
          params[input.name] = input.value;
          continue;
        }
        try {
          params[input.name] = JSON.parse(input.value);
        } catch (_) {
          actionError(`${input.name}: not JSON`);
          return;
        }
      }
      rerun({ ...rerunBody, params }, $("rerun-secrets-submit"));
    });
    on("rerun", "click", () => rerun({}, $("rerun")));
    on("rerun-failed", "click", () => rerun({ failed_hosts_only: true }, $("rerun-failed")));

    // -- a playbook's host recap, slowest tasks and what it is doing now --------------------------
    function renderHosts(rows) {
      badHosts = [];
      $("hosts-body").replaceChildren(
        ...rows.map((h) => {
          const tr = el("tr");
          tr.dataset.host = String(h.host);
          if (Number(h.failed) > 0 || Number(h.unreachable) > 0) {
            tr.className = "bad";
            badHosts.push(String(h.host));
          }
          tr.append(el("td", "host", h.host));
          for (const key of RECAP) {
            const n = Number(h[key]) || 0;
            const td = el("td", n ? `n k-${key}` : "n zero", n);
            td.dataset.key = key;
            tr.append(td);
          }
          return tr;
        }),
      );
      $("hosts-empty").hidden = rows.length > 0;
    }

    function renderSlowest(rows) {
      const done = rows.filter((t) => typeof t.duration_s === "number");
      done.sort((a, b) => b.duration_s - a.duration_s);
      $("tasks-body").replaceChildren(
        ...done.slice(0, SLOWEST).map((t) => {
          const tr = el("tr");
          const task = el("td", "task", t.task);
          task.title = `${t.play}: ${t.task}`;
          tr.append(task, el("td", "host", t.host), el("td", `task-status ts-${t.status}`, t.status), el("td", "n", formatDuration(t.duration_s)));
          return tr;
        }),
      );
      $("tasks-empty").hidden = done.length > 0;
    }

    function renderRunning(rows) {
      const byTask = new Map();
      for (const t of rows) {
        const key = `${t.play}: ${t.task}`;
        if (!byTask.has(key)) byTask.set(key, { hosts: [], since: Infinity });
        const entry = byTask.get(key);
        entry.hosts.push(String(t.host));
        const started = parseTime(t.started);
        if (started && !Number.isNaN(started.getTime())) entry.since = Math.min(entry.since, started.getTime());
      }
      $("running-list").replaceChildren(
        ...[...byTask].map(([task, { hosts, since }]) => {
          const li = el("li");
          li.append(el("span", "task", task), " on ", el("span", "hosts", hosts.join(", ")));
          if (Number.isFinite(since)) li.title = `for ${formatDuration(Math.max(0, Date.now() - since) / 1000)}`;
          return li;
        }),
      );
      $("running-now").hidden = byTask.size === 0;
    }

    async function lookAtPlaybook() {
      clearTimeout(playbookTimer);
      playbookTimer = null;
      if (looking) {
        lookAgain = true;
        return;
      }
      looking = true;
      const running = active();
      try {
        const full = !running || playbookTicks % 4 === 0; // all rows: now and then while it runs
        const [hosts, tasks, now] = await Promise.all([
          apiJSON(`${base}/hosts`),
          full ? apiJSON(`${base}/tasks`) : null,
          running ? apiJSON(`${base}/tasks?status=running`) : null,
        ]);
        if (closed) return;
        renderHosts(Array.isArray(hosts.hosts) ? hosts.hosts : []);
        if (tasks) renderSlowest(Array.isArray(tasks.tasks) ? tasks.tasks : []);
        renderRunning(now && Array.isArray(now.tasks) ? now.tasks : []);
        $("playbook").hidden = false;
        updateActions();
      } catch (err) {
        if (!closed && err.status !== 404) problem(`cannot read the playbook's hosts and tasks: ${err.message}`);
      } finally {
        looking = false;
      }
      playbookTicks += 1;
      if (closed) return;
      if (lookAgain) {
        lookAgain = false;
        lookAtPlaybook();
      } else if (active()) {
        playbookTimer = setTimeout(lookAtPlaybook, PLAYBOOK_POLL);
      }
    }

    // -- the log view -----------------------------------------------------------------------
    // the filters the view, its older pages, a search and the stream share
    function filterParams() {
      const params = new URLSearchParams({ level: $("level").value });
      for (const [key, value] of fields) params.append("field", `${key}:${value}`);
      return params;
    }

    function updateDownload() {
      const params = new URLSearchParams();
      if ($("level").value !== "DEBUG") params.set("level", $("level").value);
      for (const [key, value] of fields) params.append("field", `${key}:${value}`);
      if (found.q) {
        params.set("q", found.q);
        if (found.regex) params.set("regex", "true");
        if (found.ignoreCase) params.set("ignore_case", "true");
      }
      const query = params.toString();
      $("download").href = `${base}/logs/download${query ? `?${query}` : ""}`;
      $("download").textContent = query ? "Download the lines that match" : "Download whole log";
    }

    function info() {
      const n = logEl.childElementCount;
      let text = `${n} ${n === 1 ? "line" : "lines"}`;
      if (detached) text += ` around a match, not following${missed ? `: ${missed} new since` : ""}`;
      if (paused) text += ` · paused, ${pausedItems.length + pausedDropped} new`;
      $("log-info").textContent = text;
      if (found.q) searchButtons();
    }

    const lineAt = (seq) => logEl.querySelector(`.line[data-level][data-seq="${Number(seq)}"]`);

    function markMatch(node) {
      node.classList.add("match");
      const msg = node.querySelector(".msg");
      if (!msg || !found.pattern) return;
      const text = msg.textContent;
      const parts = [];
      let last = 0;
      for (const m of text.matchAll(found.pattern)) {
        if (!m[0]) continue;
        parts.push(text.slice(last, m.index), el("mark", null, m[0]));
        last = m.index + m[0].length;
        if (parts.length > 200) break;
      }
      if (parts.length) msg.replaceChildren(...parts, text.slice(last));
    }

    function clearMarks() {
      for (const node of logEl.querySelectorAll(".line.match")) {
        node.classList.remove("match", "current");
        const msg = node.querySelector(".msg");
        if (msg) msg.textContent = msg.textContent;
      }
    }

    function row(item) {
      let node;
      if (item.gap) {
        node = el("div", "line gap", `… records ${item.gap.from}–${item.gap.to} were removed by log rotation before they could be shown`);
        node.dataset.seq = String(item.gap.from);
      } else if (item.note) {
        node = el("div", "line note", item.note);
      } else {
        const r = item.record;
        node = el("div", `line ${levelClass(r.level)}`);
        node.dataset.seq = String(r.seq);
        node.dataset.level = String(r.level);
        let text = String(r.message === undefined ? "" : r.message);
        if (r.exc_text) text += `\n${r.exc_text}`;
        const body = el("span", "body");
        body.append(el("span", "msg", text));
        const chips = fieldChips(r.fields);
        if (chips) body.append(chips);
        node.append(el("span", "ts", shortTime(r.timestamp)), el("span", "lvl", r.level), el("span", "logger", r.logger), body);
        node.title = `seq ${r.seq} · ${localTime(r.timestamp)} · ${r.timestamp}`;
        if (found.set.has(Number(r.seq))) markMatch(node);
      }
      return node;
    }

    function atBottom() {
      return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
    }

    function flush() {
      flushTimer = null;
      if (closed || paused || detached) return;
      let items = pending;
      pending = [];
      if (!items.length) return;
      const stick = atBottom();
      if (items.length > keep) items = items.slice(items.length - keep);
      const fragment = document.createDocumentFragment();
      for (const item of items) fragment.append(row(item));
      logEl.append(fragment);
      let extra = logEl.childElementCount - keep;
      while (extra-- > 0) logEl.firstElementChild.remove();
      if (stick) logEl.scrollTop = logEl.scrollHeight;
      info();
    }

    function queue(item) {
      if (detached) {
        missed += 1;
        if (missed % 100 === 1) info();
        return;
      }
      if (paused) {
        pausedItems.push(item);
        if (pausedItems.length > WINDOW) {
          pausedDropped += pausedItems.length - WINDOW;
          pausedItems = pausedItems.slice(pausedItems.length - WINDOW);
        }
        if (pausedItems.length % 100 === 1) info();
        return;
      }
      pending.push(item);
      if (flushTimer === null) flushTimer = setTimeout(flush, 60);
    }

    function closeSource() {
      if (source) source.close();
      source = null;
      clearTimeout(retryTimer);
    }

    function openStream() {
      closeSource();
      if (closed || ended) return;
      const params = filterParams();
      if (lastSeq > 0) params.set("after", String(lastSeq));
      else params.set("tail", String(WINDOW));
      const es = new EventSource(`${base}/logs/stream?${params}`);
      source = es;
      es.onopen = () => {
        stopping = "";
        setConn(ended ? "" : "live");
      };
      es.addEventListener("record", (ev) => {
        const record = JSON.parse(ev.data);
        if (record.seq <= lastSeq) return;
        lastSeq = record.seq;
        queue({ record });
      });
      es.addEventListener("gap", (ev) => {
        const gap = JSON.parse(ev.data);
        if (gap.to <= lastSeq) return;
        lastSeq = gap.to;
        queue({ gap });
      });
      es.addEventListener("status", (ev) => updateStatus(JSON.parse(ev.data)));
      es.addEventListener("shutdown", (ev) => {
        // the job goes on (or is stopped by the shutdown); the stream resumes when it is back
        const shutdown = JSON.parse(ev.data);
        updateStatus(shutdown);
        stopping = `${shutdown.reason || "the server is stopping"}: reconnecting…`;
        setConn(stopping);
      });
      es.addEventListener("end", (ev) => {
        const end = JSON.parse(ev.data);
        ended = true;
        es.close();
        source = null;
        updateStatus(end);
        showFailure(end);
        setConn(`ended: ${end.status}`);
        refreshJob();
      });
      es.onerror = () => {
        if (ended || closed || source !== es) return;
        if (es.readyState === EventSource.CONNECTING) {
          setConn(stopping || "reconnecting…");
          return;
        }
        // the server answered with an error: find out which (and ask for a token on 401)
        es.close();
        source = null;
        setConn(stopping || "reconnecting…");
        retryTimer = setTimeout(async () => {
          try {
            await apiJSON(base);
            const probe = await api(`${base}/logs?tail=1`);
            if (probe.status === 410) {
              problem("The logs of this job were deleted by retention.");
              setConn("");
              return;
            }
            openStream();
          } catch (err) {
            problem(err.message);
            setConn("");
          }
        }, 1000);
      };
    }

    async function refreshJob() {
      try {
        const fresh = await apiJSON(base);
        if (closed) return fresh;
        job = fresh;
        updateStatus(fresh);
        renderMeta(fresh);
        showFailure(fresh);
        if (fresh.job_type === "ansible_playbook") lookAtPlaybook();
        return fresh;
      } catch (err) {
        problem(err.status === 404 ? `No job with id ${jobId}.` : err.message);
        return null;
      }
    }

    function restart() {
      // new filters, or back from a match: the window is rebuilt from the newest lines
      closeSource();
      pending = [];
      paused = false;
      pausedItems = [];
      pausedDropped = 0;
      detached = false;
      missed = 0;
      lastSeq = 0;
      keep = WINDOW;
      ended = false;
      logEl.replaceChildren();
      $("pause").textContent = "Pause";
      $("pause").disabled = false;
      $("older").disabled = false;
      $("newest").hidden = true;
      info();
      openStream();
    }

    async function loadOlder() {
      const first = logEl.querySelector(".line[data-seq]");
      let boundary = first ? Number(first.dataset.seq) : lastSeq + 1;
      if (boundary <= 1) {
        $("older").disabled = true;
        return;
      }
      $("older").disabled = true;
      try {
        let span = OLDER_PAGE;
        let older = [];
        for (;;) {
          const lo = Math.max(0, boundary - 1 - span);
          let after = lo;
          older = [];
          for (;;) {
            const q = filterParams();
            q.set("after", String(after));
            q.set("tail", String(OLDER_PAGE));
            q.set("format", "json");
            const page = await apiJSON(`${base}/logs?${q}`);
            const inside = page.logs.filter((r) => r.seq < boundary);
            older.push(...inside);
            if (!page.more || inside.length < page.logs.length || page.last_seq === null) break;
            after = page.last_seq;
          }
          if (older.length || lo === 0) break;
          boundary = lo + 1; // nothing matched in that range: look further back
          span *= 4;
        }
        if (!older.length) {
          logEl.prepend(row({ note: "… no older lines" }));
          return;
        }
        older = older.slice(Math.max(0, older.length - OLDER_PAGE));
        keep = Math.min(MAX_LINES, keep + older.length);
        const before = logEl.scrollHeight;
        const fragment = document.createDocumentFragment();
        for (const record of older) fragment.append(row({ record }));
        logEl.prepend(fragment);
        logEl.scrollTop += logEl.scrollHeight - before;
        $("older").disabled = Number(older[0].seq) <= 1 || keep >= MAX_LINES;
        info();
      } catch (err) {
        problem(`cannot load older lines: ${err.message}`);
        $("older").disabled = false;
      }
    }

    // stop following and show the lines around `seq` (the live lines are counted meanwhile)
    async function loadAround(seq) {
      const params = filterParams();
      params.set("after", String(Math.max(0, seq - 1 - HALF_WINDOW)));
      params.set("tail", String(2 * HALF_WINDOW));
      params.set("format", "json");
      const page = await apiJSON(`${base}/logs?${params}`);
      if (closed) return;
      detached = true;
      missed = 0;
      pending = [];
      paused = false;
      pausedItems = [];
      pausedDropped = 0;
      $("pause").textContent = "Pause";
      $("pause").disabled = true;
      $("newest").hidden = false;
      const fragment = document.createDocumentFragment();
      for (const record of page.logs) fragment.append(row({ record }));
      logEl.replaceChildren(fragment);
      keep = Math.max(WINDOW, logEl.childElementCount);
      $("older").disabled = !page.logs.length || Number(page.logs[0].seq) <= 1;
      info();
    }

    // -- search the whole log, on the server --------------------------------------------------
    const searchKey = () => JSON.stringify([$("search").value, $("search-regex").checked, $("search-case").checked]);

    function searchInfo(error) {
      const box = $("search-info");
      box.classList.toggle("error", Boolean(error));
      if (error) box.textContent = error;
      else if (!found.q) box.textContent = "";
      else if (!found.total) box.textContent = "no matches";
      else if (found.index < 0) box.textContent = `${found.total} ${found.total === 1 ? "match" : "matches"}`;
      else box.textContent = `${found.index + 1} of ${found.total}`;
      searchButtons();
    }

    function searchButtons() {
      $("search-prev").disabled = found.index <= 0;
      // a running job may have written more matches since: Next looks for them
      const newer = active() && lastSeq > found.latest;
      $("search-next").disabled = !found.q || (!newer && (!found.total || found.index + 1 >= found.total));
    }

    function addMatches(matches) {
      for (const match of matches) {
        const seq = Number(match.seq);
        if (found.set.has(seq)) continue;
        found.seqs.push(seq);
        found.set.add(seq);
        const node = lineAt(seq);
        if (node) markMatch(node);
      }
    }

    async function runSearch() {
      clearTimeout(searchTimer);
      const token = ++searchToken;
      const key = searchKey();
      const q = $("search").value;
      const regex = $("search-regex").checked;
      const ignoreCase = $("search-case").checked;
      clearMarks();
      found = noSearch();
      updateDownload();
      if (!q) {
        searchInfo();
        return;
      }
      const params = filterParams();
      params.set("q", q);
      params.set("regex", String(regex));
      params.set("ignore_case", String(ignoreCase));
      params.set("context", "0");
      params.set("max", String(SEARCH_PAGE));
      $("search-info").textContent = "searching…";
      let body;
      try {
        body = await apiJSON(`${base}/logs/search?${params}`);
      } catch (err) {
        if (token === searchToken && !closed) searchInfo(err.message); // a bad regex: the 422 says why
        return;
      }
      if (token !== searchToken || closed) return;
      found = {
        key, q, regex, ignoreCase, params,
        total: Number(body.total_matches) || 0,
        seqs: [], set: new Set(),
        more: body.more === true, nextAfter: body.next_after, latest: Number(body.latest_seq) || 0,
        index: -1,
        pattern: markPattern(q, regex, ignoreCase),
      };
      addMatches(body.matches || []);
      searchInfo();
      const kept = Number(body.truncated_before);
      $("search-info").title = kept > 1 ? `searched the kept log: records before seq ${kept} were removed by rotation` : "";
      updateDownload();
    }

    async function step(delta) {
      if (stepping || !found.q) return;
      stepping = true;
      const token = searchToken;
      try {
        const i = found.index + delta;
        if (i < 0) return;
        if (i >= found.seqs.length) {
          // the next page of matches, or past the last one those written since the search
          const paging = found.more && found.nextAfter !== null && found.nextAfter !== undefined;
          if (!paging && !(lastSeq > found.latest)) return;
          const params = new URLSearchParams(found.params);
          params.set("after", String(paging ? found.nextAfter : found.latest));
          const body = await apiJSON(`${base}/logs/search?${params}`);
          if (token !== searchToken || closed) return;
          if (!paging) {
            found.total += Number(body.total_matches) || 0;
            found.latest = Math.max(found.latest, Number(body.latest_seq) || 0);
          }
          found.more = body.more === true;
          found.nextAfter = body.next_after;
          addMatches(body.matches || []);
          if (i >= found.seqs.length) {
            searchInfo();
            return;
          }
        }
        const seq = found.seqs[i];
        let node = lineAt(seq);
        if (!node) {
          await loadAround(seq);
          if (token !== searchToken || closed) return;
          node = lineAt(seq);
        }
        found.index = i;
        for (const old of logEl.querySelectorAll(".line.current")) old.classList.remove("current");
        if (node) {
          node.classList.add("current");
          node.scrollIntoView({ block: "center" });
        }
        searchInfo();
      } catch (err) {
        if (token === searchToken && !closed) searchInfo(`cannot show that match: ${err.message}`);
      } finally {
        stepping = false;
      }
    }

    // Enter: the next match (Shift+Enter: the previous), searching first if the box changed
    async function go(delta) {
      if (searchKey() !== found.key) await runSearch();
      await step(delta);
    }

    on("search", "input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(runSearch, 300);
    });
    on("search", "keydown", (ev) => {
      if (ev.key !== "Enter") return;
      ev.preventDefault();
      go(ev.shiftKey ? -1 : 1);
    });
    on("search-form", "submit", (ev) => {
      ev.preventDefault();
      go(1);
    });
    on("search-prev", "click", () => go(-1));
    on("search-regex", "change", runSearch);
    on("search-case", "change", runSearch);

    // -- field filters: a click on a chip keeps only the lines with that field's value -------------
    function renderFieldFilters() {
      $("field-filters").replaceChildren(
        ...fields.map(([key, value], i) => {
          const chip = el("button", "chip filter", `${key}=${value} ✕`);
          chip.type = "button";
          chip.dataset.key = key;
          chip.dataset.value = value;
          chip.title = "remove this filter";
          chip.addEventListener("click", () => {
            fields.splice(i, 1);
            refilter();
          });
          return chip;
        }),
      );
    }

    function refilter() {
      renderFieldFilters();
      restart();
      runSearch();
    }

    on("log", "click", (ev) => {
      const chip = ev.target instanceof Element ? ev.target.closest("button.chip[data-key]") : null;
      if (!chip) return;
      const { key, value } = chip.dataset;
      if (!fields.some(([k, v]) => k === key && v === value)) fields.push([key, value]);
      refilter();
    });

    on("level", "change", () => {
      restart();
      runSearch();
    });
    on("older", "click", loadOlder);
    on("newest", "click", restart);
    on("pause", "click", () => {
      paused = !paused;
      $("pause").textContent = paused ? "Resume" : "Pause";
      if (!paused) {
        if (pausedDropped) pending.push({ note: `… ${pausedDropped} lines arrived while paused and are not shown (download the whole log for them)` });
        pending.push(...pausedItems);
        pausedItems = [];
        pausedDropped = 0;
        flush();
        logEl.scrollTop = logEl.scrollHeight;
      }
      info();
    });

    updateDownload();
    refreshJob().then((first) => {
      if (closed || first === null) return;
      if (first.logs_expired) {
        problem("The logs of this job were deleted by retention.");
        return;
      }
      openStream();
    });

    return () => {
      closed = true;
      closeSource();
      clearTimeout(flushTimer);
      clearTimeout(searchTimer);
      clearTimeout(playbookTimer);
      clearInterval(durationTimer);
      listeners.abort();
    };
  }

  // -- hash routing -------------------------------------------------------------------------
  let leave = null;

  function route() {
    if (leave) leave();
    setConn("");
    const m = JOB_HASH.exec(location.hash);
    leave = m ? showJob(m[1]) : showList();
  }

  window.addEventListener("hashchange", route);
  route();
})();
