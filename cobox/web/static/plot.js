// The transfer plot: this device's download and upload in bytes per second (or, per group,
// bytes received or entries per second), the last five minutes, drawn as SVG polylines; the scale's top is written in human units.
"use strict";

const HISTORY_SECONDS = 300;
const MAX_SAMPLES = 400;

function niceMax(v) {
  // the smallest 1, 2 or 5 times a power of ten (of 1024 for bytes) at or above v
  const bytes = $("#plot-metric").value !== "entries";
  const base = bytes ? 1024 : 10;
  let p = 1;
  while (p * base <= v) p *= base;
  for (const m of bytes ? [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] : [1, 2, 5]) if (m * p >= v) return m * p;
  return base * p;
}

function drawPlot() {
  const svg = $("#plot");
  const metric = $("#plot-metric").value;
  const W = 800, H = 160;
  const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  // each series: a name and how to read its counter from a sample (undefined: not in it)
  const counters = metric === "traffic"
    ? [["Download", (s) => s.received], ["Upload", (s) => s.sent]]
    : [...new Set(samples.flatMap((s) => Object.keys(s.groups)))].sort().map((name) =>
      [name, (s) => (s.groups[name] ? s.groups[name][metric] : undefined)]);
  const names = counters.map(([name]) => name);
  const series = counters.map(([name, read]) => {
    const pts = [];
    for (let i = 1; i < samples.length; i++) {
      const a = read(samples[i - 1]), b = read(samples[i]);
      const dt = samples[i].t - samples[i - 1].t;
      if (a === undefined || b === undefined || dt <= 0 || now - samples[i].t > HISTORY_SECONDS) continue;
      pts.push([samples[i].t, Math.max(0, (b - a) / dt)]);
    }
    return { name, pts };
  });
  const peak = Math.max(0, ...series.flatMap((s) => s.pts.map((p) => p[1])));
  const max = niceMax(Math.max(metric === "entries" ? 1 : 1024, peak));
  const ns = "http://www.w3.org/2000/svg";
  const kids = [];
  for (let k = 1; k < 4; k++) {
    const line = document.createElementNS(ns, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", 0); line.setAttribute("x2", W);
    line.setAttribute("y1", H * k / 4); line.setAttribute("y2", H * k / 4);
    kids.push(line);
  }
  series.forEach((s, i) => {
    if (!s.pts.length) return;
    const pl = document.createElementNS(ns, "polyline");
    pl.setAttribute("class", `sw${i % 6}`);
    pl.setAttribute("points", s.pts.map(([t, v]) =>
      `${(W - (now - t) / HISTORY_SECONDS * W).toFixed(1)},${(H - 2 - v / max * (H - 4)).toFixed(1)}`).join(" "));
    kids.push(pl);
  });
  svg.replaceChildren(...kids);
  const unit = metric !== "entries" ? fmtRate(max) : `${max} entries/s`;
  const latest = series.map((s) => s.pts.length ? s.pts[s.pts.length - 1][1] : 0).reduce((a, b) => a + b, 0);
  $("#plot-axis").textContent = `Last ${HISTORY_SECONDS / 60} minutes · top line ${unit} · now ${
    metric !== "entries" ? fmtRate(latest) : `${latest.toFixed(latest < 10 ? 1 : 0)} entries/s`}`;
  $("#plot").setAttribute("aria-label", `transfer plot: ${$("#plot-axis").textContent}`);
  const legend = metric + "\n" + names.join("\n");
  if ($("#legend").dataset.sig !== legend) {
    $("#legend").dataset.sig = legend;
    $("#legend").replaceChildren(...series.map((s, i) => el("li", {}, el("span", { class: `swatch sw${i % 6}` }), s.name)));
  }
}

$("#plot-metric").addEventListener("change", drawPlot);
