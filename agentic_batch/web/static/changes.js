/* An isolated job's changes (--isolate worktree): the unit page's diff (a block per file with its
 * header, hunks, +/- lines coloured) and the job page's Changes view (unit, files, +/-, verify,
 * review, accept/reject, apply the accepted units: the REST apply, as `abp apply JOB --accepted`).
 * A patch is agent output: every line reaches the page as text (ABP.el), never as HTML. */
"use strict";

(() => {
  const { el, api } = ABP;
  const data = ABP.initial();
  const jobId = data.job.id;
  const MAX_LINES = 5000;
  const FINAL = ["COMPLETED", "FAILED", "CANCELLED"];

  /** Split a git patch into files: each with its name and its lines. */
  function patchFiles(patch) {
    const files = [];
    let file = null;
    for (const line of patch.replace(/\n$/, "").split("\n")) {
      if (line.startsWith("diff --git ")) {
        file = { name: line.slice(11), lines: [], header: true };
        files.push(file);
      }
      if (!file) continue;
      if (file.header && line.startsWith("+++ ") && line !== "+++ /dev/null") file.name = line.slice(6);
      else if (file.header && line.startsWith("--- ") && line !== "--- /dev/null") file.name = line.slice(6);
      else if (file.header && line.startsWith("rename to ")) file.name = line.slice(10);
      if (line.startsWith("@@")) file.header = false;
      file.lines.push({ text: line, header: file.header });
    }
    return files;
  }

  function lineClass(line) {
    if (line.header) return "meta";
    if (line.text.startsWith("@@")) return "hunk";
    if (line.text.startsWith("+")) return "add";
    if (line.text.startsWith("-")) return "del";
    return null;
  }

  function diffView(patch) {
    if (!patch) return el("p", { class: "muted" }, "No changes.");
    let budget = MAX_LINES;
    const blocks = patchFiles(patch).map((file) => {
      const shown = file.lines.slice(0, Math.max(budget, 0));
      budget -= shown.length;
      return el("div", { class: "diff-file" }, el("div", { class: "diff-name" }, file.name),
        el("pre", { class: "diff" }, ...shown.map((line) => el("span", { class: lineClass(line) }, line.text))),
        shown.length < file.lines.length
          ? el("p", { class: "muted small" }, `${file.lines.length - shown.length} more lines: \`abp diff ${jobId} …\``) : null);
    });
    return el("div", {}, ...blocks);
  }

  async function mark(numbers, review) {
    return api("POST", `/api/jobs/${jobId}/review`, { units: numbers, review: review || null });
  }

  const reviewBadge = (review) => (review ? el("span", { class: `badge review-${review}` }, review) : "");

  // -- the unit page ----------------------------------------------------------------------------

  const unitPanel = document.getElementById("unit-changes");
  if (unitPanel && data.diff) {
    let diff = data.diff;
    const render = () => {
      document.getElementById("changes-summary").textContent = diff.commit
        ? `${diff.files} file(s), +${diff.added} −${diff.deleted} · ${diff.branch} ${diff.commit.slice(0, 12)}`
        : (diff.branch ? "no changes" : "not run yet");
      document.getElementById("review-state").replaceChildren(reviewBadge(diff.review),
        diff.verify ? el("span", { class: `badge verify-${diff.verify}` }, `verify ${diff.verify}`) : "");
      for (const button of unitPanel.querySelectorAll("button[data-review]")) button.hidden = !diff.commit;
      document.getElementById("diff").replaceChildren(diffView(diff.patch));
    };
    const reload = async () => { diff = await api("GET", `/api/jobs/${jobId}/units/${diff.number}/diff`); render(); };
    unitPanel.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-review]");
      if (!button) return;
      try {
        await mark([diff.number], button.dataset.review);
        await reload();
        ABP.toast(button.dataset.review ? `Unit ${diff.number} ${button.dataset.review}` : "Mark removed");
      } catch (error) { ABP.showError(error); }
    });
    render();
    const poll = setInterval(async () => {  // a running unit's diff appears when its attempt ends
      if (FINAL.includes(diff.status)) { clearInterval(poll); return; }
      try { await reload(); } catch (_) { /* the next poll tries again */ }
    }, 3000);
  }

  // -- the job page -----------------------------------------------------------------------------

  const jobPanel = document.getElementById("changes-panel");
  if (jobPanel) {
    const body = document.getElementById("changes-body");
    const row = (u) => el("tr", { dataset: { unit: u.number } },
      el("td", {}, el("a", { href: `/jobs/${jobId}/units/${u.number}` }, `#${u.number}`)),
      el("td", { class: "key" }, u.key),
      el("td", {}, el("span", { class: "badge", dataset: { status: u.status } }, u.status)),
      el("td", { class: "num" }, u.commit ? String(u.files) : "—"),
      el("td", { class: "num" }, u.commit ? [el("span", { class: "plus" }, `+${u.added}`), " ",
                                             el("span", { class: "minus" }, `−${u.deleted}`)] : ""),
      el("td", {}, u.verify ? el("span", { class: `badge verify-${u.verify}` }, u.verify) : ""),
      el("td", { class: "review" }, reviewBadge(u.review)),
      el("td", { class: "row-actions" }, u.commit ? [
        el("button", { type: "button", class: "small secondary", dataset: { review: "accepted" } }, "Accept"),
        el("button", { type: "button", class: "small secondary", dataset: { review: "rejected" } }, "Reject")] : ""));
    const load = async () => {
      const changes = await api("GET", `/api/jobs/${jobId}/changes`);
      body.replaceChildren(...changes.units.filter((u) => u.branch).map(row));
      document.getElementById("changes-count").textContent =
        `(${changes.changed} unit(s) changed ${changes.files} file(s), +${changes.added} −${changes.deleted})`;
      document.getElementById("changes-empty").hidden = changes.units.some((u) => u.branch);
      return changes;
    };
    jobPanel.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-review]");
      if (!button) return;
      const number = Number(button.closest("tr").dataset.unit);
      try {
        await mark([number], button.dataset.review);
        await load();
        ABP.toast(`Unit ${number} ${button.dataset.review}`);
      } catch (error) { ABP.showError(error); }
    });
    const units = (numbers) => numbers.map((n) => `#${n}`).join(", ");
    /** What an apply did, one sentence per outcome that happened (text only: file names are agent output). */
    const applySummary = (r) => {
      const parts = [`${r.created ? "Made" : "Updated"} ${r.branch}` + (r.head ? ` (head ${r.head.slice(0, 12)})` : "") + "."];
      if (r.applied.length) parts.push(`Applied ${units(r.applied)}${r.squash ? " in one commit" : ""}.`);
      if (r.already_applied.length) parts.push(`Already there: ${units(r.already_applied)}.`);
      for (const c of r.conflicts) {
        const against = c.with_units.length ? `with ${units(c.with_units)}` : "with the branch";
        parts.push(`Skipped #${c.number}: conflicts ${against} in ${c.files.join(", ")}.`);
      }
      if (r.unchanged.length) parts.push(`No changes: ${units(r.unchanged)}.`);
      return parts.join(" ");
    };
    const applyButton = document.getElementById("apply-accepted");
    applyButton.addEventListener("click", async () => {
      applyButton.disabled = true;
      try {
        const result = await api("POST", `/api/jobs/${jobId}/apply`, { accepted: true });
        const out = document.getElementById("apply-result");
        out.textContent = applySummary(result);
        out.dataset.kind = result.conflicts.length ? "conflicts" : "ok";
        out.hidden = false;
        ABP.toast(`Applied ${result.applied.length} unit(s) onto ${result.branch}`, result.conflicts.length ? "error" : undefined);
      } catch (error) { ABP.showError(error); } finally { applyButton.disabled = false; }
    });
    load().catch(ABP.showError);
    setInterval(() => {
      const status = document.getElementById("job-status");
      if (status && status.dataset.status === "RUNNING") load().catch(() => {});
    }, 5000);
  }
})();
