/* A small, safe markdown renderer for agent text (untrusted).
 *
 * Order matters: the text is HTML-escaped FIRST, whole; only then are a few constructs turned into
 * tags we write ourselves: paragraphs, headings, fenced code blocks, inline code, bold, italic,
 * lists, quotes, and links whose target is an http(s) URL. Raw HTML in the text therefore shows as
 * text, and a `javascript:` (or any non-http) link stays plain text. No attribute ever carries
 * text that was not escaped, and link targets are escaped too.
 */
"use strict";

(() => {
  const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ENTITIES[c]);
  const LIST_ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+/;
  const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;

  /** Inline constructs on one block of ESCAPED text; code spans and links are stashed first so
   *  emphasis never reaches inside them. */
  function inline(escaped) {
    const stash = [];
    const keep = (html) => `\u0000${stash.push(html) - 1}\u0000`;
    let s = escaped.replace(/`([^`\n]+)`/g, (_, code) => keep(`<code>${code}</code>`));
    s = s.replace(/\[([^\]\n]{1,500})\]\((https?:\/\/[^\s()<>]{1,2000})\)/g,
      (_, label, url) => keep(`<a href="${url}" rel="noopener noreferrer nofollow" target="_blank">${emphasis(label)}</a>`));
    s = s.replace(/(^|[\s(])(https?:\/\/[^\s()<>]{1,2000}[^\s()<>.,;:!?&])/g,
      (_, before, url) => before + keep(`<a href="${url}" rel="noopener noreferrer nofollow" target="_blank">${url}</a>`));
    s = emphasis(s).replace(/\n/g, "<br>");
    return s.replace(/\u0000(\d+)\u0000/g, (_, n) => stash[Number(n)]);
  }

  function emphasis(s) {
    return s
      .replace(/\*\*(?=\S)([^*\n]*?\S)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w])__(?=\S)([^_\n]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
      .replace(/(^|[^*\w])\*(?=\S)([^*\n]*?\S)\*(?![*\w])/g, "$1<em>$2</em>")
      .replace(/(^|[^_\w])_(?=\S)([^_\n]*?\S)_(?![_\w])/g, "$1<em>$2</em>");
  }

  /** Markdown text -> an HTML string made only of our own tags around escaped text. */
  function toHtml(source) {
    const lines = escapeHtml(String(source ?? "").replace(/\u0000/g, "").replace(/\r\n?/g, "\n")).split("\n");
    const out = [];
    let paragraph = [];
    const flush = () => {
      if (paragraph.length) out.push(`<p>${inline(paragraph.join("\n"))}</p>`);
      paragraph = [];
    };
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(FENCE);
      if (fence) {
        flush();
        const code = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { code.push(lines[i]); i += 1; }
        i += 1;
        out.push(`<pre><code>${code.join("\n")}</code></pre>`);
        continue;
      }
      if (!line.trim()) { flush(); i += 1; continue; }
      const heading = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
      if (heading) {
        flush();
        const level = Math.min(heading[1].length + 2, 6);
        out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
        i += 1;
        continue;
      }
      if (LIST_ITEM.test(line)) {
        flush();
        const ordered = /^\s{0,3}\d/.test(line);
        const items = [];
        while (i < lines.length && LIST_ITEM.test(lines[i])) {
          items.push(lines[i].replace(LIST_ITEM, ""));
          i += 1;
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !LIST_ITEM.test(lines[i])) {
            items[items.length - 1] += `\n${lines[i].trim()}`;
            i += 1;
          }
        }
        const tag = ordered ? "ol" : "ul";
        out.push(`<${tag}>${items.map((item) => `<li>${inline(item)}</li>`).join("")}</${tag}>`);
        continue;
      }
      if (/^\s{0,3}&gt;/.test(line)) {
        flush();
        const quoted = [];
        while (i < lines.length && /^\s{0,3}&gt;/.test(lines[i])) {
          quoted.push(lines[i].replace(/^\s{0,3}&gt;\s?/, ""));
          i += 1;
        }
        out.push(`<blockquote>${inline(quoted.join("\n"))}</blockquote>`);
        continue;
      }
      paragraph.push(line);
      i += 1;
    }
    flush();
    return out.join("");
  }

  /** A <div class="md"> holding the rendered text. */
  function render(source) {
    const node = document.createElement("div");
    node.className = "md";
    node.innerHTML = toHtml(source); // safe: toHtml escaped every character of `source` first
    return node;
  }

  ABP.markdown = render;
  ABP.markdownHtml = toHtml;
  ABP.escapeHtml = escapeHtml;
})();
