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

  async function apiJSON(path, options) {
    const response = await api(path, options);
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
      const err = new Error(detail);
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
        body: JSON.stringify({ type: $("submit-type").value, params }),
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

  // -- one job and its live log ---------------------------------------------------------------
  let cancelRequested = false; // the shown job's last cancel_requested: status events may omit it

  function updateStatus(state) {
    if (typeof state.cancel_requested === "boolean") cancelRequested = state.cancel_requested;
    statusBadge({ status: state.status, cancel_requested: cancelRequested }, $("job-status"));
    $("job-progress").value = Number(state.progress) || 0;
    $("job-percent").textContent = `${Math.round(Number(state.progress) || 0)}%`;
    if (state.current_step !== undefined) $("job-step").textContent = state.current_step || "";
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
    const keys = [
      ...FAILURE_ORDER.filter((k) => k in failure),
      ...Object.keys(failure).filter((k) => !FAILURE_ORDER.includes(k)),
    ];
    for (const key of keys) {
      const value = failure[key];
      if (value === null || value === undefined || value === "") continue;
      const dd = el("dd");
      dd.dataset.key = key;
      if (key === "stderr" || key === "stdout" || typeof value === "object") dd.append(el("pre", null, show(value)));
      else dd.textContent = show(value);
      fields.append(el("dt", null, key), dd);
    }
    box.hidden = false;
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
    if (job.status === "completed") add("result", job.result);
    if (job.records_dropped) add("records dropped", job.records_dropped);
    add("log note", job.log_note);
  }

  function showJob(jobId) {
    $("list-view").hidden = true;
    $("job-view").hidden = false;
    document.title = `${jobId} · jobtrail`;
    const base = `/api/jobs/${encodeURIComponent(jobId)}`;
    const logEl = $("log");
    const listeners = new AbortController();
    const on = (id, type, fn) => $(id).addEventListener(type, fn, { signal: listeners.signal });

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
    let total = 0;
    let search = "";
    let retryTimer = null;
    let stopping = ""; // the server said it is stopping: kept on show while the page reconnects

    $("job-title").textContent = jobId;
    $("job-status").textContent = "";
    cancelRequested = false;
    $("job-step").textContent = "";
    $("job-percent").textContent = "";
    $("job-meta").replaceChildren();
    $("failure").hidden = true;
    $("job-problem").hidden = true;
    $("search").value = "";
    $("pause").textContent = "Pause";
    $("older").disabled = false;
    logEl.replaceChildren();
    $("download").href = `${base}/logs/download`;
    $("download").setAttribute("download", `${jobId}.log`);

    const problem = (text) => {
      $("job-problem").textContent = text;
      $("job-problem").hidden = false;
    };

    const matches = (row) => !search || row.textContent.toLowerCase().includes(search);

    function info() {
      let text = `${logEl.childElementCount} lines`;
      if (search) {
        let shown = 0;
        for (const row of logEl.children) if (!row.hidden) shown += 1;
        text = `${shown} of ${logEl.childElementCount} lines match`;
      }
      if (paused) text += ` · paused, ${pausedItems.length + pausedDropped} new`;
      $("log-info").textContent = text;
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
        node.append(
          el("span", "ts", shortTime(r.timestamp)),
          el("span", "lvl", r.level),
          el("span", "logger", r.logger),
          el("span", "msg", text),
        );
        node.title = `seq ${r.seq} · ${localTime(r.timestamp)} · ${r.timestamp}`;
      }
      if (!matches(node)) node.hidden = true;
      return node;
    }

    function atBottom() {
      return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
    }

    function flush() {
      flushTimer = null;
      if (closed || paused) return;
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
      total += 1;
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
      const params = new URLSearchParams({ level: $("level").value });
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
        const job = await apiJSON(base);
        updateStatus(job);
        renderMeta(job);
        showFailure(job);
        return job;
      } catch (err) {
        problem(err.status === 404 ? `No job with id ${jobId}.` : err.message);
        return null;
      }
    }

    function restart() {
      // a new level: the window is rebuilt from the newest lines that match it
      closeSource();
      pending = [];
      pausedItems = [];
      pausedDropped = 0;
      lastSeq = 0;
      keep = WINDOW;
      ended = false;
      logEl.replaceChildren();
      $("older").disabled = false;
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
      const level = $("level").value;
      $("older").disabled = true;
      try {
        let span = OLDER_PAGE;
        let found = [];
        for (;;) {
          const lo = Math.max(0, boundary - 1 - span);
          let after = lo;
          found = [];
          for (;;) {
            const q = new URLSearchParams({ after: String(after), tail: String(OLDER_PAGE), level, format: "json" });
            const page = await apiJSON(`${base}/logs?${q}`);
            const inside = page.logs.filter((r) => r.seq < boundary);
            found.push(...inside);
            if (!page.more || inside.length < page.logs.length || page.last_seq === null) break;
            after = page.last_seq;
          }
          if (found.length || lo === 0) break;
          boundary = lo + 1; // nothing matched in that range: look further back
          span *= 4;
        }
        if (!found.length) {
          logEl.prepend(row({ note: "… no older lines" }));
          return;
        }
        found = found.slice(Math.max(0, found.length - OLDER_PAGE));
        keep = Math.min(MAX_LINES, keep + found.length);
        const before = logEl.scrollHeight;
        const fragment = document.createDocumentFragment();
        for (const record of found) fragment.append(row({ record }));
        logEl.prepend(fragment);
        logEl.scrollTop += logEl.scrollHeight - before;
        $("older").disabled = Number(found[0].seq) <= 1 || keep >= MAX_LINES;
        info();
      } catch (err) {
        problem(`cannot load older lines: ${err.message}`);
        $("older").disabled = false;
      }
    }

    let searchTimer = null;
    on("search", "input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        search = $("search").value.trim().toLowerCase();
        for (const node of logEl.children) node.hidden = !matches(node);
        info();
      }, 120);
    });
    on("level", "change", restart);
    on("older", "click", loadOlder);
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

    refreshJob().then((job) => {
      if (closed || job === null) return;
      if (job.logs_expired) {
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
