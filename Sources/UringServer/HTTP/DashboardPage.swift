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
  #breaches { color: #f4a; font-size: 12px; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; padding: 16px 20px; }
  section { background: #1a2028; border-radius: 8px; padding: 12px; min-width: 0; }
  section h2 { font-size: 14px; margin: 0 0 6px; color: #9fb3c8; font-weight: 600; }
  canvas { width: 100%; height: 180px; display: block; }
  .legend { min-height: 18px; margin-bottom: 4px; }
  .legend span { margin-right: 14px; white-space: nowrap; }
  .legend b { color: #e6e6e6; font-weight: 600; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  td, th { text-align: left; padding: 3px 6px; border-bottom: 1px solid #2b3440; }
  #error { color: #f88; padding: 0 20px; }
  #error:not(:empty) { padding: 8px 20px; background: #3a1d1d; }
</style>
</head>
<body data-polls="0">
<header>
  <h1>tcpserver</h1>
  <span>io <b id="io">–</b></span>
  <span>threads <b id="threads">–</b></span>
  <span>kernel <b id="kernel">–</b></span>
  <span>uptime <b id="uptime">–</b> s</span>
  <span id="state" class="pill">–</span>
  <span id="breaches"></span>
</header>
<div id="error"></div>
<main>
  <section><h2>Throughput (per second)</h2>
    <div class="legend"><span style="color:#4fc3f7">■ messages in <b id="v-msg"></b></span><span style="color:#81c784">■ deliveries <b id="v-del"></b></span></div>
    <canvas id="throughput" data-points="0"></canvas></section>
  <section><h2>Latency (ms, receive → send complete)</h2>
    <div class="legend"><span style="color:#ffd54f">■ p50 <b id="v-p50"></b></span><span style="color:#ff8a65">■ p99 <b id="v-p99"></b></span></div>
    <canvas id="latency" data-points="0"></canvas></section>
  <section><h2>Connections</h2>
    <div class="legend"><span style="color:#ba68c8">■ open <b id="v-conn"></b></span><span>of them WebSocket <b id="v-ws"></b></span></div>
    <canvas id="connections" data-points="0"></canvas></section>
  <section><h2>Memory (RSS, MB)</h2>
    <div class="legend"><span style="color:#4db6ac">■ RSS <b id="v-mem"></b></span></div>
    <canvas id="memory" data-points="0"></canvas></section>
  <section><h2>Feature flags</h2><table id="flags"><tr><th>flag</th><th>on</th><th>rollout</th><th>critical</th><th>shed</th></tr></table></section>
  <section><h2>Reactors</h2><table id="reactors"><tr><th>#</th><th>connections</th><th>msg/s</th><th>deliveries/s</th><th>p99 ms</th></tr></table></section>
</main>
<script>
"use strict";
const MAX = 120;   // points kept: two minutes at one poll a second
const series = { msg: [], del: [], p50: [], p99: [], conn: [], mem: [] };

function push(arr, v) { arr.push(Number(v) || 0); if (arr.length > MAX) arr.shift(); }

// 1234 → "1.23k", 2621812 → "2.62M"; small values keep decimals.
function fmt(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return parseFloat((v / 1e6).toFixed(a >= 1e8 ? 0 : a >= 1e7 ? 1 : 2)) + "M";
  if (a >= 1e4) return parseFloat((v / 1e3).toFixed(a >= 1e5 ? 0 : 1)) + "k";
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
  return v.toFixed(a >= 10 ? 1 : 2);
}

// The smallest "nice" axis top (1, 2, 2.5 or 5 × 10^k, times 4 grid steps) at or above max.
function niceTop(max) {
  if (!(max > 0)) return 1;
  const raw = max / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag * 4;
  return max;
}

function draw(id, lines) {
  const c = document.getElementById(id);
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || 400, h = c.clientHeight || 180;
  c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  let max = 0, n = 0;
  for (const l of lines) { n = Math.max(n, l.data.length); for (const v of l.data) max = Math.max(max, v); }
  const top = niceTop(max);
  const pad = 48, right = w - 6, y0 = 8, y1 = h - 18;
  g.lineWidth = 1; g.strokeStyle = "#2b3440"; g.fillStyle = "#9fb3c8"; g.font = "11px system-ui, sans-serif";
  g.textAlign = "right"; g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(y0 + (y1 - y0) * i / 4) + 0.5;
    g.beginPath(); g.moveTo(pad, y); g.lineTo(right, y); g.stroke();
    g.fillText(fmt(top * (1 - i / 4)), pad - 6, y);
  }
  // x: the oldest point at the left edge, the newest at the right; spacing grows denser until
  // MAX points (two minutes) are kept.
  g.textBaseline = "alphabetic";
  g.fillText(n > 1 ? "now" : "", right, h - 3);
  g.textAlign = "left";
  if (n > 1) g.fillText("−" + (n - 1) + " s", pad, h - 3);
  const xAt = i => n > 1 ? pad + (right - pad) * i / (n - 1) : right;
  const yAt = v => y1 - (y1 - y0) * Math.min(v, top) / top;
  let points = 0;
  for (const l of lines) {
    const off = n - l.data.length;
    g.strokeStyle = l.color; g.fillStyle = l.color; g.lineWidth = 2; g.lineJoin = "round";
    g.beginPath();
    l.data.forEach((v, i) => {
      const x = xAt(i + off), y = yAt(v);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      points++;
    });
    g.stroke();
    if (l.data.length > 0) {   // the latest value as a dot (also makes a single point visible)
      g.beginPath(); g.arc(xAt(n - 1), yAt(l.data[l.data.length - 1]), 3, 0, 2 * Math.PI); g.fill();
    }
  }
  c.dataset.points = String(points);
}

function setText(id, v) { document.getElementById(id).textContent = v; }

function table(id, header, rows) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const head = t.insertRow();
  for (const hname of header) { const th = document.createElement("th"); th.textContent = hname; head.appendChild(th); }
  for (const r of rows) {
    const tr = t.insertRow();
    for (const x of r) tr.insertCell().textContent = String(x);
  }
}

async function poll() {
  try {
    const r = await fetch("/stats", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status + " " + (await r.text()).trim());
    const s = await r.json();
    setText("error", "");
    setText("io", s.io_mode);
    setText("threads", s.threads);
    setText("kernel", s.kernel);
    setText("uptime", s.uptime_s);
    const st = document.getElementById("state");
    st.textContent = s.draining ? "draining" : (s.overloaded ? "overloaded" : "healthy");
    st.className = "pill " + (s.overloaded || s.draining ? "bad" : "ok");
    setText("breaches", s.overloaded && s.breaches ? s.breaches.join("; ") : "");
    push(series.msg, s.msg_per_sec); push(series.del, s.deliveries_per_sec);
    push(series.p50, s.latency_p50_ms); push(series.p99, s.latency_p99_ms);
    push(series.conn, s.connections); push(series.mem, s.memory_mb);
    setText("v-msg", fmt(s.msg_per_sec) + "/s"); setText("v-del", fmt(s.deliveries_per_sec) + "/s");
    setText("v-p50", fmt(s.latency_p50_ms) + " ms"); setText("v-p99", fmt(s.latency_p99_ms) + " ms");
    setText("v-conn", fmt(s.connections)); setText("v-ws", fmt((s.totals || {}).websocket_connections || 0)); setText("v-mem", fmt(s.memory_mb) + " MB");
    draw("throughput", [{ data: series.msg, color: "#4fc3f7" }, { data: series.del, color: "#81c784" }]);
    draw("latency", [{ data: series.p50, color: "#ffd54f" }, { data: series.p99, color: "#ff8a65" }]);
    draw("connections", [{ data: series.conn, color: "#ba68c8" }]);
    draw("memory", [{ data: series.mem, color: "#4db6ac" }]);
    table("flags", ["flag", "on", "rollout", "critical", "shed"],
          (s.flags || []).map(f => [f.name, f.enabled, f.percent + "%", f.critical, f.shed]));
    table("reactors", ["#", "connections", "msg/s", "deliveries/s", "p99 ms"],
          (s.reactors || []).map(x => [x.index, x.connections, x.msg_per_sec, x.deliveries_per_sec, x.latency_p99_ms]));
    document.body.dataset.polls = String((Number(document.body.dataset.polls) || 0) + 1);
  } catch (e) {
    setText("error", "cannot read /stats: " + (e && e.message ? e.message : e));
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
"""#
}
