// Loss and throughput of a training job, drawn with the vendored Chart.js from the metrics API, refreshed
// while the job runs (the page head says whether it does: data-active).
(function () {
  const loss = document.getElementById("loss-chart");
  const speed = document.getElementById("throughput-chart");
  if (!loss || !window.Chart) return;
  const url = loss.dataset.metrics;

  function chart(canvas, label) {
    return new window.Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false, parsing: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { title: { display: true, text: label } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }
  const charts = [[chart(loss, "loss"), "loss"], [chart(speed, "tokens/s"), "tokens_per_second"]];

  function draw(metrics) {
    const phases = new Map();
    for (const m of metrics) {
      if (!phases.has(m.phase)) phases.set(m.phase, []);
      phases.get(m.phase).push(m);
    }
    for (const [c, field] of charts) {
      c.data.datasets = [...phases.entries()].map(([phase, rows], i) => ({
        label: "phase " + (i + 1), data: rows.map((m) => ({ x: m.step, y: m[field] })), pointRadius: 0, borderWidth: 2,
      }));
      c.update();
    }
  }

  function active() {
    const head = document.getElementById("job-head");
    return head && head.dataset.active === "true";
  }

  let wasActive = active();
  async function refresh() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) draw(await response.json());
    } finally {
      // While the job runs, and once more when it has just stopped (its last steps and checkpoint).
      const now = active();
      if (now || wasActive) setTimeout(refresh, 3000);
      wasActive = now;
    }
  }
  refresh();

  // The log panel shows its newest lines, after every refresh of the progress panel too.
  function scrollLog() {
    const log = document.getElementById("job-log");
    if (log) log.scrollTop = log.scrollHeight;
  }
  scrollLog();
  document.body.addEventListener("htmx:afterSettle", scrollLog);
})();
