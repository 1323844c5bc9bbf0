// The Folders, Groups and This device panels and the recent events, rendered from the status
// document. Each row is first turned into a view (every text it shows), then built only when its
// view changed (patchList).
"use strict";

let status = null;        // the last status document
let statusAt = 0;         // when it arrived (ms), to count the uptime on
let samples = [];         // throughput samples: {t, groups: {name: {entries, bytes}}}
const openItems = {};     // "folder:NAME" / "device:ID" -> whether its <details> is open
const stateSeen = {};     // folder name -> the states it went through, in order (data-states)
const armed = {};         // button key -> until when a two-click button asks for confirmation
const rowErrors = {};     // row key -> an error to show in it

function features() { return (status && status.features) || {}; }

// Paused by the user (status.paused: {groups: [names], folders: [names], devices: [{peer_id}]}).
function isPaused(kind, name) {
  const p = (status && status.paused) || {};
  const list = p[`${kind}s`] || [];
  return list.some((x) => (typeof x === "string" ? x === name : x.peer_id === name));
}
function groupOf(name) { return status.groups.find((g) => g.name === name); }

function deviceName(id) {
  if (!status) return short(id);
  if (id === status.peer_id) return status.name || "this device";
  const d = (status.devices || []).find((x) => x.peer_id === id);
  return (d && d.name) || `device ${short(id)}`;
}

// Bytes per second received for a group, over the last few samples.
function groupRate(name) {
  const recent = samples.slice(-4).filter((s) => s.groups[name]);
  if (recent.length < 2) return 0;
  const a = recent[0], b = recent[recent.length - 1];
  return Math.max(0, (b.groups[name].bytes - a.groups[name].bytes) / Math.max(0.001, b.t - a.t));
}

// Disk use in words (group.disk / folder.disk where the daemon reports it: stored, history, reclaimable).
function diskText(d) {
  if (!d || d.stored_bytes === undefined) return "";
  const parts = [`${fmtBytes(d.stored_bytes)} stored here`];
  if (d.history_bytes) parts.push(`${fmtBytes(d.history_bytes)} of it old versions`);
  if (d.reclaimable_bytes) parts.push(`${fmtBytes(d.reclaimable_bytes)} can be freed`);
  if (d.outside_bytes) parts.push(`${fmtBytes(d.outside_bytes)} more served from your files`);
  return parts.join(", ");
}

// -- folders -------------------------------------------------------------------------------------

const FOLDER_TYPES = { "send-receive": "Send & receive", "send-only": "Send only", "receive-only": "Receive only" };

// A folder's state in words, as Syncthing says it: [short, class, detail].
function folderState(f, g) {
  const s = (g && g.sync) || {};
  if (f.paused || isPaused("folder", f.group) || isPaused("group", f.group)) {
    return ["Paused", "paused", "Nothing is sent or received for this folder until it is resumed."];
  }
  if (f.error) return ["Error", "err", f.error];
  if (!f.rounds) return ["Scanning", "busy", "Looking at the folder's files for the first time."];
  const pendingBytes = f.pending_down_bytes || 0;
  if (s.peers && (s.missing || f.pending_down || !s.synced)) {
    let pct;
    if (s.missing) pct = s.have / Math.max(1, s.have + s.missing);
    else if (pendingBytes) pct = 1 - pendingBytes / Math.max(1, f.bytes);
    else pct = 0.99;
    const rate = groupRate(f.group);
    const extra = [];
    if (rate > 0) extra.push(fmtRate(rate));
    if (rate > 0 && pendingBytes) extra.push(fmtLeft(pendingBytes / rate));
    const label = `Syncing ${Math.floor(pct * 100)}%`;
    return [extra.length ? `${label} (${extra.join(", ")})` : label, "busy",
      f.pending_down ? `${plural(f.pending_down, "file")} (${fmtBytes(pendingBytes)}) to download.` :
        "Comparing with the connected devices."];
  }
  if (f.out_of_sync && f.type === "receive-only") {
    return [`Local Changes (${plural(f.out_of_sync, "item")})`, "warn",
      "Changed here, and a receive-only folder does not send them: revert them to match the others."];
  }
  if (f.out_of_sync) {
    return [`Out of Sync (${plural(f.out_of_sync, "item")})`, "warn",
      "Changes of other devices are not applied to a send-only folder: override them to put back this folder's files."];
  }
  if (f.failed_count) {
    return [`Out of Sync (${plural(f.failed_count, "item")})`, "warn",
      "Some files could not be written here (see the list)."];
  }
  if (f.pending_down) {
    return [`Out of Sync (${plural(f.pending_down, "item")})`, "warn",
      "Waiting for a device that has these files to connect."];
  }
  return ["Up to Date", "ok", ""];
}

function folderView(f) {
  const g = groupOf(f.group);
  const [state, cls, detail] = folderState(f, g);
  const seen = stateSeen[f.group] || (stateSeen[f.group] = []);
  const word = state.replace(/\s*\(.*$/, "").replace(/\s+\d+%$/, "");
  if (seen[seen.length - 1] !== word) seen.push(word);
  const others = g ? (g.members || []).filter((m) => !m.this_device).map((m) => deviceName(m.peer_id)) : [];
  const s = (g && g.sync) || {};
  return {
    name: f.group, path: f.path, state, cls, detail, states: seen.slice(-12).join(","),
    pct: cls === "busy" ? (s.missing ? s.have / Math.max(1, s.have + s.missing)
      : 1 - (f.pending_down_bytes || 0) / Math.max(1, f.bytes)) : null,
    files: `${plural(f.files, "file")}, ${fmtBytes(f.bytes)}`,
    lastChange: f.last_change ? `${fmtAgo(f.last_change)}` : "",
    upload: f.pending_up ? plural(f.pending_up, "file") + " to send" : "",
    conflicts: f.conflicts.length,
    failed: (f.failed || []).map((x) => `${x.path}: ${x.reason}`).concat(f.out_of_sync_paths || []),
    failedMore: Math.max(0, (f.failed_count || 0) - (f.failed || []).length),
    shared: others.join(", ") || "nobody else yet", type: f.type || "",
    paused: !!(f.paused || isPaused("folder", f.group)), outOfSync: f.out_of_sync || 0,
    rescanEvery: f.rescan_interval ? fmtDuration(f.rescan_interval) : "", features: features(),
    disk: diskText(f.disk || (g && g.disk)),
    armed: armed[`remove:${f.group}`] > Date.now(), error: rowErrors[`folder:${f.group}`] || "",
  };
}

function buildFolder(v) {
  const item = el("details", { class: "item folder", "data-folder": v.name, "data-states": v.states });
  item.open = openItems[`folder:${v.name}`] !== undefined ? openItems[`folder:${v.name}`] : true;
  item.addEventListener("toggle", () => { openItems[`folder:${v.name}`] = item.open; });
  item.append(el("summary", {},
    el("span", { class: "title" }, v.name, el("span", { class: "sub mono", text: v.path })),
    el("span", { class: `state ${v.cls}`, text: v.state })));
  const body = el("div", { class: "body" });
  if (v.pct !== null) {
    const bar = el("div", { class: "bar", role: "progressbar", "aria-label": `${v.name} progress`,
      "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.floor(v.pct * 100)) }, el("span"));
    bar.firstChild.style.width = `${Math.max(0, Math.min(100, v.pct * 100)).toFixed(1)}%`;
    body.append(bar);
  }
  const outOfSync = v.failed.length ? el("ul", { class: "outofsync" }, ...v.failed.map((t) => el("li", { text: t })),
    v.failedMore ? el("li", { text: `and ${v.failedMore} more` }) : null) : null;
  body.append(props([
    ["State", v.detail ? `${v.state}. ${v.detail}` : v.state, "folder-state"],
    ["Folder path", v.path, "mono"],
    ["Type", FOLDER_TYPES[v.type] || v.type],
    ["Rescan", v.rescanEvery ? `every ${v.rescanEvery}, and on every change` : ""],
    ["Files", v.files, "folder-files"],
    ["Last change", v.lastChange],
    ["Disk", v.disk, "folder-disk"],
    ["Waiting", v.upload],
    ["Conflicts", v.conflicts ? plural(v.conflicts, "conflict") : "none", "folder-conflicts"],
    ["Shared with", v.shared],
  ]));
  if (outOfSync) body.append(el("p", { class: "hint", text: "Out of sync:" }), outOfSync);
  const actions = el("div", { class: "actions" });
  const pauseKey = v.paused ? "resume" : "pause";
  if (v.features[pauseKey]) {
    actions.append(el("button", { type: "button", class: "small secondary pause-btn", "data-focus-key": "pause",
      text: v.paused ? "Resume" : "Pause", onclick: () => pauseResume(pauseKey, { folder: v.name }, `folder:${v.name}`) }));
  }
  if (v.features.rescan) {
    actions.append(el("button", { type: "button", class: "small secondary rescan-btn", "data-focus-key": "rescan",
      text: "Rescan", onclick: () => folderRequest(v.name, "rescan") }));
  }
  if (v.outOfSync && v.type === "send-only" && v.features.override) {
    actions.append(el("button", { type: "button", class: "small", "data-focus-key": "override", text: "Override changes",
      onclick: () => folderRequest(v.name, "override") }));
  }
  if (v.outOfSync && v.type === "receive-only" && v.features.revert) {
    actions.append(el("button", { type: "button", class: "small", "data-focus-key": "revert", text: "Revert local changes",
      onclick: () => folderRequest(v.name, "revert") }));
  }
  if (v.features.folder_edit) {
    actions.append(el("button", { type: "button", class: "small secondary", "data-focus-key": "edit", text: "Edit",
      onclick: () => openFolderEdit(v.name) }));
  }
  actions.append(el("button", { type: "button", class: "small secondary versions-btn", "data-focus-key": "versions",
    text: "Versions", onclick: () => openVersions(v.name) }));
  if (v.conflicts) {
    actions.append(el("button", { type: "button", class: "small conflicts-btn", "data-focus-key": "conflicts",
      text: `Resolve ${plural(v.conflicts, "conflict")}`, onclick: () => openConflicts(v.name) }));
  }
  actions.append(el("button", { type: "button", class: `small danger remove-folder${v.armed ? " armed" : ""}`,
    "data-focus-key": "remove", text: v.armed ? "Really stop syncing?" : "Remove",
    title: "Stop syncing this folder here (its files stay on disk)",
    onclick: () => twoClick(`remove:${v.name}`, () => api("DELETE", `/v1/folders/${encodeURIComponent(v.name)}`),
      `folder:${v.name}`) }));
  body.append(actions);
  if (v.error) body.append(el("p", { class: "error", role: "alert", text: v.error }));
  item.append(body);
  return item;
}

function renderFolders() {
  const folders = status.folders || [];
  $("#no-folders").hidden = folders.length > 0;
  patchList($("#folders"), folders.map(folderView), (v) => v.name, (v) => JSON.stringify(v), buildFolder);
  const select = $("#add-folder-group");
  const free = status.groups.filter((g) => g.role !== "seed" && !folders.some((f) => f.group === g.name));
  const names = free.map((g) => g.name).join("\n");
  if (select.dataset.names !== names) {
    const keep = select.value;
    select.replaceChildren(...free.map((g) => el("option", { value: g.name, text: g.name })));
    if (free.some((g) => g.name === keep)) select.value = keep;
    select.dataset.names = names;
  }
  $("#add-folder-open").disabled = free.length === 0;
  $("#add-folder-open").title = free.length ? "" : "Every group you are a member of has a folder already";
}

// -- groups --------------------------------------------------------------------------------------

function groupState(g) {
  const s = g.sync;
  if (isPaused("group", g.name)) return ["Paused", "paused"];
  if (g.quota_full) return ["Quota full", "warn"];
  if (!s.peers) return ["No devices connected", "idle"];
  if (s.synced) return ["Up to Date", "ok"];
  if (s.missing) return [`Syncing ${Math.floor(100 * s.have / Math.max(1, s.have + s.missing))}%`, "busy"];
  return ["Syncing", "busy"];
}

function groupView(g) {
  const [state, cls] = groupState(g);
  const entries = g.feeds.reduce((n, f) => n + f.length, 0);
  const others = (g.members || []).filter((m) => !m.this_device);
  return {
    name: g.name, role: g.role, state, cls, entries, connected: g.connected.map((id) => {
      const p = status.peers.find((x) => x.peer_id === id);
      return `${deviceName(id)}${p && p.kind ? ` (${p.kind})` : ""}`;
    }),
    connectedIds: g.connected.map(short), members: others.map((m) => deviceName(m.peer_id)),
    stored: g.stored_bytes, quota: g.quota_bytes, paused: isPaused("group", g.name), features: features(),
    receipts: (g.receipts || []).map((r) => `${r.peer_name || deviceName(r.peer)}: ${r.length} entries${r.time ? `, ${fmtAgo(r.time)}` : ""}${
      r.audit && r.audit.passed === false ? " — audit failed" : ""}`),
    armed: armed[`leave:${g.name}`] > Date.now(), error: rowErrors[`group:${g.name}`] || "",
  };
}

function buildGroup(v) {
  const card = el("article", { class: "item group", "data-group": v.name });
  const head = el("div", { class: "body" },
    el("div", { class: "card-head" },
      el("h3", { text: v.name }),
      el("span", { class: "state idle", text: v.role === "seed" ? "backup (seed)" : "member" }),
      el("span", { class: `state sync ${v.cls}`, text: v.state })));
  head.append(props([
    ["Connected", v.connected.length ? v.connected.join(", ") : "none", "connected"],
    ["Members", v.role === "seed" ? "" : (v.members.length ? v.members.join(", ") : "only this device"), "members"],
    ["Held", `${plural(v.entries, "entry", "entries")}, ${fmtBytes(v.stored)}${v.quota ? ` of ${fmtBytes(v.quota)}` : ""}`,
      "entries"],
    ["Backups", v.receipts.join("; ")],
  ]));
  const actions = el("div", { class: "actions" });
  actions.append(el("button", { type: "button", class: "small secondary invite-btn", "data-focus-key": "invite",
    text: v.role === "seed" ? "Seed invite" : "Invite", onclick: () => showInvite(v.name, v.role === "seed") }));
  if (v.role !== "seed") {
    actions.append(el("button", { type: "button", class: "small secondary", "data-focus-key": "seed",
      text: "Backup invite", title: "An invite for a backup peer: it stores the group and cannot read it",
      onclick: () => showInvite(v.name, true) }));
  }
  const pauseKey = v.paused ? "resume" : "pause";
  if (v.features[pauseKey]) {
    actions.append(el("button", { type: "button", class: "small secondary pause-btn", "data-focus-key": "pause",
      text: v.paused ? "Resume" : "Pause", onclick: () => pauseResume(pauseKey, { group: v.name }, `group:${v.name}`) }));
  }
  actions.append(el("button", { type: "button", class: `small danger leave${v.armed ? " armed" : ""}`,
    "data-focus-key": "leave", text: v.armed ? `Really leave ${v.name}?` : "Leave",
    onclick: () => twoClick(`leave:${v.name}`, async () => {
      await api("DELETE", `/v1/groups/${encodeURIComponent(v.name)}`);
      if ($("#invite-name").textContent === v.name) $("#invite").hidden = true;
    }, `group:${v.name}`) }));
  head.append(actions);
  if (v.error) head.append(el("p", { class: "error", role: "alert", text: v.error }));
  card.append(head);
  return card;
}

function renderGroups() {
  $("#no-groups").hidden = status.groups.length > 0;
  if (!status.groups.length) $("#group-actions").open = true;
  patchList($("#groups"), status.groups.map(groupView), (v) => v.name, (v) => JSON.stringify(v), buildGroup);
}

// -- this device ---------------------------------------------------------------------------------

function setText(sel, text) { const n = $(sel); if (n.textContent !== text) n.textContent = text; }

function renderDevice() {
  const s = status;
  setText("#peer-id", s.peer_id);
  setText("#device-name", s.name || "not named");
  $("#rename-self").hidden = !features().rename;
  setText("#reach", (s.reachability && s.reachability.words) || "");
  const stored = s.groups.reduce((n, g) => n + (g.stored_bytes || 0), 0);
  const disk = s.disk && s.disk.free !== undefined
    ? `${fmtBytes(stored)} for ${plural(s.groups.length, "group")}; ${fmtBytes(s.disk.free)} free of ${fmtBytes(s.disk.total)}`
    : `${fmtBytes(stored)} for ${plural(s.groups.length, "group")}`;
  setText("#disk", disk);
  const dht = s.dht || {};
  setText("#discovery", [s.lan.enabled ? "LAN on" : "LAN off", dht.enabled === false ? "DHT off" : "DHT on",
    s.relay && s.relay.offering ? "relaying for others" : ""].filter(Boolean).join(", "));
  setText("#version", s.version || "unknown");
  const rates = totalRates();
  setText("#rate-in", `${fmtRate(rates.in)} (${fmtBytes(s.bytes_received)} in all)`);
  setText("#rate-out", `${fmtRate(rates.out)} (${fmtBytes(s.bytes_sent)} in all)`);
  setText("#top-rates", `↓ ${fmtRate(rates.in)}  ↑ ${fmtRate(rates.out)}`);
  const addrs = (s.advertised.length ? s.advertised : s.listening).join("\n");
  const ul = $("#addresses");
  if (ul.dataset.sig !== addrs) {
    ul.dataset.sig = addrs;
    ul.replaceChildren(...(addrs ? addrs.split("\n") : ["none"]).map((a) => el("li", { text: a })));
  }
  const live = s.peers.filter((p) => p.connected !== false).length;  // a paused device may be listed, not connected
  setText("#peer-count", live ? `${plural(live, "device")} connected` : "No device connected");
  renderLimits();
  tickUptime();
}

function tickUptime() {
  if (status) setText("#uptime", fmtDuration(status.uptime + (Date.now() - statusAt) / 1000));
}

// -- recent events -------------------------------------------------------------------------------

function eventText(e) {
  const who = deviceName(e.peer);
  if (e.kind === "connected") return `${who} connected${e.connection ? ` (${e.connection})` : ""}`;
  if (e.kind === "disconnected") return `${who} disconnected${e.reason ? `: ${e.reason}` : ""}`;
  return `${who}: ${e.kind}${e.reason ? ` (${e.reason})` : ""}`;
}

function renderEvents() {
  const items = (status.events || []).map((e) => ({ time: e.time, text: eventText(e) }))
    .concat(status.activity || []).sort((a, b) => b.time - a.time).slice(0, 40);
  const ul = $("#events");
  const sig = JSON.stringify(items);
  if (ul.dataset.sig === sig) return;
  ul.dataset.sig = sig;
  ul.replaceChildren(...(items.length ? items.map((e) => el("li", {},
    el("time", { datetime: new Date(e.time * 1000).toISOString(), text: fmtTime(e.time) }),
    el("span", { text: e.text }))) : [el("li", { class: "hint", text: "Nothing yet." })]));
}
