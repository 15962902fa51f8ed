/// GET /dashboard: one self-contained page (no CDN, no external file) that polls /stats once a
/// second and draws throughput, latency p50/p99, connections and memory on canvases.
/// Each chart records how many points it drew in `data-points`, which the browser test reads.
enum DashboardPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tcpserver dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #0f1419; color: #e6e6e6; }
  header { padding: 12px 20px; background: #1a2028; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  .pill { padding: 2px 8px; border-radius: 10px; background: #2b3440; }
  .pill.bad { background: #a33; }
  .pill.ok { background: #2d6a3e; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; padding: 16px 20px; }
  section { background: #1a2028; border-radius: 8px; padding: 12px; }
  section h2 { font-size: 14px; margin: 0 0 8px; color: #9fb3c8; font-weight: 600; }
  canvas { width: 100%; height: 180px; display: block; }
  .legend span { margin-right: 12px; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: 3px 6px; border-bottom: 1px solid #2b3440; }
  #error { color: #f88; padding: 0 20px; }
</style>
</head>
<body>
<header>
  <h1>tcpserver</h1>
  <span>io <b id="io">–</b></span>
  <span>threads <b id="threads">–</b></span>
  <span>kernel <b id="kernel">–</b></span>
  <span>uptime <b id="uptime">–</b> s</span>
  <span id="state" class="pill">–</span>
</header>
<div id="error"></div>
<main>
  <section><h2>Throughput (per second)</h2>
    <div class="legend"><span style="color:#4fc3f7">■ messages in</span><span style="color:#81c784">■ deliveries</span></div>
    <canvas id="throughput" data-points="0"></canvas></section>
  <section><h2>Latency (ms, receive → send complete)</h2>
    <div class="legend"><span style="color:#ffd54f">■ p50</span><span style="color:#ff8a65">■ p99</span></div>
    <canvas id="latency" data-points="0"></canvas></section>
  <section><h2>Connections</h2>
    <canvas id="connections" data-points="0"></canvas></section>
  <section><h2>Memory (RSS, MB)</h2>
    <canvas id="memory" data-points="0"></canvas></section>
  <section><h2>Feature flags</h2><table id="flags"><tr><th>flag</th><th>on</th><th>rollout</th><th>critical</th><th>shed</th></tr></table></section>
  <section><h2>Reactors</h2><table id="reactors"><tr><th>#</th><th>connections</th><th>msg/s</th><th>deliveries/s</th><th>p99 ms</th></tr></table></section>
</main>
<script>
"use strict";
const MAX = 120;
const series = { msg: [], del: [], p50: [], p99: [], conn: [], mem: [] };

function push(arr, v) { arr.push(v); if (arr.length > MAX) arr.shift(); }

function draw(id, lines) {
  const c = document.getElementById(id);
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || 400, h = c.clientHeight || 180;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  let max = 0;
  for (const l of lines) for (const v of l.data) max = Math.max(max, v);
  if (max <= 0) max = 1;
  const pad = 36;
  g.strokeStyle = "#2b3440"; g.fillStyle = "#9fb3c8"; g.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = 8 + (h - 24) * i / 4;
    g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 4, y); g.stroke();
    const v = max * (1 - i / 4);
    g.fillText(v >= 1000 ? (v / 1000).toFixed(1) + "k" : v.toFixed(v < 10 ? 2 : 0), 2, y + 4);
  }
  let points = 0;
  for (const l of lines) {
    g.strokeStyle = l.color; g.lineWidth = 2; g.beginPath();
    l.data.forEach((v, i) => {
      const x = pad + (w - pad - 4) * i / (MAX - 1);
      const y = 8 + (h - 24) * (1 - v / max);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      points++;
    });
    g.stroke();
  }
  c.dataset.points = String(points);
}

function table(id, header, rows) {
  const t = document.getElementById(id);
  t.innerHTML = header + rows.map(r => "<tr>" + r.map(x => "<td>" + x + "</td>").join("") + "</tr>").join("");
}

async function poll() {
  try {
    const r = await fetch("/stats", { cache: "no-store" });
    const s = await r.json();
    document.getElementById("error").textContent = "";
    document.getElementById("io").textContent = s.io_mode;
    document.getElementById("threads").textContent = s.threads;
    document.getElementById("kernel").textContent = s.kernel;
    document.getElementById("uptime").textContent = s.uptime_s;
    const st = document.getElementById("state");
    st.textContent = s.draining ? "draining" : (s.overloaded ? "overloaded" : "healthy");
    st.className = "pill " + (s.overloaded || s.draining ? "bad" : "ok");
    push(series.msg, s.msg_per_sec); push(series.del, s.deliveries_per_sec);
    push(series.p50, s.latency_p50_ms); push(series.p99, s.latency_p99_ms);
    push(series.conn, s.connections); push(series.mem, s.memory_mb);
    draw("throughput", [{ data: series.msg, color: "#4fc3f7" }, { data: series.del, color: "#81c784" }]);
    draw("latency", [{ data: series.p50, color: "#ffd54f" }, { data: series.p99, color: "#ff8a65" }]);
    draw("connections", [{ data: series.conn, color: "#ba68c8" }]);
    draw("memory", [{ data: series.mem, color: "#4db6ac" }]);
    table("flags", "<tr><th>flag</th><th>on</th><th>rollout</th><th>critical</th><th>shed</th></tr>",
          s.flags.map(f => [f.name, f.enabled, f.percent + "%", f.critical, f.shed]));
    table("reactors", "<tr><th>#</th><th>connections</th><th>msg/s</th><th>deliveries/s</th><th>p99 ms</th></tr>",
          s.reactors.map(x => [x.index, x.connections, x.msg_per_sec, x.deliveries_per_sec, x.latency_p99_ms]));
    document.body.dataset.polls = String((Number(document.body.dataset.polls) || 0) + 1);
  } catch (e) {
    document.getElementById("error").textContent = "cannot read /stats: " + e;
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
"""#
}
