/// GET /chat: one self-contained chat page (no CDN, no external file) speaking the JSON
/// protocol over a WebSocket to /ws: pick a name and a room, see members come and go, read
/// and send messages.
///
/// The members list holds the names the page has seen (itself, `user_joined`, `presence`
/// diffs, senders of chat messages; `user_left` removes): the protocol has no "who is here" request, so members who
/// joined before this page are counted (`joined`/`presence` `members`) but not named.
///
/// Query parameters drive it without a human (the browser test does): `user` and `room` fill
/// the form and connect at once; `send` is sent as soon as the room is joined (and again each
/// time another member joins, so a page that joined later still gets it). The page records
/// its state in `body[data-state]` and the number of chat messages it showed in
/// `body[data-received]`.
enum ChatPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tcpserver chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #0f1419; color: #e6e6e6; display: flex; flex-direction: column; height: 100vh; }
  header { padding: 10px 16px; background: #1a2028; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 17px; margin: 0 12px 0 0; }
  input, button { font: inherit; padding: 5px 8px; border-radius: 5px; border: 1px solid #2b3440; background: #0f1419; color: #e6e6e6; }
  button { background: #2d6a3e; border-color: #2d6a3e; cursor: pointer; }
  button:disabled { background: #2b3440; border-color: #2b3440; cursor: default; }
  #status { padding: 2px 8px; border-radius: 10px; background: #2b3440; }
  #status.on { background: #2d6a3e; }
  #status.err { background: #a33; }
  main { flex: 1; display: grid; grid-template-columns: 1fr 220px; gap: 12px; padding: 12px 16px; min-height: 0; }
  #log { background: #1a2028; border-radius: 8px; padding: 10px; overflow-y: auto; list-style: none; margin: 0; }
  #log li { padding: 3px 0; word-wrap: break-word; }
  #log .from { color: #4fc3f7; font-weight: 600; margin-right: 6px; }
  #log .me .from { color: #81c784; }
  #log .note { color: #9fb3c8; font-style: italic; }
  #log time { color: #6b7c8f; font-size: 12px; margin-right: 6px; font-variant-numeric: tabular-nums; }
  aside { background: #1a2028; border-radius: 8px; padding: 10px; overflow-y: auto; }
  aside h2 { font-size: 13px; margin: 0 0 8px; color: #9fb3c8; }
  #members { list-style: none; padding: 0; margin: 0; }
  #members li::before { content: "● "; color: #81c784; }
  footer { display: flex; gap: 8px; padding: 0 16px 14px; }
  footer input { flex: 1; }
</style>
</head>
<body data-state="idle" data-received="0">
<header>
  <h1>tcpserver chat</h1>
  <label>name <input id="user" size="12" maxlength="64" autocomplete="off"></label>
  <label>room <input id="room" size="12" maxlength="64" value="lobby" autocomplete="off"></label>
  <button id="connect">join</button>
  <span id="status">not connected</span>
</header>
<main>
  <ul id="log" aria-live="polite"></ul>
  <aside><h2 id="count">members</h2><ul id="members"></ul></aside>
</main>
<footer>
  <input id="text" placeholder="message" maxlength="4000" autocomplete="off" disabled>
  <button id="send" disabled>send</button>
</footer>
<script>
"use strict";
const $ = id => document.getElementById(id);
const params = new URLSearchParams(location.search);
let ws = null, me = "", room = "", joined = false;
const members = new Set();

function state(s, text, cls) {
  document.body.dataset.state = s;
  $("status").textContent = text;
  $("status").className = cls || "";
}
function clock(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toTimeString().slice(0, 8);
}
function line(from, text, ts, cls) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  const t = document.createElement("time");
  t.textContent = clock(ts);
  li.appendChild(t);
  if (from !== null) {
    const f = document.createElement("span");
    f.className = "from";
    f.textContent = from;
    li.appendChild(f);
  }
  li.appendChild(document.createTextNode(text));
  const log = $("log");
  log.appendChild(li);
  log.scrollTop = log.scrollHeight;
  return li;
}
function note(text) { line(null, text, 0, "note"); }
function drawMembers(count) {
  const ul = $("members");
  ul.replaceChildren(...[...members].sort().map(n => {
    const li = document.createElement("li");
    li.textContent = n === me ? n + " (you)" : n;
    return li;
  }));
  if (count !== undefined) $("count").textContent = count + (count === 1 ? " member" : " members");
}
function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}
function sendText(text) {
  if (!text || !joined) return;
  send({ type: "send_chat", room, text });
  line(me, text, 0, "me");
}

function connect() {
  me = $("user").value.trim();
  room = $("room").value.trim();
  if (!me || !room) { state("idle", "name and room, please", "err"); return; }
  if (ws) ws.close();
  members.clear();
  joined = false;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  state("connecting", "connecting…");
  ws = new WebSocket(url);
  ws.onopen = () => send({ type: "hello", user: me });
  ws.onmessage = ev => {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { note("unreadable message from the server"); return; }
    switch (m.type) {
      case "welcome":
        send({ type: "join_room", room });
        break;
      case "joined":
        joined = true;
        members.add(me);
        drawMembers(m.members);
        state("joined", "in " + m.room, "on");
        $("text").disabled = false;
        $("send").disabled = false;
        note("you joined " + m.room);
        if (params.get("send")) sendText(params.get("send"));
        break;
      case "user_joined":
        members.add(m.user);
        drawMembers();
        note(m.user + " joined");
        if (params.get("send")) sendText(params.get("send"));   // so a later joiner sees it too
        break;
      case "user_left":
        members.delete(m.user);
        drawMembers();
        note(m.user + " left");
        break;
      case "presence":
        (m.joined || []).forEach(n => members.add(n));
        (m.left || []).forEach(n => members.delete(n));
        drawMembers(m.members);
        break;
      case "chat": {
        if (!members.has(m.from)) { members.add(m.from); drawMembers(); }   // a sender is a member
        const li = line(m.from, m.text, m.ts, "chat");
        li.dataset.from = m.from;
        document.body.dataset.received = String(Number(document.body.dataset.received) + 1);
        break;
      }
      case "ping":
        send({ type: "ping" });
        break;
      case "error":
        note("error " + m.code + ": " + m.message);
        break;
      case "shutdown":
        note("the server is shutting down");
        break;
    }
  };
  ws.onclose = ev => {
    joined = false;
    $("text").disabled = true;
    $("send").disabled = true;
    state("closed", "disconnected" + (ev.code ? " (" + ev.code + (ev.reason ? ": " + ev.reason : "") + ")" : ""), "err");
  };
  ws.onerror = () => state("error", "connection failed", "err");
}

$("connect").onclick = connect;
$("room").onkeydown = e => { if (e.key === "Enter") connect(); };
$("send").onclick = () => { sendText($("text").value); $("text").value = ""; $("text").focus(); };
$("text").onkeydown = e => { if (e.key === "Enter") $("send").onclick(); };
if (params.get("user")) $("user").value = params.get("user");
if (params.get("room")) $("room").value = params.get("room");
if (params.get("user") && params.get("room")) connect();
</script>
</body>
</html>
"""#
}
