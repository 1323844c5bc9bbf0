// The cobox dashboard: plain JS, no framework, in a few files loaded in order (util, api,
// panels, devices, dialogs, plot, app). Data comes from the daemon's server-sent events
// (/v1/events, read with a fetch() stream); actions are calls to the control API.
"use strict";

function onEvent(name, data) {
  if (name === "status") {
    status = JSON.parse(data);
    statusAt = Date.now();
    noteCounters();
    render();
  } else if (name === "throughput") { samples = JSON.parse(data).history; drawPlot(); }
  else if (name === "sample") {
    samples.push(JSON.parse(data));
    if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
    drawPlot();
  } else if (name === "logout") loggedOut();
}

function render() {
  if (!status) return;
  renderDevice();
  renderFolders();
  renderDevices();
  renderGroups();
  renderEvents();
}

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/v1/logout"); } catch (e) { /* logged out either way */ }
  loggedOut("You logged out.");
});

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
