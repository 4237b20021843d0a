// Draws the usage page's plots with uPlot from the page's own data (no requests).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("usage-data").textContent);
  function width(el) { return Math.max(320, el.clientWidth || 900); }
  function plot(id, series, values) {
    var el = document.getElementById(id);
    if (!el || typeof uPlot === "undefined") { return; }
    var opts = {
      width: width(el),
      height: 240,
      series: [{}].concat(series),
      axes: [{}, { size: 60 }],
      scales: { x: { time: true } },
    };
    var chart = new uPlot(opts, [data.x].concat(values), el);
    el.dataset.drawn = "true";
    window.addEventListener("resize", function () { chart.setSize({ width: width(el), height: 240 }); });
  }
  plot("plot-completions", [
    { label: "shown", stroke: "#2f5fb3", width: 2 },
    { label: "accepted", stroke: "#1e8e3e", width: 2 },
    { label: "dismissed", stroke: "#b3261e", width: 1 },
  ], [data.shown, data.accepted, data.dismissed]);
  plot("plot-latency", [
    { label: "single-line p50", stroke: "#2f5fb3", width: 2, spanGaps: true, points: { show: true, size: 6 } },
    { label: "single-line p99", stroke: "#2f5fb3", dash: [6, 4], spanGaps: true, points: { show: true, size: 6 } },
    { label: "multi-line p50", stroke: "#b36b00", width: 2, spanGaps: true, points: { show: true, size: 6 } },
    { label: "multi-line p99", stroke: "#b36b00", dash: [6, 4], spanGaps: true, points: { show: true, size: 6 } },
  ], [data.single_p50, data.single_p99, data.multi_p50, data.multi_p99]);
  plot("plot-work", [
    { label: "tokens", stroke: "#5b6475", width: 2 },
    { label: "chats", stroke: "#7b1fa2", width: 2 },
    { label: "reviews", stroke: "#00838f", width: 2 },
  ], [data.tokens, data.chats, data.reviews]);
})();
