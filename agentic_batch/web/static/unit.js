/* The unit page: facts, output (markdown), structured data as a table, error, and the conversation
 * as a timeline that grows live while the unit runs. Agent text is untrusted: see markdown.js. */
"use strict";

(() => {
  const { el, api } = ABP;
  const data = ABP.initial();
  const jobId = data.job.id;
  let unit = data.unit;
  const base = `/api/jobs/${jobId}/units/${unit.number}`;
  const timeline = document.getElementById("timeline");
  const rawToggle = document.getElementById("conv-raw");
  let events = [];
  let lastAttempt = null;
  let firstTs = null;

  // -- facts and output -------------------------------------------------------------------------

  function renderUnit(u) {
    unit = u;
    const statusNode = document.getElementById("unit-status");
    statusNode.textContent = u.status;
    statusNode.dataset.status = u.status;
    ABP.facts(document.getElementById("unit-facts"), [
      ["Attempts", u.attempts], ["Errors", u.errors], ["Duration", ABP.duration(u.duration_s)],
      ["Cost", ABP.money(u.cost_usd)], ["Tokens", `${ABP.int(u.tokens_in)} in · ${ABP.int(u.tokens_out)} out`],
      ["Turns", u.turns], ["Started", ABP.time(u.started_at)], ["Finished", ABP.time(u.finished_at)],
      ["Priority", u.priority], ["Session", u.session_id || "—"],
      ...(u.cached_from ? [["Cached from", el("a", { href: `/jobs/${u.cached_from.job_id}/units/${u.cached_from.unit}` },
        `job ${u.cached_from.job_id} · unit ${u.cached_from.unit}`)]] : []),
    ]);
    const raw = rawToggle.checked;
    document.getElementById("unit-output").replaceChildren(u.output
      ? (raw ? el("pre", { class: "block" }, u.output) : ABP.markdown(u.output))
      : el("p", { class: "muted" }, u.status === "RUNNING" ? "(running…)" : "(no output)"));
    document.getElementById("unit-data").replaceChildren(...(u.data !== null && u.data !== undefined
      ? [el("h3", {}, "Structured data"), dataTable(u.data)] : []));
    document.getElementById("unit-error").replaceChildren(...(u.error
      ? [el("h3", {}, `Error${u.error_class ? ` (${u.error_class})` : ""}`), el("pre", { class: "block error-text" }, u.error)] : []));
    for (const button of document.querySelectorAll(".unit-head button[data-action]")) {
      const action = button.dataset.action;
      button.hidden = action === "retry-unit" ? !["FAILED", "CANCELLED"].includes(u.status)
        : !["PENDING", "RUNNING"].includes(u.status);
    }
  }

  const cell = (value) => (value !== null && typeof value === "object" ? JSON.stringify(value) : String(value ?? ""));

  /** A dict as field/value rows; a list of dicts as a table; anything else as JSON. */
  function dataTable(value) {
    if (Array.isArray(value) && value.length && value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      const columns = [...new Set(value.flatMap(Object.keys))];
      return el("table", { class: "grid compact data" },
        el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))),
        el("tbody", {}, ...value.map((row) => el("tr", {}, ...columns.map((c) => el("td", {}, cell(row[c])))))));
    }
    if (value && typeof value === "object" && !Array.isArray(value)) {
      return el("table", { class: "grid compact data" },
        el("tbody", {}, ...Object.entries(value).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, cell(v))))));
    }
    return el("pre", { class: "block" }, JSON.stringify(value, null, 2));
  }

  // -- conversation -----------------------------------------------------------------------------

  const json = (value) => el("pre", { class: "block small" }, JSON.stringify(value, null, 2));
  const text = (value) => (rawToggle.checked ? el("pre", { class: "block" }, value ?? "") : ABP.markdown(value ?? ""));
  const fold = (summary, body, open, cls) => el("details", { class: cls || null, open: open || null }, el("summary", {}, ...summary), body);

  function eventBody(event) {
    const d = event.data || {};
    switch (event.kind) {
      case "assistant": return text(d.text);
      case "thinking": return fold(["thinking"], el("pre", { class: "block small" }, d.text ?? ""));
      case "tool_use": return fold([el("strong", {}, d.name || "tool"), " ", el("span", { class: "muted" }, ABP.describeEvent(event).replace(/^[^:]*:?\s*/, ""))], json(d.input ?? {}));
      case "tool_result": return fold([d.is_error ? "error result" : "result", " ", el("span", { class: "muted" }, String(d.content ?? "").split("\n")[0].slice(0, 120))],
        el("pre", { class: "block small" }, String(d.content ?? "")), false, d.is_error ? "tool-error" : null);
      case "stdout": case "stderr": return el("pre", { class: `line ${event.kind}` }, d.text ?? d.line ?? "");
      case "command": return el("pre", { class: "line" }, `$ ${(d.argv || []).join(" ")}`);
      case "start": return el("span", { class: "muted" }, `attempt ${d.attempt ?? event.attempt} started (${d.worker || ""} worker)`);
      case "end": return el("span", { class: "muted" }, `finished in ${ABP.duration(d.duration_s)}, ${ABP.money(d.cost_usd)}`);
      case "exit": return el("span", { class: "muted" }, `exit code ${d.code}`);
      case "note": return el("span", { class: "muted" }, `note: ${d.text ?? ""}`);
      case "error": return el("pre", { class: "block error-text" }, `${d.error ?? ""}${d.error_class ? ` (${d.error_class})` : ""}`);
      case "result": return el("span", { class: "muted" }, `result: ${d.turns ?? "?"} turns, ${ABP.money(d.cost)}${d.is_error ? ", error" : ""}`);
      default: return fold([event.kind], json(d));
    }
  }

  function eventItem(event) {
    const offset = firstTs === null ? 0 : event.ts - firstTs;
    return el("li", { class: `event kind-${event.kind}`, dataset: { eventId: event.id } },
      el("span", { class: "when", title: ABP.time(event.ts) }, `+${offset.toFixed(1)} s`),
      el("span", { class: "kind" }, event.kind), el("div", { class: "body" }, eventBody(event)));
  }

  function append(batch) {
    const known = new Set(events.map((e) => e.id));
    const fresh = batch.filter((e) => !known.has(e.id));
    if (!fresh.length) return;
    const stick = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    for (const event of fresh) {
      if (firstTs === null) firstTs = event.ts;
      if (event.attempt !== lastAttempt) {
        lastAttempt = event.attempt;
        timeline.append(el("li", { class: "attempt" }, `Attempt ${event.attempt}`));
      }
      timeline.append(eventItem(event));
      events.push(event);
    }
    document.getElementById("timeline-empty").hidden = true;
    document.getElementById("conv-count").textContent = `(${events.length} events)`;
    if (stick && unit.status === "RUNNING") window.scrollTo(0, document.body.scrollHeight);
  }

  function redraw() {
    const all = events;
    events = []; lastAttempt = null; firstTs = null;
    timeline.replaceChildren();
    append(all);
    renderUnit(unit);
  }

  // -- live and actions -------------------------------------------------------------------------

  async function onUnit(row) {
    if (row.status !== unit.status || row.attempt !== unit.attempts) renderUnit(await api("GET", base));
  }

  ABP.wireActions(document.querySelector(".unit-head"), async (action) => {
    const result = await api("POST", `${base}/${action === "retry-unit" ? "retry" : "cancel"}`);
    renderUnit(result.unit);
    ABP.toast(`Unit is ${result.unit.status}`);
  });
  rawToggle.addEventListener("change", redraw);

  renderUnit(unit);
  append(data.events);
  const after = events.length ? events[events.length - 1].id : 0;
  ABP.stream(`/api/jobs/${jobId}/stream?unit=${unit.number}&after=${after}`, { events: append, unit: onUnit });
})();
