// Hand-drawn SVG bar charts (no library): one rect per interval, its value in a <title> tooltip.

import { when } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// `span` is the window: `count` intervals of `step` seconds from `start`; intervals the API left out (no
// requests) stay empty, so one busy hour looks like one bar in a week, not like the whole week.
export function barChart(container, points, unit, span) {
  const width = 600, height = 180, left = 48, bottom = 22, top = 8;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "bars" });
  const most = Math.max(1, ...points.map((p) => p.y));
  chart.append(svg("title", {}, `${points.length} intervals with requests, highest ${most.toFixed(0)} ${unit}`));
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
  chart.append(svg("text", { x: left - 4, y: top + 10, "text-anchor": "end", class: "tick" }, most.toFixed(0)));
  chart.append(svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end", class: "tick" }, "0"));
  if (!points.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "tick" }, "no data"));
  }
  const step = (width - left) / span.count;
  for (const p of points) {
    const i = Math.min(span.count - 1, Math.max(0, Math.round((p.x - span.start) / span.step)));
    const h = ((height - bottom - top) * p.y) / most;
    const bar = svg("rect", {
      x: left + i * step + step * 0.1, y: height - bottom - h, width: Math.max(step * 0.8, 1), height: h, class: "bar",
    });
    bar.append(svg("title", {}, `${when(new Date(p.x * 1000).toISOString())}: ${p.y.toFixed(1)} ${unit}`));
    chart.append(bar);
  }
  const day = (t) => new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");
  chart.append(svg("text", { x: left, y: height - 6, class: "tick" }, day(span.start)));
  chart.append(
    svg("text", { x: width, y: height - 6, "text-anchor": "end", class: "tick" }, day(span.start + span.count * span.step)),
  );
  container.replaceChildren(chart);
}

