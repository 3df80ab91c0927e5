/* The job page: header and actions, test result, live activity, failures by cause, charts, the units table
 * and logs.
 * First drawn from the embedded data, then kept current by /api/jobs/{id}/stream. */
"use strict";

(() => {
  const { el, api } = ABP;
  const data = ABP.initial();
  const jobId = data.job.id;
  const base = `/api/jobs/${jobId}`;
  let current = data.status;

  // -- header -----------------------------------------------------------------------------------

  const ACTIONS = {
    CREATED: ["start", "start-skip", "cancel"], TESTING: ["approve", "reject", "cancel"],
    RUNNING: ["stop", "cancel"], PAUSED: ["resume", "cancel"], FAILED: ["retry"], COMPLETED: [], CANCELLED: [],
  };

  function renderHeader(s) {
    const statusNode = document.getElementById("job-status");
    statusNode.textContent = s.status;
    statusNode.dataset.status = s.status;
    ABP.setBar(document.getElementById("job-progress-fill"), document.getElementById("job-progress-label"),
      s.progress, `${s.progress.toFixed(1)}% · ${ABP.int(s.done)} / ${ABP.int(s.total)}`);
    const ex = s.executor || {};
    const executor = ex.state === "not_started" ? "not started"
      : el("span", { title: ex.heartbeat_at ? `last heartbeat ${ABP.age(ex.heartbeat_at)}` : null },
        `${ex.state} · pid ${ex.pid}@${ex.host}`);
    const facts = [
      ["Completed", ABP.int(s.completed)], ["Failed", ABP.int(s.failed)], ["Running", ABP.int(s.running)],
      ["Pending", ABP.int(s.pending)], ["Cancelled", ABP.int(s.cancelled)],
      ...(s.cache || s.cached ? [["Cached", `${ABP.int(s.cached)} (result cache)`]] : []),
      ["Rate", ABP.rate(s.rate)], ["ETA", s.eta_seconds === null ? "—" : ABP.duration(s.eta_seconds)],
      ["Elapsed", ABP.duration(s.elapsed_seconds)], ["Cost", ABP.money(s.cost_usd)],
      ["Projected", ABP.money(s.projected_cost_usd)], ["Budget", s.budget_usd ? ABP.money(s.budget_usd) : "none"],
      ["Tokens", `${ABP.int(s.tokens_in)} in · ${ABP.int(s.tokens_out)} out`], ["Executor", executor],
    ];
    if (s.batches) {  // --batch-api: provider batches in flight (their units count as running)
      const b = s.batches;
      facts.push(["Batches", `${ABP.int(b.in_flight)} in flight · ${ABP.int(b.units)} units · `
        + `${ABP.money(b.projected_usd)} projected at the batch price · ${ABP.int(b.submitted)} submitted`]);
      for (const x of b.batches.slice(0, 10)) {
        const counts = x.counts || {};
        facts.push([`Batch ${x.id}`, `${x.provider_id || "(not created yet)"} · ${x.status} · `
          + `${ABP.int(counts.succeeded || 0)}/${ABP.int(counts.total || x.units)} done · age ${ABP.duration(x.age_seconds)}`]);
      }
    }
    ABP.facts(document.getElementById("job-facts"), facts);
    const note = document.getElementById("job-note");
    const lines = [];
    if (s.pause_reason) lines.push(`Paused: ${s.pause_reason}.`);
    if (s.hold_until) lines.push(`Quota hold until ${ABP.time(s.hold_until)}.`);
    if (s.error) lines.push(s.error);
    if (s.status === "RUNNING" && ex.state !== "running") lines.push("No executor is running this job: resume it.");
    note.textContent = lines.join(" ");
    note.hidden = lines.length === 0;
    const allowed = new Set(ACTIONS[s.status] || []);
    if (s.failed > 0 && ["RUNNING", "PAUSED", "CANCELLED", "COMPLETED"].includes(s.status)) allowed.add("retry");
    if (s.status === "RUNNING" && ex.state !== "running") allowed.add("resume");
    for (const button of document.querySelectorAll("#job-actions button[data-action]")) {
      button.hidden = !allowed.has(button.dataset.action);
    }
    document.getElementById("prompt-form").hidden = !["CREATED", "TESTING", "PAUSED", "FAILED"].includes(s.status);
  }

  async function act(action) {
    const calls = {
      start: () => api("POST", `${base}/start`, {}), "start-skip": () => api("POST", `${base}/start`, { skip_test: true }),
      approve: () => api("POST", `${base}/approve`), reject: () => api("POST", `${base}/reject`),
      stop: () => api("POST", `${base}/stop`), resume: () => api("POST", `${base}/resume`),
      cancel: () => api("POST", `${base}/cancel`), retry: () => api("POST", `${base}/retry`, {}),
    };
    if (action === "start") ABP.toast("Running the first unit as a test…");
    await calls[action]();
    onProgress(await api("GET", base));
    ABP.toast(`Job is ${current.status}`);
  }

  // -- test result ------------------------------------------------------------------------------

  async function showTest(report) {
    const panel = document.getElementById("test-panel");
    if (current.status !== "TESTING") { panel.hidden = true; return; }
    const unit = report || await api("GET", `${base}/test`);
    const body = document.getElementById("test-body");
    body.replaceChildren(...[
      el("p", {}, ABP.badge(unit.status), " ", el("a", { href: `/jobs/${jobId}/units/${unit.number}` }, `unit ${unit.number} · ${unit.key}`),
        el("span", { class: "muted" }, ` · ${ABP.duration(unit.duration_s)} · ${ABP.money(unit.cost_usd)} · ${unit.events ? unit.events.length : 0} events`)),
      unit.output ? ABP.markdown(unit.output) : el("p", { class: "muted" }, "(no output)"),
      unit.error ? el("pre", { class: "block error-text" }, unit.error) : null,
      el("div", { class: "actions" },
        el("button", { type: "button", dataset: { action: "approve", confirm: "Approve the test result and run every unit?" } }, "Approve and run all"),
        el("button", { type: "button", class: "secondary", dataset: { action: "reject", confirm: "Reject the test result? The job goes back to CREATED so you can edit the prompt." } }, "Reject")),
    ].filter(Boolean));
    panel.hidden = false;
  }

  // -- activity ---------------------------------------------------------------------------------

  function renderActive(list) {
    document.getElementById("active-body").replaceChildren(...list.map((a) => el("tr", {},
      el("td", {}, el("a", { href: `/jobs/${jobId}/units/${a.number}` }, a.key)),
      el("td", { class: "num" }, a.attempt), el("td", { class: "num" }, ABP.duration(a.elapsed_s)),
      el("td", { class: "latest" }, ABP.describeEvent(a.last_event)))));
    document.getElementById("active-empty").hidden = list.length > 0;
  }

  // -- failures grouped by cause -------------------------------------------------------------------

  let errorsFailed = data.errors.failed;
  let errorsDirty = false;

  function errorRow(g) {
    const kind = (g.error_class || "—") + (g.error_kind ? ` / ${g.error_kind}` : "");
    const examples = g.units.map((u) => el("a", { href: `/jobs/${jobId}/units/${u.number}`, title: u.key }, `#${u.number}`));
    const more = g.count > g.units.length ? el("span", { class: "muted" }, " …") : null;
    return el("tr", { dataset: { group: g.group } },
      el("td", { class: "num" }, g.group), el("td", { class: "num" }, ABP.int(g.count)), el("td", {}, kind),
      el("td", { class: "signature" }, el("code", {}, g.signature || "(no message)"),
        g.example ? el("details", {}, el("summary", { class: "muted" }, "example"), el("pre", { class: "block error-text" }, g.example)) : null),
      el("td", { class: "examples" }, ...examples.flatMap((a, i) => (i ? [", ", a] : [a])), more),
      el("td", {}, el("button", { type: "button", class: "secondary small", dataset: {
        action: "retry-group", group: g.group, confirm: `Retry the ${g.count} unit(s) that failed this way?` } }, "Retry")));
  }

  function renderErrors(summary) {
    errorsFailed = summary.failed;
    document.getElementById("errors-body").replaceChildren(...summary.groups.map(errorRow));
    document.getElementById("errors-count").textContent =
      `(${ABP.int(summary.failed)} failed unit(s) in ${ABP.int(summary.groups.length)} group(s))`;
    document.getElementById("errors-panel").hidden = summary.groups.length === 0;
  }
  const loadErrors = async () => {
    try { renderErrors(await api("GET", `${base}/errors?examples=5`)); } catch (error) { ABP.showError(error); }
  };

  async function retryGroup(action, button) {
    const result = await api("POST", `${base}/retry`, { error_group: Number(button.dataset.group) });
    ABP.toast(`${ABP.int(result.retried)} unit(s) queued for retry`);
    onProgress(await api("GET", base));
    loadErrors();
  }

  // -- charts -----------------------------------------------------------------------------------

  function renderSeries(series) {
    ABP.charts.throughput(document.getElementById("chart-throughput"), series);
    ABP.charts.cost(document.getElementById("chart-cost"), series);
    document.getElementById("tp-caption").textContent = series.width ? `(units per ${ABP.duration(series.width)})` : "";
    const last = (series.points || []).slice(-1)[0];
    document.getElementById("cost-caption").textContent = last ? `(${ABP.money(last.cost_total)})` : "";
  }
  const loadSeries = async () => renderSeries(await api("GET", `${base}/timeseries?buckets=60`));

  // -- units ------------------------------------------------------------------------------------

  const query = { status: "", q: "", sort: "number", order: "asc", limit: 50, offset: 0 };
  let page = data.units;
  let unitsDirty = false;

  function unitRow(u) {
    const preview = u.error_preview || u.output_preview || "";
    return el("tr", { dataset: { unit: u.number } },
      el("td", { class: "num" }, u.number),
      el("td", { class: "key" }, el("a", { href: `/jobs/${jobId}/units/${u.number}` }, u.key)),
      el("td", {}, ABP.badge(u.status), u.cached_from
        ? el("a", { class: "cached", href: `/jobs/${u.cached_from.job_id}/units/${u.cached_from.unit}`,
                    title: `result copied from job ${u.cached_from.job_id} unit ${u.cached_from.unit}` }, " cached")
        : null),
      el("td", { class: "num" }, u.attempt),
      el("td", { class: "num" }, ABP.duration(u.duration_s)), el("td", { class: "num" }, ABP.money(u.cost_usd)),
      el("td", { class: "num" }, ABP.int(u.tokens_in + u.tokens_out)),
      el("td", { class: u.error_preview ? "preview error-text" : "preview" }, preview));
  }

  function renderUnits(result) {
    page = result;
    document.getElementById("units-body").replaceChildren(...result.items.map(unitRow));
    const first = result.total ? result.offset + 1 : 0;
    document.getElementById("units-range").textContent =
      `${ABP.int(first)}–${ABP.int(result.offset + result.items.length)} of ${ABP.int(result.total)}`;
    document.getElementById("units-count").textContent = `(${ABP.int(result.total)})`;
    document.getElementById("units-prev").disabled = result.offset === 0;
    document.getElementById("units-next").disabled = result.offset + result.items.length >= result.total;
  }

  async function loadUnits() {
    const params = new URLSearchParams({ sort: query.sort, order: query.order, limit: query.limit, offset: query.offset });
    if (query.status) params.set("status", query.status);
    if (query.q) params.set("q", query.q);
    try { renderUnits(await api("GET", `${base}/units?${params}`)); } catch (error) { ABP.showError(error); }
  }

  function onUnit(unit) {
    const row = document.querySelector(`#units-body tr[data-unit="${unit.number}"]`);
    if (row) row.replaceWith(unitRow(unit));
    unitsDirty = true;
  }

  const unitForm = document.getElementById("unit-filters");
  const readUnitForm = () => {
    const form = new FormData(unitForm);
    Object.assign(query, { status: form.get("status"), q: form.get("q").trim(), sort: form.get("sort"), order: form.get("order"), offset: 0 });
    loadUnits();
  };
  unitForm.addEventListener("change", readUnitForm);
  unitForm.querySelector('input[name="q"]').addEventListener("input", ABP.debounce(readUnitForm, 400));
  unitForm.addEventListener("submit", (event) => { event.preventDefault(); readUnitForm(); });
  document.getElementById("units-prev").addEventListener("click", () => { query.offset = Math.max(0, query.offset - query.limit); loadUnits(); });
  document.getElementById("units-next").addEventListener("click", () => { query.offset += query.limit; loadUnits(); });

  // -- logs -------------------------------------------------------------------------------------

  const logQuery = { level: "info", q: "" };
  let olderShown = false;
  let logsDirty = false;

  function logRow(entry) {
    return el("li", { class: `log level-${entry.level}` },
      el("time", { title: ABP.time(entry.ts) }, new Date(entry.ts * 1000).toLocaleTimeString()),
      el("span", { class: "level" }, entry.level),
      entry.unit ? el("a", { href: `/jobs/${jobId}/units/${entry.unit}`, class: "log-unit" }, `unit ${entry.unit}`) : null,
      el("span", { class: "message" }, entry.message));
  }

  function renderLogs(result, append) {
    const list = document.getElementById("logs-list");
    const rows = result.items.map(logRow);
    if (append) list.append(...rows); else list.replaceChildren(...rows);
    const more = document.getElementById("logs-more");
    more.hidden = result.next_before === null;
    more.dataset.before = result.next_before ?? "";
  }

  async function loadLogs(before) {
    const params = new URLSearchParams({ level: logQuery.level, limit: 50 });
    if (logQuery.q) params.set("q", logQuery.q);
    if (before) params.set("before", before);
    try { renderLogs(await api("GET", `${base}/logs?${params}`), Boolean(before)); } catch (error) { ABP.showError(error); }
  }

  const logForm = document.getElementById("log-filters");
  const readLogForm = () => {
    const form = new FormData(logForm);
    Object.assign(logQuery, { level: form.get("level"), q: form.get("q").trim() });
    olderShown = false;
    loadLogs();
  };
  logForm.addEventListener("change", readLogForm);
  logForm.querySelector('input[name="q"]').addEventListener("input", ABP.debounce(readLogForm, 400));
  logForm.addEventListener("submit", (event) => { event.preventDefault(); readLogForm(); });
  document.getElementById("logs-more").addEventListener("click", (event) => { olderShown = true; loadLogs(event.target.dataset.before); });

  // -- prompt -----------------------------------------------------------------------------------

  const promptForm = document.getElementById("prompt-form");
  promptForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = promptForm.querySelector("button[type=submit]");
    if (!(await ABP.confirmDialog(button.dataset.confirm))) return;
    try {
      const template = new FormData(promptForm).get("prompt");
      onProgress(await api("PUT", `${base}/prompt`, { prompt: template }));
      document.getElementById("prompt-view").textContent = template;
      ABP.toast("Prompt saved");
    } catch (error) { ABP.showError(error); }
  });

  // -- live -------------------------------------------------------------------------------------

  function onProgress(s) {
    const changed = s.status !== current.status;
    current = s;
    renderHeader(s);
    logsDirty = true;
    unitsDirty = true;
    if (changed) { loadSeries(); showTest(); }
    if (s.failed !== errorsFailed) errorsDirty = true;
  }

  ABP.wireActions(document.getElementById("job-actions"), act);
  ABP.wireActions(document.getElementById("test-panel"), act);
  ABP.wireActions(document.getElementById("errors-panel"), retryGroup);
  renderHeader(current);
  if (data.test) showTest(data.test);
  renderActive(data.active);
  renderSeries(data.series);
  renderErrors(data.errors);
  renderUnits(page);
  renderLogs(data.logs, false);
  ABP.stream(`${base}/stream?events=0`, { progress: onProgress, active: renderActive, unit: onUnit });
  setInterval(() => {
    if (document.hidden) return;
    if (unitsDirty) { unitsDirty = false; loadUnits(); }
    if (errorsDirty) { errorsDirty = false; loadErrors(); }
    if (logsDirty && !olderShown) { logsDirty = false; loadLogs(); }
  }, 3000);
  setInterval(() => { if (!document.hidden && current.status === "RUNNING") loadSeries(); }, 5000);
})();
