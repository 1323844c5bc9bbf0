// The page's actions: forms (add a folder, create/join/seed a group), invites and QR codes,
// two-click confirmations, pause/resume, rescan, the versions dialog (a file's history and
// restore), the conflicts dialog (keep one or both), device rename/remove. Each is a call to the
// control API; the daemon validates (paths included) and the page shows its words.
"use strict";

let qrUrl = null;         // the object URL of the invite QR code shown

function formError(form, message) {
  const p = form.querySelector(".error");
  p.textContent = message || "";
  p.hidden = !message;
}

async function submitForm(e, form, action, reset) {
  e.preventDefault();
  const button = form.querySelector("button[type=submit]");
  formError(form, "");
  button.disabled = true;
  try {
    await action(form);
    if (reset !== false) form.reset();
  } catch (err) {
    formError(form, err.message);
  } finally {
    button.disabled = false;
  }
}

function wireForm(id, action) {
  const form = $(id);
  form.addEventListener("submit", (e) => submitForm(e, form, action));
}

function rowError(key, message) {
  if (message) rowErrors[key] = message; else delete rowErrors[key];
  render();
}

// A button that asks once ("Really …?") for a few seconds, and acts on the second click.
function twoClick(key, action, errorKey, ms = 4000) {
  if (!(armed[key] > Date.now())) {
    armed[key] = Date.now() + ms;
    setTimeout(() => { delete armed[key]; render(); }, ms);
    render();
    return;
  }
  delete armed[key];
  render();
  action().then(() => rowError(errorKey, ""), (err) => rowError(errorKey, err.message));
}

// The path of an optional control's route with its {placeholders} filled in from ``vars``.
function featurePath(name, vars) {
  return features()[name].replace(/\{([^}]+)\}/g, (m, key) => encodeURIComponent((vars || {})[key] || m));
}

async function pauseResume(which, target, errorKey) {
  try { await api("POST", featurePath(which), target); rowError(errorKey, ""); } catch (err) { rowError(errorKey, err.message); }
}

// rescan, override (send-only) or revert (receive-only)
async function folderRequest(name, what) {
  try {
    await api("POST", featurePath(what, { name }), {});
    rowError(`folder:${name}`, "");
  } catch (err) { rowError(`folder:${name}`, err.message); }
}

// -- groups and folders --------------------------------------------------------------------------

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

wireForm("#backup-form", async (form) => {
  const group = form.elements.group.value.trim();
  const uri = form.elements.uri.value.trim();
  if (!group) throw new ApiError("Name the group to back up.");
  if (!uri.startsWith("cobox://backup/")) {
    throw new ApiError("A service invite starts with cobox://backup/ (the host makes one with `cobox service invite`).");
  }
  const r = await api("POST", "/v1/backups", { group, uri });
  form.elements.uri.value = "";
  formError(form, `Backed up on host ${short(r.host)} (${r.state || "accepted"}): it holds the replication key only.`);
});

wireForm("#service-form", async (form) => {
  const r = await api("POST", "/v1/service/invites", { label: form.elements.label.value.trim() });
  $("#invite").hidden = false;
  $("#invite-name").textContent = r.label || "a member";
  $("#invite-kind").textContent = "a member adds groups with it (`cobox backup add GROUP URI`); this device keeps "
    + "them, and cannot read them.";
  $("#invite-uri").value = r.uri;
  $("#copy-done").hidden = true;
  $("#invite-qr").removeAttribute("src");
});

function toggleAddFolder(show) {
  const form = $("#add-folder-form");
  form.hidden = !show;
  $("#add-folder-open").setAttribute("aria-expanded", String(show));
  if (show) $("#add-folder-path").focus();
  else { formError(form, ""); $("#add-folder-open").focus(); }
}

$("#add-folder-open").addEventListener("click", () => toggleAddFolder($("#add-folder-form").hidden));
$("#add-folder-cancel").addEventListener("click", () => toggleAddFolder(false));
wireForm("#add-folder-form", async (form) => {
  const group = form.elements.group.value, path = form.elements.path.value.trim();
  if (!group) throw new ApiError("Create or join a group first: a folder is shared with a group.");
  if (!path) throw new ApiError("Type the folder's full path, like /home/you/Photos.");
  await api("POST", "/v1/folders", { group, path });
  openItems[`folder:${group}`] = true;
  toggleAddFolder(false);
});

async function showInvite(name, seed) {
  try {
    const r = await api("GET", `/v1/groups/${encodeURIComponent(name)}/invite${seed ? "?seed=1" : ""}`);
    showInviteUri(name, r.uri, seed);
    rowError(`group:${name}`, "");
  } catch (err) {
    rowError(`group:${name}`, err.message);
  }
}

async function blobUrl(path) {
  // An <img src> could not send the session header: fetch the SVG and show it as a blob.
  const r = await request("GET", path);
  if (!r.ok) return null;
  return URL.createObjectURL(await r.blob());
}

async function showQr(name, seed) {
  try {
    const url = await blobUrl(`/v1/groups/${encodeURIComponent(name)}/qr.svg${seed ? "?seed=1" : ""}`);
    if (!url) return;
    if (qrUrl) URL.revokeObjectURL(qrUrl);
    qrUrl = url;
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
  $("#invite").scrollIntoView({ block: "nearest" });
}

async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    if (input) { input.select(); document.execCommand("copy"); }
  }
}

$("#copy-invite").addEventListener("click", async () => {
  await copyText($("#invite-uri").value, $("#invite-uri"));
  $("#copy-done").hidden = false;
});

$("#copy-id").addEventListener("click", async () => {
  await copyText(status ? status.peer_id : "");
  $("#copy-id-done").hidden = false;
  setTimeout(() => { $("#copy-id-done").hidden = true; }, 3000);
});

$("#show-qr").addEventListener("click", async () => {
  const img = $("#device-qr"), button = $("#show-qr");
  if (!img.hidden) { img.hidden = true; button.setAttribute("aria-expanded", "false"); return; }
  if (!img.src) { const url = await blobUrl("/v1/device/qr.svg").catch(() => null); if (url) img.src = url; }
  img.hidden = false;
  button.setAttribute("aria-expanded", "true");
});

// -- versions: a file's history, restore ---------------------------------------------------------

let versionsFolder = "";
let searchTimer = 0;

function dialogMessage(id, text, isError) {
  const p = $(id);
  p.textContent = text || "";
  p.hidden = !text;
  if (isError === undefined) return;
}

async function openVersions(name) {
  versionsFolder = name;
  $("#versions-title").textContent = `Versions in ${name}`;
  $("#versions-search").value = "";
  $("#versions-history").hidden = true;
  dialogMessage("#versions-done", "");
  dialogMessage("#versions-error", "");
  $("#versions-dialog").showModal();
  $("#versions-search").focus();
  await listFiles("");
}

async function listFiles(q) {
  try {
    const r = await api("GET", `/v1/folders/${encodeURIComponent(versionsFolder)}/files?q=${encodeURIComponent(q)}&limit=100`);
    const ul = $("#versions-files");
    ul.replaceChildren(...r.files.map((f) => el("li", {}, el("button", { type: "button", "data-file": f.path,
      onclick: () => showHistory(f.path) }, el("span", { class: "mono", text: f.path }),
      el("span", { class: "hint", text: `${fmtBytes(f.size)} · ${fmtAgo(f.mtime)}` })))));
    if (!r.files.length) ul.append(el("li", { class: "hint", text: q ? "No file matches." : "The folder is empty." }));
    if (r.total > r.files.length) ul.append(el("li", { class: "hint", text: `and ${r.total - r.files.length} more: narrow the search` }));
  } catch (err) { dialogMessage("#versions-error", err.message); }
}

$("#versions-search").addEventListener("input", (e) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => listFiles(e.target.value.trim()), 200);
});

async function showHistory(file) {
  dialogMessage("#versions-error", "");
  for (const b of $("#versions-files").querySelectorAll("button")) b.setAttribute("aria-current", String(b.dataset.file === file));
  try {
    const versions = await api("GET", `/v1/folders/${encodeURIComponent(versionsFolder)}/history?file=${encodeURIComponent(file)}`);
    $("#versions-file").textContent = file;
    $("#versions-list").replaceChildren(...versions.slice().reverse().map((v) => el("tr", { "data-version": v.version },
      el("td", { text: v.current ? "current" : (v.deleted ? "deleted" : "older") }),
      el("td", { text: fmtTime(v.mtime) }),
      el("td", { class: "num", text: v.deleted ? "" : fmtBytes(v.size) }),
      el("td", { text: v.author_name || deviceName(v.author) }),
      el("td", {}, v.current || v.deleted ? null : el("button", { type: "button", class: "small restore-btn",
        text: "Restore", "aria-label": `Restore the version of ${fmtTime(v.mtime)}`,
        onclick: () => restoreVersion(file, v) })))));
    $("#versions-history").hidden = false;
  } catch (err) { dialogMessage("#versions-error", err.message); }
}

async function restoreVersion(file, v) {
  dialogMessage("#versions-done", "");
  try {
    await api("POST", `/v1/folders/${encodeURIComponent(versionsFolder)}/restore`, { file, version: v.version });
    dialogMessage("#versions-done", `Restored ${file} as it was ${fmtTime(v.mtime)}.`);
    await showHistory(file);
  } catch (err) { dialogMessage("#versions-error", err.message); }
}

// -- conflicts -------------------------------------------------------------------------------------

let conflictsFolder = "";

async function openConflicts(name) {
  conflictsFolder = name;
  $("#conflicts-title").textContent = `Conflicts in ${name}`;
  dialogMessage("#conflicts-done", "");
  dialogMessage("#conflicts-error", "");
  $("#conflicts-dialog").showModal();
  await listConflicts();
}

async function listConflicts() {
  try {
    const list = await api("GET", `/v1/folders/${encodeURIComponent(conflictsFolder)}/conflicts`);
    $("#conflicts-list").replaceChildren(...list.map((c) => el("li", { class: "conflict", "data-copy": c.copy },
      el("div", {}, el("b", { class: "mono", text: c.origin })),
      props([
        ["In place", c.origin_size === null ? "removed" : `${fmtBytes(c.origin_size)}, changed ${fmtTime(c.origin_mtime)} by ${deviceName(c.origin_author)}`],
        ["Conflicting", `${fmtBytes(c.size)}, changed ${fmtTime(c.mtime)} by ${deviceName(c.author)}`],
        ["Saved as", c.copy, "mono"],
      ]),
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "small", "data-keep": "original",
          text: c.origin_author ? `Keep the one by ${deviceName(c.origin_author)}` : "Keep the file in place",
          onclick: () => resolveConflict(c, "original") }),
        el("button", { type: "button", class: "small", "data-keep": "copy", text: `Keep the one by ${deviceName(c.author)}`,
          onclick: () => resolveConflict(c, "copy") }),
        el("button", { type: "button", class: "small secondary", "data-keep": "both", text: "Keep both",
          onclick: () => resolveConflict(c, "both") })))));
    if (!list.length) $("#conflicts-list").append(el("li", { class: "hint", text: "No conflicts left." }));
  } catch (err) { dialogMessage("#conflicts-error", err.message); }
}

async function resolveConflict(c, keep) {
  try {
    await api("POST", `/v1/folders/${encodeURIComponent(conflictsFolder)}/conflicts/resolve`, { copy: c.copy, keep });
    const words = { original: "kept the file as it was", copy: "kept the other version", both: `kept both (the other is ${c.copy})` };
    dialogMessage("#conflicts-done", `${c.origin}: ${words[keep]}.`);
    await listConflicts();
  } catch (err) { dialogMessage("#conflicts-error", err.message); }
}

// -- this device's name, a folder's settings, removing a device (when offered) -------------------

function showDialog(title, form, focus) {
  $("#device-dialog-title").textContent = title;
  $("#device-dialog-body").replaceChildren(form);
  $("#device-dialog").showModal();
  if (focus) $(focus).focus();
}

$("#rename-self").addEventListener("click", () => {
  const form = el("form", { class: "action" },
    el("label", { for: "rename-input", text: "Name other devices see" }),
    el("div", { class: "row" }, el("input", { id: "rename-input", name: "name", value: status.name || "",
      autocomplete: "off" }), el("button", { type: "submit", text: "Rename" })),
    el("p", { class: "error", role: "alert", hidden: true }));
  form.addEventListener("submit", (e) => submitForm(e, form, async () => {
    const name = form.elements.name.value.trim();
    if (!name) throw new ApiError("Give this device a name.");
    await api("POST", featurePath("rename"), { name });
    $("#device-dialog").close();
  }, false));
  showDialog("Rename this device", form, "#rename-input");
});

function openFolderEdit(name) {
  const f = status.folders.find((x) => x.group === name) || {};
  const types = [["send-receive", "Send & receive"], ["send-only", "Send only"], ["receive-only", "Receive only"]];
  const form = el("form", { class: "action" },
    el("div", { class: "field" }, el("label", { for: "folder-type", text: "Folder type" }),
      el("select", { id: "folder-type", name: "type" }, ...types.map(([v, t]) =>
        el("option", { value: v, text: t, selected: (f.type || "send-receive") === v })))),
    el("div", { class: "field" }, el("label", { for: "folder-rescan", text: "Full rescan every (seconds)" }),
      el("input", { id: "folder-rescan", name: "rescan", type: "number", min: "1",
        value: String(f.rescan_interval || 3600) })),
    el("p", { class: "hint", text: "Send only: changes made here go out, others' are not applied. " +
      "Receive only: nothing made here goes out." }),
    el("div", { class: "buttons" }, el("button", { type: "submit", text: "Save" })),
    el("p", { class: "error", role: "alert", hidden: true }));
  form.addEventListener("submit", (e) => submitForm(e, form, async () => {
    await api("PATCH", featurePath("folder_edit", { name }),
      { type: form.elements.type.value, rescan_interval: Number(form.elements.rescan.value) });
    $("#device-dialog").close();
  }, false));
  showDialog(`Edit ${name}`, form, "#folder-type");
}

async function removeDevice(id, group) {
  await api("DELETE", featurePath("remove_device", { name: group, device: id }));
}
