/* The job list: rows and totals from the embedded first page, then live from /api/stream. */
"use strict";

(() => {
  const { el } = ABP;
  const data = ABP.initial();
  const body = document.getElementById("jobs-body");
  const emptyNote = document.getElementById("jobs-empty");

  function row(job) {
    const label = `${job.progress.toFixed(job.progress < 10 ? 1 : 0)}%`;
    const extra = job.pause_reason || (job.status === "RUNNING" && job.executor_state && job.executor_state !== "running"
      ? "no executor" : null);
    return el("tr", { dataset: { jobId: job.id } },
      el("td", {}, el("a", { href: `/jobs/${job.id}`, class: "job-link" }, job.name), el("small", { class: "muted" }, ` #${job.id} · ${job.worker}`)),
      el("td", {}, ABP.badge(job.status, extra)),
      el("td", { class: "progress-col" }, ABP.progressBar(job.progress, label)),
      el("td", { class: "num" }, `${ABP.int(job.done)} / ${ABP.int(job.total)}`),
      el("td", { class: job.failed ? "num failed-count" : "num" }, ABP.int(job.failed)),
      el("td", { class: "num" }, ABP.rate(job.rate)),
      el("td", { class: "num" }, job.eta_seconds === null ? "—" : ABP.duration(job.eta_seconds)),
      el("td", { class: "num" }, ABP.money(job.cost_usd)),
      el("td", { class: "num", title: ABP.time(job.created_at) }, ABP.age(job.created_at)));
  }

  function renderJobs(page) {
    body.replaceChildren(...page.items.map(row));
    emptyNote.hidden = page.items.length > 0;
  }

  function renderStats(stats) {
    const units = stats.units;
    const done = units.COMPLETED + units.FAILED + units.CANCELLED;
    const card = (label, value, note) => el("div", { class: "stat" }, el("span", { class: "stat-value" }, value),
      el("span", { class: "stat-label" }, label), note ? el("span", { class: "muted" }, note) : null);
    document.getElementById("stats").replaceChildren(
      card("running jobs", ABP.int(stats.jobs.RUNNING), `${ABP.int(stats.jobs_total)} jobs in all`),
      card("units done", ABP.int(done), `of ${ABP.int(stats.units_total)}`),
      card("units failed", ABP.int(units.FAILED)),
      card("spent", ABP.money(stats.cost_usd), `${ABP.int(stats.tokens_in + stats.tokens_out)} tokens`),
      card("throughput", ABP.rate(stats.rate), "last minute, all jobs"));
  }

  renderJobs(data.jobs);
  renderStats(data.stats);
  const params = new URLSearchParams({ limit: "50" });
  if (data.filter.status) params.set("status", data.filter.status);
  if (data.filter.q) params.set("q", data.filter.q);
  ABP.stream(`/api/stream?${params}`, { jobs: renderJobs, stats: renderStats });

  const form = document.getElementById("job-filters");
  form.querySelector('input[name="q"]').addEventListener("input", ABP.debounce(() => form.submit(), 600));
})();
