/* Inline SVG charts drawn from /api/jobs/{id}/timeseries points: bars for throughput, a line for
 * cumulative cost. No library; every label is a text node. */
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 180, PAD = { left: 52, right: 10, top: 12, bottom: 26 };

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function frame(root, max, format, points, width) {
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "svg-chart", role: "img" });
    const innerH = H - PAD.top - PAD.bottom;
    for (const fraction of [0, 0.5, 1]) {
      const y = PAD.top + innerH * (1 - fraction);
      chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid-line" }));
      chart.append(svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, format(max * fraction)));
    }
    if (points.length) {
      const start = new Date(points[0].t * 1000), end = new Date((points[points.length - 1].t + width) * 1000);
      const label = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
      chart.append(svg("text", { x: PAD.left, y: H - 6, class: "axis" }, label(start)));
      chart.append(svg("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end", class: "axis" }, label(end)));
    }
    root.replaceChildren(chart);
    return chart;
  }

  /** Units finished per bucket (completed stacked under failed), as rate per second on hover. */
  function throughput(root, series) {
    const points = series.points || [];
    if (!points.length) { root.replaceChildren(empty()); return; }
    const max = niceMax(Math.max(...points.map((p) => p.completed + p.failed)));
    const chart = frame(root, max, (v) => String(Math.round(v)), points, series.width);
    const innerW = W - PAD.left - PAD.right, innerH = H - PAD.top - PAD.bottom;
    const step = innerW / points.length, barW = Math.max(1, step - 1);
    points.forEach((p, i) => {
      const x = PAD.left + i * step;
      const okH = (p.completed / max) * innerH, failH = (p.failed / max) * innerH;
      const group = svg("g", {});
      group.append(svg("title", {}, `${p.completed} completed, ${p.failed} failed in ${series.width} s ` +
        `(${((p.completed + p.failed) / series.width).toFixed(2)}/s)`));
      group.append(svg("rect", { x, y: PAD.top + innerH - okH, width: barW, height: okH, class: "bar-ok" }));
      if (failH > 0) group.append(svg("rect", { x, y: PAD.top + innerH - okH - failH, width: barW, height: failH, class: "bar-failed" }));
      chart.append(group);
    });
  }

  /** Cumulative cost over time. */
  function cost(root, series) {
    const points = series.points || [];
    if (!points.length) { root.replaceChildren(empty()); return; }
    const max = niceMax(Math.max(...points.map((p) => p.cost_total), 0.0001));
    const chart = frame(root, max, (v) => ABP.money(v), points, series.width);
    const innerW = W - PAD.left - PAD.right, innerH = H - PAD.top - PAD.bottom;
    const xy = points.map((p, i) => [PAD.left + ((i + 1) / points.length) * innerW, PAD.top + innerH * (1 - p.cost_total / max)]);
    const line = [[PAD.left, PAD.top + innerH], ...xy].map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    chart.append(svg("polygon", { points: `${line} ${(PAD.left + innerW).toFixed(1)},${PAD.top + innerH}`, class: "area" }));
    chart.append(svg("polyline", { points: line, class: "line" }));
    const last = points[points.length - 1];
    chart.append(svg("title", {}, `${ABP.money(last.cost_total)} spent`));
  }

  function empty() {
    const node = document.createElement("p");
    node.className = "muted empty";
    node.textContent = "Nothing has run yet.";
    return node;
  }

  ABP.charts = { throughput, cost };
})();
