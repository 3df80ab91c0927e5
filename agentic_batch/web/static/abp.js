/* agentic-batch dashboard: shared helpers. Hand-written, no build step, no dependencies.
 *
 * The one rule: text from the server (agent output above all) reaches the page only as text
 * (textContent, text nodes, attribute values set through the DOM) or through ABP.markdown, which
 * escapes everything before adding its few tags. Nothing here assigns server text to innerHTML.
 */
"use strict";

const ABP = (() => {
  const csrfMeta = document.querySelector('meta[name="abp-csrf"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  /** Links we build point into this dashboard or the API; anything else becomes "#". */
  function safeHref(value) {
    const v = String(value);
    return v.startsWith("/") && !v.startsWith("//") ? v : "#";
  }

  /** el("a", {href: "/jobs/1", class: "x"}, "text", child): a DOM node; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "href") node.setAttribute("href", safeHref(value));
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function initial() {
    const node = document.getElementById("initial-data");
    return node ? JSON.parse(node.textContent) : {};
  }

  /** fetch() the API as JSON, with the CSRF header; a non-2xx answer throws its {error, hint}. */
  async function api(method, path, body) {
    const options = { method, credentials: "same-origin",
                      headers: { "Accept": "application/json", "X-ABP-CSRF": csrf } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      error.hint = data && data.hint;
      error.status = response.status;
      throw error;
    }
    return data;
  }

  let toastTimer = null;
  function toast(message, kind) {
    const node = document.getElementById("toast");
    if (!node) return;
    node.textContent = message;
    node.className = kind || "info";
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, kind === "error" ? 8000 : 3500);
  }

  function showError(error) {
    toast(error.hint ? `${error.message} (${error.hint})` : error.message, "error");
  }

  /** A modal confirmation (the page's <dialog>); resolves true only on "Confirm". */
  function confirmDialog(message) {
    const dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(message));
    dialog.querySelector(".confirm-message").textContent = message;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "cancel";
      dialog.showModal();
    });
  }

  /** Buttons with data-action call handler(action, button), after data-confirm if they have one. */
  function wireActions(root, handler) {
    root.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button || button.disabled || !root.contains(button)) return;
      if (button.dataset.confirm && !(await confirmDialog(button.dataset.confirm))) return;
      button.disabled = true;
      try { await handler(button.dataset.action, button); } catch (error) { showError(error); }
      finally { button.disabled = false; }
    });
  }

  /** Follow a Server-Sent Events stream; handlers by event name get the parsed data. */
  function stream(url, handlers) {
    const source = new EventSource(url);
    const indicator = document.getElementById("live-indicator");
    source.onopen = () => { if (indicator) { indicator.hidden = false; indicator.classList.remove("off"); } };
    source.onerror = () => { if (indicator) indicator.classList.add("off"); };
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
    }
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  // -- formatting -------------------------------------------------------------------------------

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Number(seconds);
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${Math.round(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} m`;
    return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
  }
  function money(value) {
    if (value === null || value === undefined) return "—";
    const v = Number(value);
    return v === 0 ? "$0" : v < 1 ? `$${v.toFixed(4)}` : `$${v.toFixed(2)}`;
  }
  function rate(value) {
    const v = Number(value || 0);
    return v === 0 ? "—" : v < 1 ? `${(v * 60).toFixed(1)}/min` : `${v.toFixed(v < 10 ? 2 : 1)}/s`;
  }
  function int(value) { return Number(value || 0).toLocaleString("en-US"); }
  function age(ts) {
    if (!ts) return "—";
    return duration(Math.max(0, Date.now() / 1000 - ts)).replace(/ \d+ s$/, "") + " ago";
  }
  function time(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "—"; }

  function badge(status, extra) {
    return el("span", { class: "badge", dataset: { status } }, status, extra ? el("small", {}, ` ${extra}`) : null);
  }

  function progressBar(percent, label) {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${Math.max(0, Math.min(100, Number(percent) || 0))}%`;
    return el("div", { class: "bar" }, fill, el("span", { class: "bar-label" }, label));
  }

  function setBar(fillNode, labelNode, percent, label) {
    fillNode.style.width = `${Math.max(0, Math.min(100, Number(percent) || 0))}%`;
    labelNode.textContent = label;
  }

  /** dl.facts from [[label, value], ...]; a Node value is appended as is. */
  function facts(node, pairs) {
    node.replaceChildren(...pairs.map(([label, value]) => el("div", { class: "fact" }, el("dt", {}, label), el("dd", {}, value))));
  }

  /** A short line for an event: what an agent is doing (used by activity and summaries). */
  function describeEvent(event) {
    if (!event) return "";
    const d = event.data || {};
    const cut = (text, n) => { const t = String(text ?? "").replace(/\s+/g, " ").trim(); return t.length > n ? `${t.slice(0, n)}…` : t; };
    switch (event.kind) {
      case "tool_use": {
        const input = d.input || {};
        const first = input.command || input.file_path || input.path || input.pattern || input.url || input.query;
        return `${d.name || "tool"}${first ? `: ${cut(first, 90)}` : ""}`;
      }
      case "tool_result": return `result${d.is_error ? " (error)" : ""}: ${cut(d.content, 90)}`;
      case "assistant": return `says: ${cut(d.text, 100)}`;
      case "thinking": return "thinking…";
      case "command": return `$ ${cut((d.argv || []).join(" "), 100)}`;
      case "stdout": case "stderr": return `${event.kind}: ${cut(d.text ?? d.line, 100)}`;
      case "start": return `attempt ${d.attempt ?? event.attempt} started`;
      case "end": return `finished in ${duration(d.duration_s)}`;
      case "error": return `error: ${cut(d.error, 100)}`;
      default: return event.kind;
    }
  }

  document.addEventListener("click", async (event) => {
    if (!event.target.closest("[data-logout]")) return;
    try { await fetch("/logout", { method: "POST", headers: { "X-ABP-CSRF": csrf }, credentials: "same-origin" }); }
    finally { window.location.assign("/login"); }
  });

  return { el, initial, api, toast, showError, confirmDialog, wireActions, stream, debounce, duration, money,
           rate, int, age, time, badge, progressBar, setBar, facts, describeEvent, safeHref };
})();
