// Hand-drawn SVG charts (no library): bars or lines, one slot per interval, each value in a <title> tooltip.

import { when } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600, HEIGHT = 180, LEFT = 48, BOTTOM = 22;

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// `span` is the window: `count` intervals of `step` seconds from `start`; intervals the API left out (no
// requests) stay empty, so one busy hour looks like one bar in a week, not like the whole week.
function slotOf(x, span) {
  return Math.min(span.count - 1, Math.max(0, Math.round((x - span.start) / span.step)));
}

// The axes, the highest and lowest ticks and the window's first and last day; `top` is the plot's top.
function frame(title, most, empty, span, top) {
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "bars" });
  chart.append(svg("title", {}, title));
  chart.append(svg("line", { x1: LEFT, y1: HEIGHT - BOTTOM, x2: WIDTH, y2: HEIGHT - BOTTOM, class: "axis" }));
  chart.append(svg("text", { x: LEFT - 4, y: top + 10, "text-anchor": "end", class: "tick" }, most.toFixed(0)));
  chart.append(svg("text", { x: LEFT - 4, y: HEIGHT - BOTTOM, "text-anchor": "end", class: "tick" }, "0"));
  if (empty) {
    chart.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "tick" }, "no data"));
  }
  const day = (t) => new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");
  chart.append(svg("text", { x: LEFT, y: HEIGHT - 6, class: "tick" }, day(span.start)));
  chart.append(
    svg("text", { x: WIDTH, y: HEIGHT - 6, "text-anchor": "end", class: "tick" }, day(span.start + span.count * span.step)),
  );
  return chart;
}

const stamp = (x) => when(new Date(x * 1000).toISOString());

export function barChart(container, points, unit, span) {
  const top = 8;
  const most = Math.max(1, ...points.map((p) => p.y));
  const title = `${points.length} intervals with requests, highest ${most.toFixed(0)} ${unit}`;
  const chart = frame(title, most, !points.length, span, top);
  const step = (WIDTH - LEFT) / span.count;
  for (const p of points) {
    const i = slotOf(p.x, span);
    const h = ((HEIGHT - BOTTOM - top) * p.y) / most;
    const bar = svg("rect", {
      x: LEFT + i * step + step * 0.1, y: HEIGHT - BOTTOM - h, width: Math.max(step * 0.8, 1), height: h, class: "bar",
    });
    bar.append(svg("title", {}, `${stamp(p.x)}: ${p.y.toFixed(1)} ${unit}`));
    chart.append(bar);
  }
  container.replaceChildren(chart);
}

// `series` is [{key, label, points: [{x, y}]}], drawn in that order under a legend of their labels (class
// `series-<key>` colours a series). A line joins neighbouring intervals only: an interval without requests
// (left out by the API, or y null) breaks it, so a gap is not drawn as a slope; every value is a dot.
export function lineChart(container, series, unit, span) {
  const top = 24;
  const values = series.flatMap((s) => s.points.filter((p) => p.y !== null && p.y !== undefined));
  const most = Math.max(1, ...values.map((p) => p.y));
  const names = series.map((s) => s.label).join(" and ");
  const title = `${names} per interval, ${values.length ? `highest ${most.toFixed(0)} ${unit}` : "no data"}`;
  const chart = frame(title, most, !values.length, span, top);
  const step = (WIDTH - LEFT) / span.count;
  const at = (p) => [LEFT + (slotOf(p.x, span) + 0.5) * step, HEIGHT - BOTTOM - ((HEIGHT - BOTTOM - top) * p.y) / most];
  series.forEach((s, n) => {
    const cls = `series-${s.key}`;
    const legend = svg("g", { class: `legend ${cls}` });
    const x = WIDTH - 70 * (series.length - n);
    legend.append(svg("line", { x1: x, y1: 9, x2: x + 18, y2: 9, class: "line" }));
    legend.append(svg("text", { x: x + 22, y: 13, class: "tick" }, s.label));
    chart.append(legend);
    const points = s.points.filter((p) => p.y !== null && p.y !== undefined).sort((a, b) => a.x - b.x);
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        chart.append(svg("polyline", { points: run.map((p) => at(p).join(",")).join(" "), class: `line ${cls}` }));
      }
      run = [];
    };
    points.forEach((p, i) => {
      if (i && slotOf(p.x, span) - slotOf(points[i - 1].x, span) > 1) flush();
      run.push(p);
    });
    flush();
    for (const p of points) {
      const [cx, cy] = at(p);
      const dot = svg("circle", { cx, cy, r: 2.5, class: `dot ${cls}` });
      dot.append(svg("title", {}, `${stamp(p.x)}: ${s.label} ${p.y.toFixed(1)} ${unit}`));
      chart.append(dot);
    }
  });
  container.replaceChildren(chart);
}
