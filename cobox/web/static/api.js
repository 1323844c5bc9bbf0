// Talking to the daemon: the session, API calls and the live stream of server-sent events.
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
let session = sessionStorage.getItem(SESSION_KEY);  // the session secret, or null
let stream = null;        // the AbortController of the live stream

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

