// The cobox dashboard: plain JS, no framework. Data comes from the daemon's server-sent events
// (/v1/events, read with a fetch() stream); actions are calls to the control API.
//
// Login: `cobox open` sends the browser here with a one-time code in the fragment (#code=...),
// which never reaches the server in the URL. The page drops it from the address bar at once and
// trades it (POST /v1/session) for a session secret kept in sessionStorage, which is scoped to
// this scheme, host and port. Every request carries it in the X-Cobox-Session header and sends
// no cookie (credentials: "omit"): the daemon never honours cookies, which any other local port
// would receive too.
"use strict";

const SESSION_KEY = "cobox-session";
const SESSION_HEADER = "X-Cobox-Session";
const HISTORY_SECONDS = 300;
const MAX_SAMPLES = 400;

let status = null;        // the last status document
let statusAt = 0;         // when it arrived (ms), to count the uptime on
let samples = [];         // throughput samples: {t, groups: {name: {entries, bytes}}}
let session = sessionStorage.getItem(SESSION_KEY);  // the session secret, or null
let stream = null;        // the AbortController of the live stream
let qrUrl = null;         // the object URL of the QR code shown
const groupErrors = {};   // group name -> inline error text
const leaveArmed = {};    // group name -> until when its Leave button asks for confirmation

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function short(hex) { return hex ? hex.slice(0, 16) : ""; }

function fmtBytes(n) {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtDuration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

// -- talking to the daemon -----------------------------------------------------------------------

class ApiError extends Error {}

function authHeaders() {
  return session ? { [SESSION_HEADER]: session } : {};
}

async function request(method, path, body) {
  const init = { method, credentials: "omit", headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError("The daemon cannot be reached. Is it running?");
  }
  if (r.status === 401) {
    loggedOut();
    throw new ApiError("You are not logged in: run `cobox open` to log in again.");
  }
  return r;
}

async function api(method, path, body) {
  const r = await request(method, path, body);
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    throw new ApiError((data && data.error && data.error.message) || `The daemon answered ${r.status}.`);
  }
  return data;
}

function loggedOut(message) {
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  if (message) $("#login-message").textContent = message;
  $("#auth-error").hidden = false;
  setLive("logged out", "down");
  if (stream) { stream.abort(); stream = null; }
}

function setLive(text, cls) {
  const b = $("#live");
  b.textContent = text;
  b.className = `badge ${cls || ""}`;
}

async function login() {
  // A code in the fragment: take it out of the address bar first, then trade it once.
  const m = /^#code=([A-Za-z0-9_-]{16,128})$/.exec(location.hash);
  if (location.hash) history.replaceState(null, "", location.pathname);
  if (!m) return;
  let r, data;
  try {
    r = await fetch("/v1/session", { method: "POST", credentials: "omit",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code: m[1] }) });
    data = await r.json().catch(() => null);
  } catch (e) {
    loggedOut("The daemon cannot be reached. Is it running?");
    return;
  }
  if (r.ok && data && typeof data.session === "string") {
    session = data.session;
    sessionStorage.setItem(SESSION_KEY, session);
  } else if (!session) {
    loggedOut((data && data.error && data.error.message) || "This login link is not valid.");
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function onEvent(name, data) {
  if (name === "status") { status = JSON.parse(data); statusAt = Date.now(); render(); }
  else if (name === "throughput") { samples = JSON.parse(data).history; drawPlot(); }
  else if (name === "sample") {
    samples.push(JSON.parse(data));
    if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
    drawPlot();
  } else if (name === "logout") loggedOut();
}

async function readEvents(body) {
  // Server-sent events: blocks of "event: NAME" / "data: JSON" lines ended by a blank line.
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = "", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (name) onEvent(name, data);
    }
  }
}

async function connect() {
  while (session) {
    stream = new AbortController();
    try {
      const r = await fetch("/v1/events", { credentials: "omit", headers: authHeaders(), signal: stream.signal });
      if (r.status === 401) { loggedOut(); return; }
      if (r.ok) {
        setLive("live", "live");
        await readEvents(r.body);
      }
    } catch (e) { /* the daemon went away, or we aborted */ }
    if (!session) return;
    setLive("reconnecting…", "down");
    await sleep(2000);
  }
}

// -- rendering -----------------------------------------------------------------------------------

function render() {
  if (!status) return;
  renderDevice();
  renderGroups();
  renderEvents();
}

function renderDevice() {
  const s = status;
  $("#peer-id").textContent = s.peer_id;
  $("#addresses").replaceChildren(...(s.advertised.length ? s.advertised : ["none"]).map(
    (a) => el("div", { text: a })));
  const dht = s.dht || {};
  if (dht.enabled === false) $("#dht").textContent = "off";
  else $("#dht").textContent = Object.entries(dht).map(([k, v]) => `${k.replace(/_/g, " ")}: ${
    typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") || "on";
  $("#lan").textContent = s.lan.enabled ? "on" : "off";
  $("#traffic").textContent = `${fmtBytes(s.bytes_received)} in, ${fmtBytes(s.bytes_sent)} out`;
  $("#peer-count").textContent = `${s.peers.length} connected`;
  tickUptime();
}

function tickUptime() {
  if (status) $("#uptime").textContent = fmtDuration(status.uptime + (Date.now() - statusAt) / 1000);
}

function syncState(g) {
  const s = g.sync;
  if (!s.peers) return ["no peers connected", ""];
  if (s.synced) return ["in sync", "ok"];
  if (s.missing) return [`${s.missing} entries missing`, "warn"];
  return ["syncing", "warn"];
}

function renderGroups() {
  const groups = status.groups;
  $("#no-groups").hidden = groups.length > 0;
  const names = new Map(status.peers.map((p) => [p.peer_id, p]));
  $("#groups").replaceChildren(...groups.map((g) => renderGroup(g, names)));
}

function renderGroup(g, peers) {
  const [stateText, stateCls] = syncState(g);
  const entries = g.feeds.reduce((n, f) => n + f.length, 0);
  const held = g.sync.have, total = g.sync.have + g.sync.missing;
  const armed = leaveArmed[g.name] > Date.now();
  const leave = el("button", { type: "button", class: `danger leave${armed ? " armed" : ""}`,
    text: armed ? `Really leave ${g.name}?` : "Leave" });
  leave.addEventListener("click", () => armLeave(leave, g.name));
  const card = el("article", { class: "group", "data-group": g.name },
    el("header", {},
      el("h3", { text: g.name }),
      el("span", { class: "pill", text: g.role === "seed" ? "backup (seed)" : "member" }),
      el("span", { class: `pill sync ${stateCls}`, text: stateText }),
      el("span", { class: "pill entries", text: `${entries} ${entries === 1 ? "entry" : "entries"}` }),
      el("span", { class: "buttons" },
        el("button", { type: "button", class: "invite-btn", text: "Invite",
          onclick: () => showInvite(g.name, g.role === "seed") }),
        leave)),
    el("div", { class: "progress" },
      el("progress", { max: String(Math.max(total, 1)), value: String(total ? held : 0) }),
      el("span", { class: "hint", text: total ? `${held} of ${total} entries held` : "nothing to fetch" })),
  );
  card.append(el("h4", { text: `Connected peers (${g.connected.length})` }));
  card.append(g.connected.length
    ? el("ul", { class: "list connected" }, ...g.connected.map((id) => {
      const p = peers.get(id);
      // how it is reached (direct LAN / direct internet / hole-punched / relayed via X), then where
      return el("li", { class: "mono", text: `${short(id)}  ${p ? [p.kind, p.address].filter(Boolean).join("  ") : ""}` });
    }))
    : el("p", { class: "hint", text: "none" }));
  if (g.members) {
    card.append(el("h4", { text: `Members (${g.members.length})` }));
    card.append(el("ul", { class: "list members" }, ...g.members.map((m) =>
      el("li", { class: "mono", text: `${short(m.peer_id)}${m.name ? "  " + m.name : ""}${
        m.this_device ? "  (this device)" : ""}` }))));
  }
  card.append(el("h4", { text: `Feeds (${g.feeds.length})` }));
  card.append(el("table", { class: "feeds" },
    el("thead", {}, el("tr", {}, el("th", { text: "feed" }), el("th", { class: "num", text: "length" }),
      el("th", { class: "num", text: "held" }), el("th", { text: "" }))),
    el("tbody", {}, ...g.feeds.map((f) => el("tr", { "data-feed": f.key },
      el("td", { class: "mono", text: short(f.key) }),
      el("td", { class: "num length", text: String(f.length) }),
      el("td", { class: "num held", text: String(f.have) }),
      el("td", { class: "hint", text: f.own ? "this device" : "" }))))));
  // Sections that exist only once the daemon reports them (folder sync, backup receipts).
  if (Array.isArray(g.folders)) {
    card.append(el("h4", { text: `Folders (${g.folders.length})` }));
    card.append(el("ul", { class: "list folders" }, ...g.folders.map((f) =>
      el("li", { text: `${f.path || f.name || ""}  ${f.status || ""}` }))));
  }
  if (g.disk) {  // disk use of the group on this device (issue 16)
    const d = g.disk;
    const parts = [`stored ${fmtBytes(d.stored_bytes || 0)}`];
    if ("folder_bytes" in d) {
      parts.unshift(`folder ${fmtBytes(d.folder_bytes)}`);
      parts.push(`history ${fmtBytes(d.history_bytes)}`, `reclaimable ${fmtBytes(d.reclaimable_bytes)}`);
    }
    card.append(el("p", { class: "disk hint", text: `Disk: ${parts.join(", ")}` }));
  }
  if (Array.isArray(g.conflicts) && g.conflicts.length) {
    card.append(el("h4", { text: `Conflicts (${g.conflicts.length})` }));
    card.append(el("ul", { class: "list conflicts" }, ...g.conflicts.map((c) =>
      el("li", { text: typeof c === "string" ? c : (c.path || JSON.stringify(c)) }))));
  }
  if (Array.isArray(g.receipts)) {
    card.append(el("h4", { text: "Backup peers holding this device's data" }));
    card.append(el("table", { class: "receipts" },
      el("thead", {}, el("tr", {}, el("th", { text: "backup peer" }), el("th", { class: "num", text: "holds" }),
        el("th", { text: "as of" }))),
      el("tbody", {}, ...g.receipts.map((r) => {
        const own = g.feeds.find((f) => f.own);
        const of = own ? ` of ${own.length}` : "";
        return el("tr", {}, el("td", { class: "mono", text: short(r.peer_id || r.peer || "") }),
          el("td", { class: "num", text: `${r.length}${of}` }),
          el("td", { text: r.time ? new Date(r.time * 1000).toLocaleString() : "" }));
      }))));
  }
  const err = el("p", { class: "error", role: "alert", text: groupErrors[g.name] || "" });
  err.hidden = !groupErrors[g.name];
  card.append(err);
  return card;
}

function renderEvents() {
  const events = (status.events || []).slice().reverse();
  $("#events").replaceChildren(...(events.length ? events.map((e) => el("li", {},
    el("span", { class: "hint", text: new Date(e.time * 1000).toLocaleTimeString() + "  " }),
    el("span", { class: "mono", text: short(e.peer) }),
    ` ${e.kind}${e.reason ? ": " + e.reason : ""}`)) : [el("li", { class: "hint", text: "none yet" })]));
}

// -- the throughput plot -------------------------------------------------------------------------

function drawPlot() {
  const svg = $("#plot");
  const metric = $("#plot-metric").value;
  const W = 800, H = 160;
  const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  const names = [...new Set(samples.flatMap((s) => Object.keys(s.groups)))].sort();
  const series = names.map((name) => {
    const pts = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1].groups[name], b = samples[i].groups[name];
      const dt = samples[i].t - samples[i - 1].t;
      if (!a || !b || dt <= 0 || now - samples[i].t > HISTORY_SECONDS) continue;
      pts.push([samples[i].t, Math.max(0, (b[metric] - a[metric]) / dt)]);
    }
    return { name, pts };
  });
  const max = Math.max(1, ...series.flatMap((s) => s.pts.map((p) => p[1])));
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
      `${(W - (now - t) / HISTORY_SECONDS * W).toFixed(1)},${(H - 4 - v / max * (H - 8)).toFixed(1)}`).join(" "));
    kids.push(pl);
  });
  svg.replaceChildren(...kids);
  const unit = metric === "bytes" ? `${fmtBytes(max)}/s` : `${max.toFixed(max < 10 ? 1 : 0)} entries/s`;
  $("#plot-axis").textContent = `last ${HISTORY_SECONDS / 60} minutes; top of the plot: ${unit}`;
  $("#legend").replaceChildren(...series.map((s, i) => el("li", {},
    el("span", { class: `swatch sw${i % 6}` }), s.name)));
}

// -- actions -------------------------------------------------------------------------------------

function formError(form, message) {
  const p = form.querySelector(".error");
  p.textContent = message || "";
  p.hidden = !message;
}

function wireForm(id, action) {
  const form = $(id);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    formError(form, "");
    button.disabled = true;
    try {
      await action(form);
      form.reset();
    } catch (err) {
      formError(form, err.message);
    } finally {
      button.disabled = false;
    }
  });
}

wireForm("#create-form", async (form) => {
  const name = form.elements.name.value.trim();
  if (!name) throw new ApiError("Give the new group a name.");
  const g = await api("POST", "/v1/groups", { name });
  showInviteUri(g.name, g.invite, false);
});

wireForm("#join-form", async (form) => {
  const uri = form.elements.uri.value.trim();
  if (!uri) throw new ApiError("Paste an invite (cobox://join/…) first.");
  if (uri.startsWith("cobox://seed/")) {
    throw new ApiError("That is a backup (seed) invite: add it below as a seed instead.");
  }
  const body = { uri };
  const name = form.elements.name.value.trim();
  if (name) body.name = name;
  await api("POST", "/v1/groups/join", body);
});

wireForm("#seed-form", async (form) => {
  const uri = form.elements.uri.value.trim();
  if (!uri.startsWith("cobox://seed/")) {
    throw new ApiError("A seed invite starts with cobox://seed/ (get one with `cobox group invite NAME --seed`).");
  }
  await api("POST", "/v1/groups/join", { uri });
});

async function showInvite(name, seed) {
  try {
    const r = await api("GET", `/v1/groups/${encodeURIComponent(name)}/invite${seed ? "?seed=1" : ""}`);
    showInviteUri(name, r.uri, seed);
    delete groupErrors[name];
  } catch (err) {
    groupErrors[name] = err.message;
    render();
  }
}

async function showQr(name, seed) {
  // An <img src> could not send the session header: fetch the SVG and show it as a blob.
  try {
    const r = await request("GET", `/v1/groups/${encodeURIComponent(name)}/qr.svg${seed ? "?seed=1" : ""}`);
    if (!r.ok) return;
    if (qrUrl) URL.revokeObjectURL(qrUrl);
    qrUrl = URL.createObjectURL(await r.blob());
    $("#invite-qr").src = qrUrl;
  } catch (e) { /* the invite text is shown all the same */ }
}

function showInviteUri(name, uri, seed) {
  $("#invite").hidden = false;
  $("#invite-name").textContent = name;
  $("#invite-kind").textContent = seed
    ? "a backup peer with it stores the group, and cannot read it."
    : "whoever has it can read and write the group.";
  $("#invite-uri").value = uri;
  $("#copy-done").hidden = true;
  showQr(name, seed);
}

$("#copy-invite").addEventListener("click", async () => {
  const input = $("#invite-uri");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch (e) {
    input.select();
    document.execCommand("copy");
  }
  $("#copy-done").hidden = false;
});

function armLeave(button, name) {
  // Two clicks: the first arms the button for a few seconds (kept across re-renders).
  if (!(leaveArmed[name] > Date.now())) {
    leaveArmed[name] = Date.now() + 4000;
    setTimeout(() => { delete leaveArmed[name]; render(); }, 4000);
    render();
    return;
  }
  delete leaveArmed[name];
  button.disabled = true;
  api("DELETE", `/v1/groups/${encodeURIComponent(name)}`).then(() => {
    delete groupErrors[name];
    if ($("#invite-name").textContent === name) $("#invite").hidden = true;
  }, (err) => {
    groupErrors[name] = err.message;
    render();
  });
}

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/v1/logout"); } catch (e) { /* logged out either way */ }
  loggedOut("You logged out.");
});

$("#plot-metric").addEventListener("change", drawPlot);
setInterval(tickUptime, 1000);
let connecting = false;
async function start() {
  await login();
  if (session) {
    $("#auth-error").hidden = true;
    if (connecting) return;
    connecting = true;
    try { await connect(); } finally { connecting = false; }
  } else if ($("#auth-error").hidden) loggedOut("You are not logged in.");
}
window.addEventListener("hashchange", start);  // a new login link opened in this tab
start();
