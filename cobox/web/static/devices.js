// The Devices panel (name, connection, rates, last seen, what it holds, actions), the transfer
// rates measured from successive status documents, and the bandwidth limits (when offered).
"use strict";

const RATE_WINDOW = 5;    // seconds of counters a rate is measured over
const counters = {};      // peer id (or "*" for the device) -> [[t, sent, received], ...]

function noteCounters() {
  const t = Date.now() / 1000;
  const add = (key, sent, received) => {
    const list = counters[key] || (counters[key] = []);
    list.push([t, sent, received]);
    while (list.length > 2 && t - list[0][0] > RATE_WINDOW) list.shift();
  };
  add("*", status.bytes_sent, status.bytes_received);
  for (const p of status.peers) add(p.peer_id, p.bytes_sent, p.bytes_received);
}

function rateOf(key) {
  const list = counters[key];
  if (!list || list.length < 2) return { in: 0, out: 0 };
  const a = list[0], b = list[list.length - 1];
  const dt = Math.max(0.5, b[0] - a[0]);
  return { out: Math.max(0, (b[1] - a[1]) / dt), in: Math.max(0, (b[2] - a[2]) / dt) };
}

function totalRates() { return rateOf("*"); }

function deviceView(d) {
  const r = d.connected ? rateOf(d.peer_id) : { in: 0, out: 0 };
  const held = status.groups.filter((g) => d.groups.includes(g.name)).map((g) => {
    const feeds = g.feeds.filter((f) => f.owner === d.peer_id);
    const n = feeds.reduce((k, f) => k + f.length, 0);
    return `${g.name}${feeds.length ? ` (${plural(n, "entry", "entries")} written)` : ""}`;
  });
  let state, cls;
  const paused = d.paused || isPaused("device", d.peer_id);
  if (paused) [state, cls] = ["Paused", "paused"];
  else if (d.connected) [state, cls] = [`Connected${d.kind ? ` (${d.kind})` : ""}`, "ok"];
  else [state, cls] = ["Disconnected", "idle"];
  return {
    id: d.peer_id, name: deviceName(d.peer_id), state, cls, address: d.connected ? d.address : "",
    rates: d.connected ? `↓ ${fmtRate(r.in)}  ↑ ${fmtRate(r.out)}` : "",
    totals: d.connected ? `${fmtBytes(d.bytes_received)} received, ${fmtBytes(d.bytes_sent)} sent` : "",
    seen: d.connected ? "now" : (d.last_seen ? fmtAgo(d.last_seen) : "not since the daemon started"),
    held: held.join(", ") || "no shared group", paused, features: features(),
    memberOf: status.groups.filter((g) => (g.members || []).some((m) => m.peer_id === d.peer_id)).map((g) => g.name),
    armed: Object.keys(armed).filter((k) => k.startsWith(`forget:${d.peer_id}:`) && armed[k] > Date.now()),
    error: rowErrors[`device:${d.peer_id}`] || "",
  };
}

function buildDevice(v) {
  const item = el("details", { class: "item device", "data-device": v.id });
  item.open = !!openItems[`device:${v.id}`];
  item.addEventListener("toggle", () => { openItems[`device:${v.id}`] = item.open; });
  item.append(el("summary", {},
    el("span", { class: "title" }, v.name, el("span", { class: "sub", text: v.rates || `last seen ${v.seen}` })),
    el("span", { class: `state ${v.cls}`, text: v.state })));
  const body = el("div", { class: "body" });
  body.append(props([
    ["Address", v.address, "mono"],
    ["Transfer", v.rates],
    ["In all", v.totals],
    ["Last seen", v.seen],
    ["Groups", v.held],
    ["Device id", v.id, "mono id"],
  ]));
  const actions = el("div", { class: "actions" });
  const pauseKey = v.paused ? "resume" : "pause";
  if (v.features[pauseKey]) {
    actions.append(el("button", { type: "button", class: "small secondary pause-btn", "data-focus-key": "pause",
      text: v.paused ? "Resume" : "Pause", onclick: () => pauseResume(pauseKey, { device: v.id }, `device:${v.id}`) }));
  }
  if (v.features.remove_device) {
    for (const g of v.memberOf) {
      const key = `forget:${v.id}:${g}`;
      const on = v.armed.includes(key);
      actions.append(el("button", { type: "button", class: `small danger${on ? " armed" : ""}`,
        "data-focus-key": key, text: on ? `Click again to remove it from ${g}` : `Remove from ${g}`,
        "aria-describedby": on ? `removal-note-${v.id}` : null,
        onclick: () => twoClick(key, () => removeDevice(v.id, g), `device:${v.id}`, REMOVAL_ARMED_MS) }));
    }
  }
  if (actions.children.length) body.append(actions);
  if (v.armed.some((k) => k.startsWith(`forget:${v.id}:`))) body.append(removalNote(v));
  if (v.error) body.append(el("p", { class: "error", role: "alert", text: v.error }));
  item.append(body);
  return item;
}

const REMOVAL_ARMED_MS = 20000;  // time to read the note below before the second click

// What removing does and does NOT do, shown while a Remove button waits for its second click
// (the same words as the CLI's confirmation, cobox/commands_devices_remove.py WHAT_IT_DOES_NOT).
function removalNote(v) {
  return el("p", { class: "removal-note", id: `removal-note-${v.id}`, role: "alert",
    text: `Removing moves the group to a new epoch: ${v.name} gets nothing written from now on and is refused ` +
      `by the others. It does NOT take back what ${v.name} already has: every file and entry it synced before ` +
      `stays on it, readable by whoever holds it. Nothing is deleted there. Re-adding it later needs a new invite.` });
}

function renderDevices() {
  const devices = status.devices || [];
  $("#no-devices").hidden = devices.length > 0;
  patchList($("#devices"), devices.map(deviceView), (v) => v.id, (v) => JSON.stringify(v), buildDevice);
}

// -- bandwidth limits (GET/PUT features.limits) ---------------------------------------------------

function renderLimits() {
  const box = $("#limits-box");
  const path = features().limits;
  box.hidden = !path;
  if (!path) return;
  const l = status.limits || {};  // {max_send_kbps, max_recv_kbps, limit_lan, devices, source}
  const sig = JSON.stringify(l);
  if (box.dataset.sig === sig) return;
  if (box.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;  // being edited
  box.dataset.sig = sig;
  const kbps = (v) => (v ? `${v} KiB/s` : "unlimited");
  const form = el("form", { class: "action inset", id: "limits-form" },
    el("div", { class: "field" }, el("label", { for: "limit-recv", text: "Download limit (KiB/s, 0 = none)" }),
      el("input", { id: "limit-recv", name: "recv", type: "number", min: "0", value: String(l.max_recv_kbps || 0) })),
    el("div", { class: "field" }, el("label", { for: "limit-send", text: "Upload limit (KiB/s, 0 = none)" }),
      el("input", { id: "limit-send", name: "send", type: "number", min: "0", value: String(l.max_send_kbps || 0) })),
    el("div", { class: "field" }, el("label", { class: "inline" },
      el("input", { id: "limit-lan", name: "lan", type: "checkbox", checked: !!l.limit_lan }), " Limit on the LAN too")),
    el("div", { class: "buttons" }, el("button", { type: "submit", text: "Save limits" })),
    el("p", { class: "hint", id: "limits-now",
      text: `Now: download ${kbps(l.max_recv_kbps)}, upload ${kbps(l.max_send_kbps)}${l.limit_lan ? ", on the LAN too" : ""}.` }),
    el("p", { class: "ok-text", id: "limits-done", role: "status", hidden: true, text: "Saved." }),
    el("p", { class: "error", role: "alert", hidden: true }));
  form.addEventListener("submit", (e) => submitForm(e, form, async () => {
    const whole = (x) => Math.max(0, Math.round(Number(x) || 0));
    await api("PUT", features().limits, { max_recv_kbps: whole(form.elements.recv.value),
      max_send_kbps: whole(form.elements.send.value), limit_lan: form.elements.lan.checked });
    $("#limits-done").hidden = false;
  }, false));
  box.replaceChildren(el("details", { class: "more", open: true }, el("summary", { text: "Bandwidth limits" }), form));
}
