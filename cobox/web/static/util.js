// Helpers shared by the dashboard's scripts: building elements, human units and words, and
// updating lists in place (a row whose data did not change keeps its element, so focus, open
// <details> and text selections survive the once-a-second status updates).
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

// -- units: the documents carry exact numbers; they are put in words here, once ----------------

function fmtBytes(n) {
  n = Number(n) || 0;
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtRate(bytesPerSecond) { return `${fmtBytes(bytesPerSecond)}/s`; }

function fmtDuration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function fmtLeft(s) {
  if (!isFinite(s)) return "";
  if (s < 60) return "less than a minute left";
  if (s < 3600) return `${Math.round(s / 60)} min left`;
  return `${fmtDuration(s)} left`;
}

function fmtAgo(t) {
  if (!t) return "never";
  const s = Date.now() / 1000 - t;
  if (s < 10) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(t * 1000).toLocaleDateString();
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function plural(n, word, many) { return `${n} ${n === 1 ? word : (many || word + "s")}`; }

function short(hex) { return hex ? hex.slice(0, 8) : ""; }

// -- lists updated in place ------------------------------------------------------------------------

// Make `container`'s children the elements for `items`, in order. Each item has a key and a
// signature (a string of everything its element shows); an element is rebuilt only when its
// signature changed.
function patchList(container, items, keyOf, sigOf, build) {
  const old = new Map([...container.children].map((c) => [c.dataset.key, c]));
  const kids = items.map((item) => {
    const key = keyOf(item), sig = sigOf(item);
    const prev = old.get(key);
    if (prev && prev.dataset.sig === sig) return prev;
    const node = build(item, prev);
    node.dataset.key = key;
    node.dataset.sig = sig;
    if (prev) {
      if (prev.open !== undefined && node.open !== undefined) node.open = prev.open;
      const focused = prev.contains(document.activeElement) && document.activeElement.dataset.focusKey;
      prev.replaceWith(node);
      if (focused) { const f = node.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`); if (f) f.focus(); }
    }
    return node;
  });
  for (const [key, c] of old) if (!kids.includes(c)) { c.remove(); old.delete(key); }
  kids.forEach((k, i) => { if (container.children[i] !== k) container.insertBefore(k, container.children[i] || null); });
}

function props(pairs) {
  const dl = el("dl", { class: "props" });
  for (const [k, v, cls] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    dl.append(el("dt", { text: k }), el("dd", { class: cls || "" }, v));
  }
  return dl;
}
