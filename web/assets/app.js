// hopwatch status pages: the overview (every target, the peer links, the
// webhooks), a target page (live hop table, SmokePing-style latency graph,
// all-hops heatmap, route history, alerts) and a peer page (a STAMP link's
// directions, history and alerts).
// Plain JavaScript and canvas, no libraries, nothing loaded from elsewhere.
// The target page's world map is its own file, map.js (HopMap), loaded first.
// Data: the JSON API under /api/v1; live updates: server-sent events read
// with fetch (so a bearer token can be sent).
'use strict';

// ---------------------------------------------------------------- utilities

const $ = (sel, root = document) => root.querySelector(sel);

/** Builds an element: h('td', {class: 'num', text: '1.0'}, child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) el.dataset[dk] = dv;
    }
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setClass(el, cls) {
  if (el.className !== cls) el.className = cls;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Milliseconds from nanoseconds, with the precision the value deserves. */
function ms(ns) {
  if (ns === null || ns === undefined) return '–';
  const v = ns / 1e6;
  if (v < 1) return v.toFixed(3);
  if (v < 10) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return v.toFixed(0);
}

function pct(p) {
  if (p === null || p === undefined) return '–';
  return (p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + '%';
}

function mosText(m) {
  return m === null || m === undefined ? '–' : m.toFixed(2);
}

function ago(tms) {
  if (!tms) return '–';
  const s = Math.max(0, Math.round((Date.now() - tms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

function fmtTime(tms, withDate) {
  const d = new Date(tms);
  const t = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  if (!withDate) return t;
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + t;
}

function fmtFull(tms) {
  const d = new Date(tms);
  return fmtTime(tms, true) + ':' + pad2(d.getSeconds());
}

/** "AS64500 Example Transit" from what the ASN database knows; '' when nothing. */
function asLabel(asn, org) {
  if (asn === null || asn === undefined) return org || '';
  return 'AS' + asn + (org ? ' ' + org : '');
}

function interval(msv) {
  if (msv % 1000 === 0) return msv / 1000 + ' s';
  return msv + ' ms';
}

// Theme colours, read once per theme: getComputedStyle forces a style
// recalculation, which a thousand sparklines must not pay each.
let palette = new Map();
let paletteVersion = 0;

function css(name) {
  let v = palette.get(name);
  if (v === undefined) {
    v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    palette.set(name, v);
  }
  return v;
}

function themeChanged() {
  palette = new Map();
  paletteVersion++;
}

let toastTimer = 0;
function toast(text, kind) {
  const el = $('#toast');
  el.textContent = text;
  el.className = 'show' + (kind ? ' ' + kind : '');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = ''; }, 4000);
}

// ------------------------------------------------------------ settings, API

const prefs = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem('hopwatch.' + key);
      return v === null ? fallback : JSON.parse(v);
    } catch (e) {
      return fallback;
    }
  },
  set(key, value) {
    try { localStorage.setItem('hopwatch.' + key, JSON.stringify(value)); } catch (e) { /* private mode */ }
  },
};

/** Tokens live in sessionStorage, or localStorage when the user asked to be remembered. */
const tokens = {
  read() { return sessionStorage.getItem('hopwatch.read') || localStorage.getItem('hopwatch.read') || ''; },
  write() { return sessionStorage.getItem('hopwatch.write') || localStorage.getItem('hopwatch.write') || ''; },
  save(read, write, remember) {
    tokens.forget();
    const store = remember ? localStorage : sessionStorage;
    if (read) store.setItem('hopwatch.read', read);
    if (write) store.setItem('hopwatch.write', write);
  },
  forget() {
    for (const s of [sessionStorage, localStorage]) {
      s.removeItem('hopwatch.read');
      s.removeItem('hopwatch.write');
    }
  },
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let askedForToken = false;

/** Calls the API; JSON in and out. Errors carry the server's message. */
async function api(path, opts = {}) {
  const headers = {};
  const token = opts.write ? tokens.write() : (tokens.read() || tokens.write());
  if (token) headers.Authorization = 'Bearer ' + token;
  let body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const res = await fetch(path, { method: opts.method || 'GET', headers, body });
  if (!res.ok) {
    let message = res.status + ' ' + res.statusText;
    let doc = null;
    try { doc = await res.json(); message = doc.error || message; } catch (e) { /* not JSON */ }
    if (res.status === 401 && !opts.write && !askedForToken) {
      askedForToken = true;
      openTokens('This server needs a read token.');
    }
    const err = new ApiError(res.status, message);
    // A list of targets: what is wrong with each entry.
    err.errors = (doc && doc.errors) || [];
    throw err;
  }
  return opts.raw ? res : res.json();
}

let service = null;

async function loadService() {
  service = await api('/api/v1/service');
  const badge = $('#source-badge');
  badge.textContent = 'timestamps: ' + service.timestamp_source;
  badge.className = 'badge ' + service.timestamp_source;
  document.title = 'hopwatch';
  return service;
}

/** A change (pause, resume, add, remove): needs the write token. */
async function write(method, path, json) {
  if (service && !service.writes_enabled) {
    toast('Changes are disabled on this server: it has no [web] write_token.', 'bad');
    return null;
  }
  if (!tokens.write()) {
    const given = await openTokens('Changes need the write token.');
    if (!given || !tokens.write()) return null;
  }
  try {
    return await api(path, { method, json, write: true });
  } catch (e) {
    if (e.status === 401) toast('The write token was refused.', 'bad');
    else toast(e.message, 'bad');
    return null;
  }
}

/** Reads a server-sent event stream with fetch; reconnects with backoff. */
function stream(path, handlers) {
  let stopped = false;
  let controller = null;
  const conn = $('#conn');
  const state = (cls, text) => { conn.className = 'conn ' + cls; conn.textContent = text; };
  (async () => {
    let retry = 1000;
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = {};
        const token = tokens.read() || tokens.write();
        if (token) headers.Authorization = 'Bearer ' + token;
        const res = await fetch(path, { headers, signal: controller.signal });
        if (res.status === 401) {
          state('down', 'token needed');
          if (!askedForToken) { askedForToken = true; openTokens('This server needs a read token.'); }
          await sleep(5000);
          continue;
        }
        if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
        state('live', 'live');
        retry = 1000;
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) name = line.slice(6).trim();
              else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
            }
            if (data && handlers[name]) {
              try { handlers[name](JSON.parse(data)); } catch (e) { console.warn('live update', name, e); }
            }
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      state('down', 'reconnecting');
      await sleep(retry);
      retry = Math.min(retry * 2, 15000);
    }
  })();
  return { close() { stopped = true; if (controller) controller.abort(); } };
}

// --------------------------------------------------------- header controls

function applyTheme() {
  const theme = prefs.get('theme', 'auto');
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $('#btn-theme').textContent = 'Theme: ' + theme;
}

function cycleTheme() {
  const order = ['auto', 'dark', 'light'];
  const next = order[(order.indexOf(prefs.get('theme', 'auto')) + 1) % order.length];
  prefs.set('theme', next);
  applyTheme();
  themeChanged();
  redrawAll();
}

function wallMode() {
  return new URLSearchParams(location.search).has('wall') || prefs.get('wall', false);
}

function applyWall() {
  const on = wallMode();
  document.body.classList.toggle('wall', on);
  $('#btn-wall').classList.toggle('on', on);
  $('#clock').hidden = !on;
}

function toggleWall() {
  prefs.set('wall', !prefs.get('wall', false));
  if (!prefs.get('wall', false) && new URLSearchParams(location.search).has('wall')) {
    location.search = '';
    return;
  }
  applyWall();
  if (page && page.refresh) page.refresh();
}

/** Opens the token dialog; resolves true when the user saved. */
function openTokens(reason) {
  const dlg = $('#dlg-token');
  const form = $('form', dlg);
  form.elements.read.value = tokens.read();
  form.elements.write.value = tokens.write();
  form.elements.remember.checked = !!(localStorage.getItem('hopwatch.read') || localStorage.getItem('hopwatch.write'));
  const p = $('p', dlg);
  p.dataset.base = p.dataset.base || p.textContent;
  p.textContent = (reason ? reason + ' ' : '') + p.dataset.base;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => {
      if (dlg.returnValue === 'save') {
        tokens.save(form.elements.read.value.trim(), form.elements.write.value.trim(), form.elements.remember.checked);
        askedForToken = false;
        resolve(true);
        if (page && page.refresh) page.refresh();
      } else {
        resolve(false);
      }
    }, { once: true });
    dlg.returnValue = '';
    dlg.showModal();
  });
}

function confirmDialog(title, text, okText) {
  const dlg = $('#dlg-confirm');
  $('[data-slot=title]', dlg).textContent = title;
  $('[data-slot=text]', dlg).textContent = text;
  $('[data-slot=ok]', dlg).textContent = okText;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.returnValue = '';
    dlg.showModal();
  });
}

// --------------------------------------------------------- target status

/** ok, warn, bad or paused: drives colours everywhere. */
function status(t) {
  if (t.state === 'paused') return 'paused';
  if (t.state === 'failed' || (t.alerts && t.alerts.length)) return 'bad';
  if (t.rounds > 0 && t.loss_pct === 100) return 'bad';
  if (t.loss_pct >= 5 || (t.mos !== null && t.mos < 3.1)) return 'bad';
  if (t.loss_pct > 0 || (t.mos !== null && t.mos < 4.0) || t.finding) return 'warn';
  if (t.state !== 'running') return 'warn';
  return 'ok';
}

const STATUS_RANK = { bad: 0, warn: 1, ok: 2, paused: 3 };

// ------------------------------------------------------------------ alerts

/**
 * The page an alert is about: a target's, or a peer's for the alerts of
 * [[peer]] links (subject "peer", keyed "peer:NAME" like their webhooks).
 */
function alertPage(a) {
  if (a.subject === 'peer') return '/peers/' + encodeURIComponent(a.target.replace(/^peer:/, ''));
  // The service's own alerts (store, outbox): the overview, whose health
  // strip says what is degraded.
  if (a.subject === 'service') return '/';
  return '/targets/' + encodeURIComponent(a.target);
}

/** The firing alerts of one target or peer: when, rule, and the summary. */
function alertList(alerts, none) {
  if (!alerts || !alerts.length) return h('p', { class: 'muted', text: none });
  return h('ul', { class: 'events alerts' }, alerts.map((a) => h('li', { dataset: { alert: a.name } },
    h('span', { class: 'when', text: a.since_ms ? fmtFull(a.since_ms) : '' }),
    h('span', { class: 'kind', text: a.name }), a.summary)));
}

/** An alert as a chip that links to its target's or peer's page. */
function alertChip(a) {
  return h('a', { class: 'alert-chip', href: alertPage(a), title: a.summary, text: a.name });
}

// ------------------------------------------------------------- charts core

/** Sizes a canvas for the screen's pixel ratio; returns its 2D context. */
function prepCanvas(canvas, height, knownWidth) {
  // Reading clientWidth forces a layout: callers drawing many canvases read
  // all widths first and pass them in.
  const width = knownWidth || Math.max(120, canvas.clientWidth || canvas.parentElement.clientWidth);
  const dpr = window.devicePixelRatio || 1;
  if (canvas.style.height !== height + 'px') canvas.style.height = height + 'px';
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, w: width, h: height };
}

function drawSparkline(canvas, spark, cls, width) {
  if (!canvas || !canvas.isConnected || !width) return;
  const tall = document.body.classList.contains('wall') ? 44 : 30;
  const { ctx, w, h: hh } = prepCanvas(canvas, canvas.classList.contains('tall') ? tall : 24, width);
  const values = (spark && spark.rtt_us) || [];
  if (!values.length) return;
  const answered = values.filter((v) => v !== null);
  const max = answered.length ? Math.max(...answered) : 1;
  const min = answered.length ? Math.min(...answered) : 0;
  const span = Math.max(max - min, max * 0.1, 1);
  const x = (i) => (values.length === 1 ? w / 2 : (i / (values.length - 1)) * (w - 2) + 1);
  const y = (v) => hh - 3 - ((v - min) / span) * (hh - 6);
  ctx.strokeStyle = css(cls === 'bad' ? '--bad' : cls === 'warn' ? '--warn' : '--accent');
  ctx.lineWidth = 1.3;
  ctx.beginPath();
  let pen = false;
  values.forEach((v, i) => {
    if (v === null) { pen = false; return; }
    if (pen) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
    pen = true;
  });
  ctx.stroke();
  ctx.fillStyle = css('--bad');
  values.forEach((v, i) => { if (v === null) ctx.fillRect(x(i) - 0.75, 0, 1.5, hh); });
}

/** Round numbers for a y axis from 0 to max. */
function niceTicks(max, count) {
  if (!(max > 0)) return { step: 1, top: 1 };
  const raw = max / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  return { step, top: Math.ceil(max / step) * step };
}

const TIME_STEPS = [60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3];
/** Steps of whole local days, and of whole months for the longest ranges. */
const DAY_STEPS = [1, 2, 7, 14];
const MONTH_STEPS = [1, 2, 3, 6, 12];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function fmtDate(tms) {
  const d = new Date(tms);
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate());
}

/**
 * Where the time axis has its ticks and what they say: clock times up to
 * half a day apart, then local midnights (dates, no hours), then the first
 * of the month ("Mar 2026") for ranges of months, so a 90-day or one-year
 * range reads as days and months. Days and months are counted on the local
 * calendar, so a daylight-saving change does not shift them.
 */
function timeTicks(from, to, widthPx) {
  const want = Math.max(2, Math.floor(widthPx / 110));
  const span = to - from;
  const ticks = [];
  const step = TIME_STEPS.find((s) => span / s <= want);
  if (step) {
    const offset = new Date(from).getTimezoneOffset() * 60e3;
    for (let t = Math.ceil((from - offset) / step) * step + offset; t <= to; t += step) ticks.push(t);
    const withDate = span > 86400e3;
    return { ticks, label: (t) => fmtTime(t, withDate) };
  }
  const days = DAY_STEPS.find((n) => span / (n * 86400e3) <= want);
  if (days) {
    const d = new Date(from);
    d.setHours(0, 0, 0, 0);
    if (d.getTime() < from) d.setDate(d.getDate() + 1);
    // Whole days since the epoch on the local calendar, so steps line up.
    const dayNo = (x) => Math.round(Date.UTC(x.getFullYear(), x.getMonth(), x.getDate()) / 86400e3);
    while (dayNo(d) % days !== 0) d.setDate(d.getDate() + 1);
    for (; d.getTime() <= to; d.setDate(d.getDate() + days)) ticks.push(d.getTime());
    return { ticks, label: fmtDate };
  }
  const monthsSpanned = span / (30.44 * 86400e3);
  const months = MONTH_STEPS.find((n) => monthsSpanned / n <= want) || 12;
  const d = new Date(from);
  d.setHours(0, 0, 0, 0);
  d.setDate(1);
  if (d.getTime() < from) d.setMonth(d.getMonth() + 1);
  while (d.getMonth() % months !== 0) d.setMonth(d.getMonth() + 1);
  for (; d.getTime() <= to; d.setMonth(d.getMonth() + months)) ticks.push(d.getTime());
  return { ticks, label: (t) => { const x = new Date(t); return MONTHS[x.getMonth()] + ' ' + x.getFullYear(); } };
}

/** Shared plot geometry, so the latency graph and the heatmap line up. */
const PLOT = { left: 58, right: 12 };

/** Draws the time axis; returns the labels drawn, left to right. */
function drawTimeAxis(ctx, from, to, x0, x1, yTop, yBottom) {
  const { ticks, label } = timeTicks(from, to, x1 - x0);
  const labels = [];
  ctx.fillStyle = css('--muted');
  ctx.strokeStyle = css('--grid');
  ctx.font = '11px ' + css('--sans');
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (const t of ticks) {
    const x = x0 + ((t - from) / (to - from)) * (x1 - x0);
    ctx.beginPath();
    ctx.moveTo(x + 0.5, yTop);
    ctx.lineTo(x + 0.5, yBottom);
    ctx.stroke();
    const text = label(t);
    ctx.fillText(text, x, yBottom + 4);
    labels.push(text);
  }
  return labels;
}

function lossColour(ratio) {
  if (ratio <= 0) return css('--loss-0');
  if (ratio < 0.05) return css('--loss-1');
  if (ratio < 0.2) return css('--loss-2');
  return css('--loss-3');
}

function showTip(ev, text) {
  const tip = $('#tooltip');
  tip.textContent = text;
  tip.hidden = false;
  const pad = 14;
  let x = ev.clientX + pad;
  let y = ev.clientY + pad;
  const r = tip.getBoundingClientRect();
  if (x + r.width > window.innerWidth - 4) x = ev.clientX - r.width - pad;
  if (y + r.height > window.innerHeight - 4) y = ev.clientY - r.height - pad;
  tip.style.left = Math.max(4, x) + 'px';
  tip.style.top = Math.max(4, y) + 'px';
}

function hideTip() {
  $('#tooltip').hidden = true;
}

/**
 * The latency graph of one hop, in the style of SmokePing: per column the
 * whole spread of answers (min to max, light), the bulk (min to p95, darker),
 * the median as a line coloured by the column's loss, and lost probes as red
 * marks from the top (a fully lost column is tinted red).
 */
function drawLatency(canvas, series, from, to) {
  const height = window.innerWidth < 760 ? 220 : 280;
  const { ctx, w, h: hh } = prepCanvas(canvas, height);
  const x0 = PLOT.left;
  const x1 = w - PLOT.right;
  const yTop = 8;
  const yBottom = hh - 22;
  const points = (series && series.points) || [];
  const answered = points.filter((p) => p.max_ns !== null);
  const maxes = answered.map((p) => p.max_ns).sort((a, b) => a - b);
  const p95s = answered.map((p) => p.p95_ns || p.max_ns);
  // Scale to the bulk, not to one freak answer: the 98th percentile of maxima.
  const robust = maxes.length ? maxes[Math.min(maxes.length - 1, Math.floor(maxes.length * 0.98))] : 1e6;
  const top = Math.max(robust, p95s.length ? Math.max(...p95s) : 0, 5e3) * 1.12;
  const { step, top: yMax } = niceTicks(top / 1e6, 5);
  const X = (t) => x0 + ((t - from) / (to - from)) * (x1 - x0);
  const Y = (ns) => yBottom - Math.min(1, ns / 1e6 / yMax) * (yBottom - yTop);

  ctx.strokeStyle = css('--grid');
  ctx.fillStyle = css('--muted');
  ctx.font = '11px ' + css('--sans');
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  // As many decimals as the step has (0.025 → 3), so no two labels look alike.
  const decimals = Math.min(4, (String(+step.toPrecision(3)).split('.')[1] || '').length);
  for (let i = 0; i * step <= yMax + 1e-9; i++) {
    const v = i * step;
    const y = yBottom - (v / yMax) * (yBottom - yTop);
    ctx.beginPath();
    ctx.moveTo(x0, Math.round(y) + 0.5);
    ctx.lineTo(x1, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillText(v.toFixed(decimals) + ' ms', x0 - 6, y);
  }
  const axis = drawTimeAxis(ctx, from, to, x0, x1, yTop, yBottom);

  if (!points.length) {
    ctx.textAlign = 'center';
    ctx.fillStyle = css('--muted');
    ctx.fillText('No stored data in this range yet', (x0 + x1) / 2, (yTop + yBottom) / 2);
    return { points: [], X, Y, axis, x0, x1, from, to };
  }
  const width = series.bucket_ms || series.interval_ms || 0;
  const colW = (p, i) => {
    const next = i + 1 < points.length ? points[i + 1].at_ms : p.at_ms + width;
    const span = width || Math.max(next - p.at_ms, 1);
    return Math.max(1, X(p.at_ms + span) - X(p.at_ms));
  };
  const band = css('--band');
  const band2 = css('--band-2');
  const bad = css('--bad');
  points.forEach((p, i) => {
    const x = X(p.at_ms);
    const cw = colW(p, i);
    if (p.sent > 0 && p.lost === p.sent) {
      ctx.globalAlpha = 0.18;
      ctx.fillStyle = bad;
      ctx.fillRect(x, yTop, cw, yBottom - yTop);
      ctx.globalAlpha = 1;
      return;
    }
    if (p.min_ns === null) return;
    ctx.fillStyle = band;
    ctx.fillRect(x, Y(p.max_ns), cw, Math.max(1, Y(p.min_ns) - Y(p.max_ns)));
    ctx.fillStyle = band2;
    const p95 = p.p95_ns === null ? p.max_ns : p.p95_ns;
    ctx.fillRect(x, Y(p95), cw, Math.max(1, Y(p.min_ns) - Y(p95)));
  });
  // The median, one segment per column, coloured by that column's loss.
  ctx.lineWidth = 2;
  let prev = null;
  points.forEach((p, i) => {
    if (p.p50_ns === null) { prev = null; return; }
    const x = X(p.at_ms) + colW(p, i) / 2;
    const y = Y(p.p50_ns);
    ctx.strokeStyle = lossColour(p.sent ? p.lost / p.sent : 0);
    ctx.beginPath();
    ctx.moveTo(prev ? prev[0] : x - colW(p, i) / 2, prev ? prev[1] : y);
    ctx.lineTo(x, y);
    ctx.stroke();
    prev = [x, y];
  });
  // Lost probes: red marks hanging from the top, longer for more loss.
  ctx.fillStyle = bad;
  points.forEach((p, i) => {
    if (!p.lost || p.lost === p.sent) return;
    const cw = colW(p, i);
    const len = 6 + 26 * (p.lost / p.sent);
    ctx.fillRect(X(p.at_ms) + cw / 2 - Math.max(0.75, cw / 4), yTop, Math.max(1.5, cw / 2), len);
  });
  return { points, X, Y, colW, axis, x0, x1, from, to };
}

/** Heat colour of a rise over the row's baseline: 0 → cool, ≥ 50 ms → hottest. */
function heatColour(riseMs) {
  const stops = [
    [0, css('--heat-0')],
    [2, css('--heat-1')],
    [15, css('--heat-2')],
    [60, css('--heat-3')],
  ];
  for (let i = stops.length - 1; i >= 0; i--) {
    if (riseMs >= stops[i][0]) {
      if (i === stops.length - 1) return stops[i][1];
      const [a, ca] = stops[i];
      const [b, cb] = stops[i + 1];
      return mix(ca, cb, (riseMs - a) / (b - a));
    }
  }
  return stops[0][1];
}

function parseColour(c) {
  if (c.startsWith('#')) {
    const n = parseInt(c.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  const m = c.match(/\d+(\.\d+)?/g) || [0, 0, 0];
  return m.slice(0, 3).map(Number);
}

function mix(a, b, t) {
  const ca = parseColour(a);
  const cb = parseColour(b);
  const c = ca.map((v, i) => Math.round(v + (cb[i] - v) * Math.max(0, Math.min(1, t))));
  return 'rgb(' + c.join(',') + ')';
}

/**
 * Every hop on one time axis: each cell is the hop's median RTT in that
 * column, coloured by how far it rose over the hop's own baseline (its 5th
 * percentile), so a step that starts at one hop shows as a colour edge at
 * the same moment on every hop after it. Loss tints the cell red.
 */
function drawHeatmap(canvas, map, rateLimited) {
  const rows = (map && map.rows) || [];
  const rowH = window.innerWidth < 760 ? 14 : 18;
  const height = Math.max(60, rows.length * rowH + 30);
  const { ctx, w } = prepCanvas(canvas, height);
  const x0 = PLOT.left;
  const x1 = w - PLOT.right;
  const yTop = 4;
  const yBottom = yTop + rows.length * rowH;
  if (!map || !rows.length) {
    ctx.fillStyle = css('--muted');
    ctx.font = '12px ' + css('--sans');
    ctx.fillText('No stored data in this range yet', x0, 20);
    return null;
  }
  const colW = (x1 - x0) / map.columns;
  const empty = css('--empty');
  const bad = css('--bad');
  const limited = css('--paused');
  ctx.font = '11px ' + css('--sans');
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  const baselines = rows.map((r) => {
    const v = r.p50_ns.filter((x) => x !== null).sort((a, b) => a - b);
    return v.length ? v[Math.floor(v.length * 0.05)] : null;
  });
  rows.forEach((r, ri) => {
    const y = yTop + ri * rowH;
    ctx.fillStyle = css('--muted');
    ctx.fillText(r.hop === 'destination' ? 'dst' : 'hop ' + r.hop, x0 - 6, y + rowH / 2);
    for (let c = 0; c < map.columns; c++) {
      const x = x0 + c * colW;
      const v = r.p50_ns[c];
      const loss = r.loss[c];
      if (v === null && loss === null) {
        ctx.fillStyle = empty;
        ctx.fillRect(x, y + 1, Math.ceil(colW), rowH - 2);
        continue;
      }
      if (v !== null) {
        ctx.fillStyle = heatColour((v - baselines[ri]) / 1e6);
        ctx.fillRect(x, y + 1, Math.ceil(colW), rowH - 2);
      }
      if (loss) {
        // A rate-limited router's unanswered probes are not path loss: grey, not red.
        ctx.globalAlpha = 0.25 + 0.75 * loss;
        ctx.fillStyle = rateLimited && rateLimited.has(r.hop) ? limited : bad;
        ctx.fillRect(x, y + 1, Math.ceil(colW), rowH - 2);
        ctx.globalAlpha = 1;
      }
    }
  });
  const axis = drawTimeAxis(ctx, map.from_ms, map.to_ms, x0, x1, yTop, yBottom);
  return { rows, rowH, yTop, colW, x0, x1, from: map.from_ms, to: map.to_ms, baselines, axis };
}

// --------------------------------------------------------------- webhooks

/** "in 4 s" / "due": how far ahead a time is. */
function until(tms) {
  if (!tms) return '–';
  const s = Math.round((tms - Date.now()) / 1000);
  if (s <= 0) return 'due';
  if (s < 60) return 'in ' + s + ' s';
  if (s < 3600) return 'in ' + Math.round(s / 60) + ' min';
  return 'in ' + Math.round(s / 3600) + ' h';
}

/**
 * The overview's webhooks panel: each webhook's delivery health from
 * /api/v1/webhooks, failing ones first and highlighted. Hidden when no
 * webhook is configured. URLs come redacted from the server (scheme, host
 * and port only), and no secret ever reaches the page.
 */
function webhooksPanel(onChange) {
  let list = [];
  const tbody = h('tbody');
  const note = h('span', { class: 'muted wh-note' });
  const cols = [
    ['Webhook', ''], ['Status', ''], ['Pending', 'num'], ['Delivered', 'num'],
    ['Failed attempts', 'num hide-sm'], ['Last success', 'hide-sm'], ['Last failure', ''], ['Next retry', 'hide-md'],
  ];
  const el = h('section', { class: 'panel webhooks', id: 'webhooks', hidden: true, 'aria-label': 'Webhook delivery' },
    h('div', { class: 'panel-head' }, h('h2', { text: 'Webhooks' }), note),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'webhooks' },
        h('thead', {}, h('tr', {}, cols.map(([label, cls]) => h('th', { class: cls, scope: 'col', text: label })))),
        tbody)));

  function row(w) {
    const st = w.failing ? 'bad' : (w.pending > 0 ? 'warn' : 'ok');
    const state = w.failing
      ? 'failing' + (w.consecutive_failures > 1 ? ' (' + w.consecutive_failures + ' in a row)' : '')
      : (w.pending > 0 ? 'sending' : 'ok');
    const when = (tms) => h('span', { title: tms ? fmtFull(tms) : '', text: ago(tms) });
    const delivered = w.format === 'alertmanager' && w.resent
      ? w.delivered + ' · ' + w.resent + ' re-sent' : String(w.delivered);
    return h('tr', { class: 's-' + st, dataset: { webhook: w.name } },
      h('td', { class: 'name' },
        h('b', { text: w.name }),
        h('span', { class: 'host', text: w.format + ' · ' + w.url + (w.signed ? ' · signed' : '') })),
      h('td', {}, h('span', { class: 'dot' }), h('span', { class: 'wh-state', text: state })),
      h('td', {
        class: 'num',
        // Deliveries the outbox gave up on (too old, or over its byte budget).
        title: (w.dropped_age || w.dropped_bytes)
          ? 'dropped undelivered: ' + w.dropped_age + ' too old, ' + w.dropped_bytes + ' over the size budget'
          : '',
        text: String(w.pending) + ((w.dropped_age || w.dropped_bytes)
          ? ' (' + (w.dropped_age + w.dropped_bytes) + ' dropped)' : ''),
      }),
      h('td', { class: 'num', text: delivered }),
      h('td', { class: 'num hide-sm', text: String(w.failed_attempts) }),
      h('td', { class: 'hide-sm' }, when(w.last_success_at_ms)),
      h('td', { class: 'wh-error' }, when(w.last_error_at_ms),
        w.last_error ? h('span', { class: 'err', text: w.last_error }) : null),
      h('td', {
        class: 'hide-md',
        title: w.retrying_targets.length ? 'waiting: ' + w.retrying_targets.join(', ') : '',
        text: until(w.next_retry_at_ms),
      }));
  }

  function render() {
    el.hidden = list.length === 0;
    const shown = [...list].sort((a, b) => (b.failing - a.failing) || a.name.localeCompare(b.name));
    tbody.replaceChildren(...shown.map(row));
    const failing = list.filter((w) => w.failing).length;
    const pending = list.reduce((n, w) => n + w.pending, 0);
    setText(note, failing ? failing + ' failing, ' + pending + ' alert deliveries waiting'
      : (pending ? pending + ' alert deliveries in progress' : 'all delivered'));
    setClass(note, 'wh-note ' + (failing ? 'bad' : 'muted'));
  }

  async function load() {
    try {
      list = (await api('/api/v1/webhooks')).webhooks;
      render();
      if (onChange) onChange();
    } catch (e) { /* the next refresh tries again */ }
  }

  return {
    el,
    load,
    render,
    failing: () => list.filter((w) => w.failing).length,
  };
}

// ------------------------------------------------------------ remote write

/**
 * The overview's remote-write panel: each [[remote_write]] receiver's state
 * from /healthz (last success, backlog, samples backfilled and dropped).
 * Hidden when none is configured. /healthz is open, so it has no URL and
 * no error text: those are in the daemon's log.
 */
function remoteWritePanel() {
  let list = [];
  const tbody = h('tbody');
  const cols = [
    ['Receiver', ''], ['Status', ''], ['Last success', ''], ['Backlog', 'num'],
    ['Sent', 'num hide-sm'], ['Backfilled', 'num'], ['Dropped', 'num'], ['Last failure', 'hide-md'],
  ];
  const el = h('section', { class: 'panel webhooks remote-write', id: 'remote-write', hidden: true, 'aria-label': 'Remote write' },
    h('div', { class: 'panel-head' }, h('h2', { text: 'Remote write' })),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'webhooks' },
        h('thead', {}, h('tr', {}, cols.map(([label, cls]) => h('th', { class: cls, scope: 'col', text: label })))),
        tbody)));

  function row(r) {
    const st = !r.ok ? 'bad' : (r.backlog_seconds > 0 ? 'warn' : 'ok');
    const state = !r.ok ? 'failing' : (r.backlog_seconds > 0 ? 'backfilling' : 'ok');
    const when = (tms) => h('span', { title: tms ? fmtFull(tms) : '', text: ago(tms) });
    return h('tr', { class: 's-' + st, dataset: { remote: r.name } },
      h('td', { class: 'name' }, h('b', { text: r.name })),
      h('td', {}, h('span', { class: 'dot' }), h('span', { class: 'wh-state', text: state })),
      h('td', {}, when(r.last_success_at_ms)),
      h('td', { class: 'num', dataset: { backlog: String(r.backlog_seconds) },
        text: r.backlog_seconds > 0 ? duration(r.backlog_seconds * 1000) : '–' }),
      h('td', { class: 'num hide-sm', text: String(r.samples_sent) }),
      h('td', { class: 'num', text: String(r.samples_backfilled) }),
      h('td', { class: 'num', text: String(r.samples_dropped) }),
      h('td', { class: 'wh-error hide-md' }, when(r.last_error_at_ms)));
  }

  async function load() {
    try {
      list = (await api('/healthz')).remote_write || [];
      el.hidden = list.length === 0;
      tbody.replaceChildren(...list.map(row));
    } catch (e) { /* the next refresh tries again */ }
  }

  return { el, load };
}

/** "3 h 20 min", "45 s": how long an incident lasted. */
function duration(msv) {
  const s = Math.round(msv / 1000);
  if (s < 60) return s + ' s';
  const m = Math.round(s / 60);
  if (m < 60) return m + ' min';
  const hours = Math.floor(m / 60);
  if (hours < 48) return hours + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
  return Math.round(hours / 24) + ' d';
}

/**
 * The incident history from /api/v1/incidents: past and current alerts, newest
 * first, with when, how long, the worst value and where the problem started.
 * `target` narrows it to one target (its page); `range` is an API preset.
 */
function incidentsPanel(target, range) {
  const tbody = h('tbody');
  const note = h('span', { class: 'muted' });
  const cols = [['Raised', ''], ['Rule', '']].concat(target ? [] : [['Target', '']],
    [['Lasted', 'num'], ['Worst', 'num hide-sm'], ['Where it started', 'hide-sm'], ['Ended', 'hide-md']]);
  const table = h('table', { class: 'incidents' },
    h('thead', {}, h('tr', {}, cols.map(([label, cls]) => h('th', { class: cls, scope: 'col', text: label })))), tbody);
  const el = h('section', { class: 'panel', id: 'incidents', 'aria-label': 'Incident history' },
    h('div', { class: 'panel-head' }, h('h2', { text: 'Incident history' }), note),
    h('div', { class: 'table-wrap' }, table));

  function row(i) {
    const open = i.cleared_at_ms === null;
    const place = i.localisation && (i.localisation.summary || (i.localisation.ttl ? 'hop ' + i.localisation.ttl : i.localisation.direction));
    const worst = i.peak_value === null ? '–' : i.peak_value.toFixed(i.unit === 'mos' ? 2 : 1) + (i.unit === 'pct' ? '%' : i.unit ? ' ' + i.unit : '');
    return h('tr', { class: open ? 's-bad' : '', dataset: { incident: i.id } },
      h('td', { title: fmtFull(i.raised_at_ms), text: fmtTime(i.raised_at_ms, true) }),
      h('td', { text: i.name }),
      target ? null : h('td', {}, h('a', { href: alertPage(i), text: i.label || i.target })),
      h('td', { class: 'num', text: duration(i.duration_ms) + (open ? ' so far' : '') }),
      h('td', { class: 'num hide-sm', text: worst }),
      h('td', { class: 'hide-sm', title: i.summary, text: (place || '–') + (i.updates ? ' (updated ' + i.updates + '×)' : '') }),
      h('td', { class: 'hide-md', text: open ? 'still raised' : (i.clear_reason || '') + ' ' + ago(i.cleared_at_ms) }));
  }

  async function load() {
    try {
      const q = 'range=' + range + (target ? '&target=' + encodeURIComponent(target) : '');
      const doc = await api('/api/v1/incidents?' + q);
      tbody.replaceChildren(...doc.incidents.map(row));
      setText(note, doc.incidents.length ? doc.incidents.length + ' in the last ' + range : 'none in the last ' + range);
      table.hidden = doc.incidents.length === 0;
    } catch (e) { /* the next refresh tries again */ }
  }

  return { el, load };
}


// ------------------------------------------------------------------ peers

/** A peer's health from its window: loss in either direction, then state. */
function peerStatus(p) {
  if (p.state === 'paused') return 'paused';
  if (p.state === 'failed' || (p.alerts && p.alerts.length)) return 'bad';
  const w = p.window;
  const worst = Math.max(w.forward.loss_pct || 0, w.backward.loss_pct || 0);
  if (worst >= 5) return 'bad';
  if (worst > 0 || p.state !== 'running') return 'warn';
  return 'ok';
}

/** One-way delay text, marked when the clocks cannot be trusted. */
function owdText(w, dir) {
  const owd = w[dir].owd;
  if (!owd) return '–';
  return ms(owd.mean_ns) + (w.owd_reliable ? '' : '?');
}

/**
 * The overview's "Peers" panel: every [[peer]] link (STAMP) with its RTT,
 * per-direction delay and loss, and its firing alerts (each a link to the
 * peer's page), from /api/v1/peers. Hidden without peers. `onChange` lets
 * the overview's summary strip count the peers' alerts.
 */
function peersPanel(onChange) {
  let list = [];
  const tbody = h('tbody');
  const note = h('span', { class: 'muted' });
  const cols = [
    ['Peer', ''], ['Status', ''], ['RTT ms', 'num'], ['→ OWD ms', 'num'], ['← OWD ms', 'num'],
    ['→ Loss', 'num'], ['← Loss', 'num'], ['Alerts', ''], ['Jitter', 'num hide-sm'], ['Probes', 'num hide-sm'],
  ];
  const el = h('section', { class: 'panel peers', id: 'peers', hidden: true, 'aria-label': 'Peer links' },
    h('div', { class: 'panel-head' }, h('h2', { text: 'Peers' }), note),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'peers' },
        h('thead', {}, h('tr', {}, cols.map(([label, cls]) => h('th', { class: cls, scope: 'col', text: label })))),
        tbody)));

  function row(p) {
    const w = p.window;
    const st = peerStatus(p);
    return h('tr', { class: 's-' + st, dataset: { peer: p.name } },
      h('td', { class: 'name' },
        h('a', { href: '/peers/' + encodeURIComponent(p.name) }, h('b', { text: p.label || p.name })),
        h('span', { class: 'host', text: p.address + ':' + p.port + ' · ' + p.mode })),
      h('td', {}, h('span', { class: 'dot' }), h('span', { text: p.state + (p.error ? ': ' + p.error : '') })),
      h('td', { class: 'num', text: w.rtt ? ms(w.rtt.mean_ns) : '–' }),
      h('td', { class: 'num', text: owdText(w, 'forward'), title: w.owd_reliable ? '' : 'clocks not synchronised' }),
      h('td', { class: 'num', text: owdText(w, 'backward'), title: w.owd_reliable ? '' : 'clocks not synchronised' }),
      h('td', { class: 'num', text: pct(w.forward.loss_pct) }),
      h('td', { class: 'num', text: pct(w.backward.loss_pct) }),
      h('td', { class: 'peer-alerts' }, (p.alerts || []).map(alertChip)),
      h('td', { class: 'num hide-sm', text: ms(w.rtt_jitter_ns) }),
      h('td', { class: 'num hide-sm', text: String(w.probes) }));
  }

  async function load() {
    try {
      list = (await api('/api/v1/peers')).peers;
      el.hidden = list.length === 0;
      tbody.replaceChildren(...list.map(row));
      const bad = list.filter((p) => peerStatus(p) === 'bad').length;
      setText(note, bad ? bad + ' with problems' : list.length + ' link' + (list.length === 1 ? '' : 's'));
      if (onChange) onChange();
    } catch (e) { /* the next refresh tries again */ }
  }
  load();
  const timer = setInterval(load, 2000);
  return {
    el,
    stop: () => clearInterval(timer),
    /** Alerts firing on peers now. */
    alerts: () => list.reduce((n, p) => n + (p.alerts || []).length, 0),
  };
}

/**
 * A peer's page (the link view): RTT, one-way delay and loss per direction,
 * and a chart of RTT and both one-way delays over the last hour from the
 * store (/api/v1/peers/{name}/history, refreshed every 5 s), continued by
 * the live window's means until the next flush reaches the store.
 */
function peerPage(root, name) {
  const enc = encodeURIComponent(name);
  const title = h('h1');
  const stateBadge = h('span', { class: 'state-badge' });
  const sub = h('div', { class: 'sub' });
  const kpis = h('div', { class: 'kpis' });
  const dirBody = h('tbody');
  const canvas = h('canvas', { class: 'peer-chart', id: 'peer-chart', height: 220 });
  const legend = h('div', { class: 'muted', text: 'RTT (accent), → forward OWD (ok), ← backward OWD (warn), ms, last hour' });
  const alertsBox = h('div', { id: 'peer-alerts' });
  let stored = []; // {t, rtt, fwd, bwd} in ms, from the store
  const live = []; // the same, from the live window since the page opened
  root.replaceChildren(
    h('nav', { class: 'crumbs' }, h('a', { href: '/', text: '← Overview' })),
    h('section', { class: 'target-head' }, h('div', {}, title, stateBadge), sub),
    kpis,
    h('section', { class: 'panel' }, h('h2', { text: 'Alerts' }), alertsBox),
    h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', { text: 'Directions' })),
      h('div', { class: 'table-wrap' }, h('table', { class: 'peer-dirs', id: 'peer-dirs' },
        h('thead', {}, h('tr', {}, ['Direction', 'OWD min', 'OWD avg', 'OWD max', 'Loss', 'Lost', 'Jitter', 'Duplicates']
          .map((label, i) => h('th', { class: i ? 'num' : '', scope: 'col', text: label })))),
        dirBody))),
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', { text: 'History' }), legend), canvas));

  function show(p) {
    const w = p.window;
    const st = peerStatus(p);
    setText(title, p.label || p.name);
    setText(stateBadge, p.state);
    setClass(stateBadge, 'state-badge s-' + st);
    setText(sub, [p.address + ':' + p.port, p.mode, p.packet_size + ' B every ' + p.interval_ms + ' ms',
      'window ' + p.window_probes + ' probes', w.timestamp_source ? 'timestamps: ' + w.timestamp_source : null,
      'clocks: ' + (w.owd_verdict || '–') + (w.owd_doubt ? ' (' + w.owd_doubt + ')' : ''),
      p.error ? 'error: ' + p.error : null].filter(Boolean).join(' · '));
    const k = (label, value, cls) => h('div', { class: 'kpi ' + (cls || '') }, h('small', { text: label }), h('b', { text: value }));
    const lossCls = (v) => (v >= 5 ? 'bad' : v > 0 ? 'warn' : '');
    kpis.replaceChildren(
      k('RTT', w.rtt ? ms(w.rtt.mean_ns) + ' ms' : '–'),
      k('→ OWD', owdText(w, 'forward') + ' ms'),
      k('← OWD', owdText(w, 'backward') + ' ms'),
      k('→ Loss', pct(w.forward.loss_pct), lossCls(w.forward.loss_pct)),
      k('← Loss', pct(w.backward.loss_pct), lossCls(w.backward.loss_pct)),
      k('Jitter', ms(w.rtt_jitter_ns)),
      k('Reordered', String(w.reordered)));
    const dirRow = (label, d) => h('tr', {},
      h('td', { text: label }),
      h('td', { class: 'num', text: d.owd ? ms(d.owd.min_ns) : '–' }),
      h('td', { class: 'num', text: d.owd ? ms(d.owd.mean_ns) : '–' }),
      h('td', { class: 'num', text: d.owd ? ms(d.owd.max_ns) : '–' }),
      h('td', { class: 'num', text: pct(d.loss_pct) }),
      h('td', { class: 'num', text: String(d.lost) }),
      h('td', { class: 'num', text: ms(d.jitter_ns) }),
      h('td', { class: 'num', text: String(d.duplicates) }));
    dirBody.replaceChildren(dirRow('→ forward (to the reflector)', w.forward), dirRow('← backward (to us)', w.backward));
    const shown = (p.alerts || []).map((a) => a.id).join(' ');
    if (alertsBox.dataset.v !== shown) {
      alertsBox.dataset.v = shown;
      alertsBox.replaceChildren(alertList(p.alerts, 'No alert is firing for this peer.'));
    }
    if (w.rtt) {
      live.push({ t: Date.now(), rtt: w.rtt.mean_ns / 1e6,
        fwd: w.forward.owd ? w.forward.owd.mean_ns / 1e6 : null,
        bwd: w.backward.owd ? w.backward.owd.mean_ns / 1e6 : null });
      while (live.length > 900) live.shift();
    }
    draw();
  }

  /** The stored series as chart points: one per stored batch or bucket. */
  async function loadHistory() {
    try {
      const doc = await api('/api/v1/peers/' + enc + '/history?range=1h&max_points=600');
      const byName = Object.fromEntries(doc.series.map((s) => [s.series, s.points]));
      const avg = (p) => (p && p.avg_ns != null ? p.avg_ns / 1e6 : null);
      const fwd = new Map((byName.forward || []).map((p) => [p.at_ms, avg(p)]));
      const bwd = new Map((byName.backward || []).map((p) => [p.at_ms, avg(p)]));
      stored = (byName.rtt || []).filter((p) => p.avg_ns != null).map((p) => ({
        t: p.at_ms, rtt: avg(p),
        fwd: fwd.has(p.at_ms) ? fwd.get(p.at_ms) : null,
        bwd: bwd.has(p.at_ms) ? bwd.get(p.at_ms) : null }));
      draw();
    } catch (e) {
      // The live part still draws; the next refresh tries again.
    }
  }

  /** Stored points, then live ones newer than the last stored point. */
  function chartPoints() {
    const last = stored.length ? stored[stored.length - 1].t : -Infinity;
    return stored.concat(live.filter((p) => p.t > last));
  }

  function draw() {
    const width = canvas.clientWidth || 600;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr;
    canvas.height = 220 * dpr;
    const ctx = canvas.getContext('2d');
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, width, 220);
    const history = chartPoints();
    if (history.length < 2) return;
    const max = Math.max(...history.flatMap((p) => [p.rtt, p.fwd || 0, p.bwd || 0])) * 1.1 || 1;
    const t0 = history[0].t;
    const span = Math.max(1, history[history.length - 1].t - t0);
    const x = (t) => 40 + (width - 50) * (t - t0) / span;
    const y = (v) => 200 - 190 * v / max;
    ctx.fillStyle = css('--muted');
    ctx.font = '11px ' + css('--mono');
    ctx.fillText(max.toFixed(1) + ' ms', 2, 12);
    ctx.fillText('0', 2, 200);
    for (const [key, colour] of [['rtt', '--accent'], ['fwd', '--ok'], ['bwd', '--warn']]) {
      ctx.strokeStyle = css(colour);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let started = false;
      for (const p of history) {
        if (p[key] === null) continue;
        if (started) ctx.lineTo(x(p.t), y(p[key])); else ctx.moveTo(x(p.t), y(p[key]));
        started = true;
      }
      ctx.stroke();
    }
  }

  async function load() {
    try {
      show(await api('/api/v1/peers/' + enc));
    } catch (e) {
      if (e && e.status === 404) {
        clearInterval(timer);
        clearInterval(historyTimer);
        root.replaceChildren(h('nav', { class: 'crumbs' }, h('a', { href: '/', text: '← Overview' })),
          h('p', { class: 'empty-note', text: 'No peer named ' + name + '.' }));
      }
    }
  }
  load();
  loadHistory();
  const timer = setInterval(load, 1000);
  const historyTimer = setInterval(loadHistory, 5000);
  return { redraw: draw };
}

// --------------------------------------------------------------- overview

let page = null;

function overviewPage(root) {
  const rows = new Map(); // id -> {data, tr, cells, tile}
  let sparks = new Map();
  let sort = prefs.get('sort', { key: 'status', dir: 1 });
  let view = prefs.get('view', window.innerWidth < 760 ? 'tiles' : 'table');
  let renderQueued = false;
  // Bumped on resize and theme changes: every sparkline is drawn again.
  let drawEpoch = 0;

  const filter = h('input', { type: 'search', placeholder: 'Filter by name, host, address or tag', 'aria-label': 'Filter targets', id: 'filter' });
  const stateFilter = h('select', { 'aria-label': 'Show', id: 'state-filter' },
    h('option', { value: 'all', text: 'All targets' }),
    h('option', { value: 'problems', text: 'Problems' }),
    h('option', { value: 'running', text: 'Running' }),
    h('option', { value: 'paused', text: 'Paused' }),
    h('option', { value: 'failed', text: 'Failed' }));
  const count = h('span', { class: 'count' });
  const viewTable = h('button', { type: 'button', text: 'Table', onclick: () => setView('table') });
  const viewTiles = h('button', { type: 'button', text: 'Tiles', onclick: () => setView('tiles') });
  const addBtn = h('button', { type: 'button', class: 'primary', id: 'btn-add', text: 'Add target', onclick: addTarget });
  const importFile = h('input', { type: 'file', accept: '.json,application/json', id: 'import-file', hidden: true });
  const importBtn = h('button', { type: 'button', class: 'ghost', id: 'btn-import', text: 'Import targets',
    title: 'Add every target of a JSON file: a list like [{"name": "edge", "host": "198.51.100.1"}]; all or none',
    onclick: () => importFile.click() });
  const configBtn = h('button', { type: 'button', class: 'ghost', id: 'btn-config', text: 'Download config',
    title: 'The running configuration as a TOML file, secrets redacted', onclick: downloadConfig });
  importFile.addEventListener('change', () => {
    const file = importFile.files[0];
    importFile.value = '';
    if (file) importTargets(file);
  });
  const strip = h('div', { class: 'strip' });

  const columns = [
    ['name', 'Target', ''],
    ['status', 'State', ''],
    ['hops', 'Hops', 'num hide-sm'],
    ['loss', 'Loss', 'num'],
    ['latency', 'Avg ms', 'num'],
    ['p95', 'p95 ms', 'num hide-md'],
    ['jitter', 'Jitter ms', 'num hide-sm'],
    ['mos', 'MOS', 'num hide-sm'],
    ['alerts', 'Alerts', 'hide-sm'],
    ['source', 'Source', 'hide-md'],
    ['trend', 'Trend', 'hide-sm'],
    ['updated', 'Updated', 'hide-md'],
  ];
  const ths = columns.map(([key, label, cls]) =>
    h('th', { class: cls, dataset: { sort: key === 'trend' ? undefined : key }, scope: 'col', text: label,
      onclick: key === 'trend' ? undefined : () => setSort(key) }));
  const tbody = h('tbody');
  const table = h('table', { class: 'targets', id: 'targets' }, h('thead', {}, h('tr', {}, ths)), tbody);
  const tableWrap = h('div', { class: 'panel table-wrap' }, table);
  const tiles = h('div', { class: 'tiles', id: 'tiles' });
  const empty = h('p', { class: 'empty-note', hidden: true });
  const hooks = webhooksPanel(() => queueRender());
  const remotes = remoteWritePanel();
  const peers = peersPanel(() => queueRender());
  const incidents = incidentsPanel(null, '7d');

  root.replaceChildren(
    h('section', { class: 'toolbar' }, filter, stateFilter, count,
      h('div', { class: 'seg', role: 'group', 'aria-label': 'View' }, viewTable, viewTiles), configBtn, importBtn, importFile, addBtn),
    strip, tableWrap, tiles, empty, peers.el, incidents.el, hooks.el, remotes.el);

  filter.value = prefs.get('filter', '');
  stateFilter.value = prefs.get('stateFilter', 'all');
  filter.addEventListener('input', () => { prefs.set('filter', filter.value); queueRender(); });
  stateFilter.addEventListener('change', () => { prefs.set('stateFilter', stateFilter.value); queueRender(); });

  function setView(v) {
    view = v;
    prefs.set('view', v);
    queueRender();
  }

  function setSort(key) {
    sort = { key, dir: sort.key === key ? -sort.dir : 1 };
    prefs.set('sort', sort);
    queueRender();
  }

  const sortValue = {
    name: (t) => t.name.toLowerCase(),
    status: (t) => STATUS_RANK[status(t)] * 1e6 + (t.loss_pct || 0) * -1000,
    hops: (t) => t.hop_count ?? 999,
    loss: (t) => t.loss_pct ?? -1,
    latency: (t) => t.latency.avg_ns ?? Infinity,
    p95: (t) => t.latency.p95_ns ?? Infinity,
    jitter: (t) => t.jitter_ns ?? Infinity,
    mos: (t) => t.mos ?? 99,
    alerts: (t) => -(t.alerts || []).length,
    source: (t) => t.timestamp_source || '',
    updated: (t) => -(t.last_round_at_ms || 0),
  };

  function matches(t) {
    const q = filter.value.trim().toLowerCase();
    const s = stateFilter.value;
    if (s === 'problems' && !['bad', 'warn'].includes(status(t))) return false;
    if (['running', 'paused', 'failed'].includes(s) && t.state !== s) return false;
    if (!q) return true;
    return [t.id, t.name, t.host, t.address || '', t.description || '', ...(t.tags || [])]
      .some((v) => String(v).toLowerCase().includes(q));
  }

  function makeRow(t) {
    const cells = {};
    const link = h('a', { href: '/targets/' + encodeURIComponent(t.id) });
    const host = h('span', { class: 'host' });
    cells.name = h('td', { class: 'name' }, link, host);
    cells.status = h('td', {}, h('span', { class: 'dot' }), h('span'));
    for (const [key, , cls] of columns.slice(2)) {
      if (key === 'trend') {
        cells.trend = h('td', { class: cls }, h('canvas', { class: 'spark', width: 96, height: 24 }));
      } else {
        cells[key] = h('td', { class: cls });
      }
    }
    const tr = h('tr', { dataset: { id: t.id } }, columns.map(([key]) => cells[key]));
    tr.addEventListener('click', (ev) => {
      if (ev.target.closest('a')) return;
      location.href = '/targets/' + encodeURIComponent(t.id);
    });
    const tile = h('a', { class: 'tile', href: '/targets/' + encodeURIComponent(t.id) },
      h('div', { class: 't-name' }), h('div', { class: 't-host' }), h('div', { class: 't-figs' }),
      h('canvas', { class: 'spark tall', width: 200, height: 30 }));
    return { data: t, tr, cells, link, host, tile };
  }

  function fillRow(r) {
    const t = r.data;
    const st = status(t);
    setClass(r.tr, 's-' + st);
    setText(r.link, t.name);
    r.link.title = t.description || t.id;
    setText(r.host, t.address && t.address !== t.host ? t.host + ' · ' + t.address : t.host);
    setText(r.cells.status.lastChild, t.state + (t.error ? ': ' + t.error : ''));
    setText(r.cells.hops, t.final_hop_only ? 'final' : t.hop_count ?? '–');
    r.cells.hops.title = t.final_hop_only ? 'Final hop only: one probe per round to the destination' : '';
    setText(r.cells.loss, pct(t.loss_pct));
    setText(r.cells.latency, ms(t.latency.avg_ns));
    setText(r.cells.p95, ms(t.latency.p95_ns));
    setText(r.cells.jitter, ms(t.jitter_ns));
    setText(r.cells.mos, mosText(t.mos));
    const alerts = (t.alerts || []).map((a) => a.name).join(' ');
    if (r.cells.alerts.dataset.v !== alerts) {
      r.cells.alerts.dataset.v = alerts;
      r.cells.alerts.replaceChildren(...(t.alerts || []).map(alertChip));
    }
    setText(r.cells.source, t.timestamp_source || '–');
    setText(r.cells.updated, ago(t.last_round_at_ms));
    // Tile.
    setClass(r.tile, 'tile s-' + st);
    setText(r.tile.children[0], t.name);
    setText(r.tile.children[1], t.host + ' · ' + t.state);
    const figs = r.tile.children[2];
    const figText = [pct(t.loss_pct), ms(t.latency.avg_ns), mosText(t.mos)].join('|');
    if (figs.dataset.v !== figText) {
      figs.dataset.v = figText;
      figs.replaceChildren(
        h('span', {}, h('small', { text: 'loss' }), pct(t.loss_pct)),
        h('span', {}, h('small', { text: 'latency' }), t.latency.avg_ns === null ? '–' : ms(t.latency.avg_ns) + ' ms'),
        h('span', {}, h('small', { text: 'mos' }), mosText(t.mos)));
    }
  }

  function render() {
    renderQueued = false;
    const all = [...rows.values()];
    const shown = all.filter((r) => matches(r.data));
    const key = sortValue[sort.key] ? sort.key : 'status';
    shown.sort((a, b) => {
      const va = sortValue[key](a.data);
      const vb = sortValue[key](b.data);
      if (va < vb) return -sort.dir;
      if (va > vb) return sort.dir;
      return a.data.name.localeCompare(b.data.name);
    });
    for (const th of ths) {
      if (th.dataset.sort === key) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    for (const r of shown) fillRow(r);
    const forceTiles = document.body.classList.contains('wall');
    const useTiles = forceTiles || view === 'tiles';
    tableWrap.hidden = useTiles;
    tiles.hidden = !useTiles;
    viewTable.classList.toggle('on', !useTiles);
    viewTiles.classList.toggle('on', useTiles);
    const container = useTiles ? tiles : tbody;
    const wanted = shown.map((r) => (useTiles ? r.tile : r.tr));
    const current = [...container.children];
    if (current.length !== wanted.length || current.some((el, i) => el !== wanted[i])) {
      const frag = document.createDocumentFragment();
      wanted.forEach((el) => frag.append(el));
      container.replaceChildren(frag);
    }
    // Sparklines are redrawn only when their data, colour, size or theme
    // changed; all widths are read before any drawing (one layout, not one each).
    const todo = [];
    for (const r of shown) {
      const canvas = useTiles ? r.tile.lastChild : r.cells.trend.firstChild;
      const spark = sparks.get(r.data.id);
      const key = [spark ? spark.last_at_ms : 0, status(r.data), useTiles, forceTiles, paletteVersion, drawEpoch].join('|');
      if (r.sparkKey !== key) todo.push({ r, canvas, spark, key });
    }
    const widths = todo.map((t) => t.canvas.clientWidth);
    todo.forEach((t, i) => {
      t.r.sparkKey = t.key;
      drawSparkline(t.canvas, t.spark, status(t.r.data), widths[i]);
    });
    const counts = { ok: 0, warn: 0, bad: 0, paused: 0 };
    all.forEach((r) => counts[status(r.data)]++);
    strip.replaceChildren(
      h('span', { class: 'stat' }, h('b', { text: String(all.length) }), 'targets'),
      h('span', { class: 'stat ok' }, h('b', { text: String(counts.ok) }), 'healthy'),
      h('span', { class: 'stat warn' }, h('b', { text: String(counts.warn) }), 'degraded'),
      h('span', { class: 'stat bad' }, h('b', { text: String(counts.bad) }), 'failing'),
      h('span', { class: 'stat paused' }, h('b', { text: String(counts.paused) }), 'paused'),
      // replaceChildren prints a null argument as the text "null".
      ...(peers.alerts()
        ? [h('a', { class: 'stat bad', id: 'peer-alerts-stat', href: '#peers', title: 'Alerts firing on peer links' },
          h('b', { text: String(peers.alerts()) }), peers.alerts() === 1 ? 'peer alert' : 'peer alerts')]
        : []),
      ...(hooks.failing()
        ? [h('a', { class: 'stat bad', href: '#webhooks', title: 'Alert deliveries are failing' },
          h('b', { text: String(hooks.failing()) }), hooks.failing() === 1 ? 'webhook failing' : 'webhooks failing')]
        : []));
    setText(count, shown.length === all.length ? '' : shown.length + ' of ' + all.length + ' shown');
    empty.hidden = all.length > 0 && shown.length > 0;
    setText(empty, all.length === 0
      ? 'No targets yet. Add one, or list them as [[target]] tables in the config file.'
      : 'No target matches the filter.');
    addBtn.disabled = !(service && service.writes_enabled);
    addBtn.title = addBtn.disabled ? 'Changes are disabled: the server has no [web] write_token' : 'Add a target';
  }

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(render);
  }

  function upsert(list) {
    for (const t of list) {
      const r = rows.get(t.id);
      if (r) r.data = t;
      else rows.set(t.id, makeRow(t));
    }
    queueRender();
  }

  async function loadSparks() {
    try {
      const doc = await api('/api/v1/sparklines');
      sparks = new Map(doc.sparklines.map((s) => [s.target, s]));
      queueRender();
    } catch (e) { /* the next refresh tries again */ }
  }

  async function load() {
    const doc = await api('/api/v1/targets');
    service = Object.assign(service || {}, doc.service);
    const ids = new Set(doc.targets.map((t) => t.id));
    for (const id of [...rows.keys()]) if (!ids.has(id)) rows.delete(id);
    upsert(doc.targets);
  }

  const live = stream('/api/v1/live', {
    targets: (list) => upsert(list),
    removed: (ids) => { ids.forEach((id) => rows.delete(id)); queueRender(); },
    event: (e) => toast(e.target + ': ' + e.summary),
  });
  const timers = [
    setInterval(loadSparks, 15000),
    setInterval(queueRender, 5000), // "updated ... ago"
    setInterval(hooks.load, 10000),
    setInterval(remotes.load, 10000),
    setInterval(incidents.load, 30000),
  ];
  hooks.load();
  remotes.load();
  incidents.load();
  load().then(loadSparks).catch((e) => {
    empty.hidden = false;
    empty.textContent = 'Could not load the targets: ' + e.message;
  });

  async function addTarget() {
    const dlg = $('#dlg-add');
    const form = $('#form-add');
    form.reset();
    $('.form-error', form).textContent = '';
    dlg.showModal();
    const submit = async (ev) => {
      if (ev.submitter && ev.submitter.value !== 'add') return;
      ev.preventDefault();
      const f = form.elements;
      const body = { name: f.name.value.trim(), host: f.host.value.trim() };
      if (f.label.value.trim()) body.label = f.label.value.trim();
      if (f.protocol.value) body.protocol = f.protocol.value;
      if (f.port.value) body.port = Number(f.port.value);
      if (f.interval.value.trim()) body.interval = f.interval.value.trim();
      if (f.packet_size.value) body.packet_size = Number(f.packet_size.value);
      const tags = f.tags.value.split(',').map((s) => s.trim()).filter(Boolean);
      if (tags.length) body.tags = tags;
      if (f.final_hop_only.checked) body.final_hop_only = true;
      if (f.paused.checked) body.paused = true;
      if (!tokens.write()) {
        const ok = await openTokens('Adding a target needs the write token.');
        if (!ok) return;
      }
      try {
        await api('/api/v1/targets', { method: 'POST', json: body, write: true });
        form.removeEventListener('submit', submit);
        dlg.close('added');
        toast('Added ' + body.name + '; saved in the config file.');
        load();
      } catch (e) {
        $('.form-error', form).textContent = e.message;
      }
    };
    form.addEventListener('submit', submit);
    dlg.addEventListener('close', () => form.removeEventListener('submit', submit), { once: true });
  }

  async function downloadConfig() {
    try {
      const res = await api('/api/v1/config?format=toml', { raw: true });
      const blob = await res.blob();
      const a = h('a', { href: URL.createObjectURL(blob), download: 'hopwatch-config.toml' });
      document.body.append(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    } catch (e) {
      toast('Could not download the configuration: ' + e.message, 'bad');
    }
  }

  /** Shows why an import added nothing: one line per bad entry. */
  function importFailed(text, errors, list) {
    const dlg = $('#dlg-import');
    $('[data-slot=text]', dlg).textContent = text;
    $('[data-slot=errors]', dlg).replaceChildren(...errors.map((e) => {
      const entry = list && list[e.index];
      const name = entry && typeof entry === 'object' && typeof entry.name === 'string' ? ' ("' + entry.name + '")' : '';
      return h('li', { text: 'Entry ' + e.index + name + (e.field ? ', ' + e.field : '') + ': ' + e.reason });
    }));
    dlg.showModal();
  }

  async function importTargets(file) {
    let list;
    try {
      list = JSON.parse(await file.text());
    } catch (e) {
      importFailed(file.name + ' is not JSON: ' + e.message, [], null);
      return;
    }
    if (!Array.isArray(list)) {
      importFailed(file.name + ' must hold a JSON list of targets, like [{"name": "edge", "host": "198.51.100.1"}].', [], null);
      return;
    }
    if (service && !service.writes_enabled) {
      toast('Changes are disabled on this server: it has no [web] write_token.', 'bad');
      return;
    }
    if (!tokens.write()) {
      const ok = await openTokens('Importing targets needs the write token.');
      if (!ok || !tokens.write()) return;
    }
    try {
      const doc = await api('/api/v1/targets', { method: 'POST', json: list, write: true });
      toast('Imported ' + doc.added.length + ' target' + (doc.added.length === 1 ? '' : 's') + ' from ' + file.name + '; saved in the config file.');
      load();
    } catch (e) {
      if (e.status === 401) toast('The write token was refused.', 'bad');
      else {
        const errors = e.errors || [];
        importFailed('Nothing was imported from ' + file.name + '. ' + (errors.length ? 'Fix these entries and try again:' : e.message), errors, list);
      }
    }
  }

  return {
    refresh() { load().then(loadSparks).catch(() => {}); hooks.load(); remotes.load(); incidents.load(); queueRender(); },
    redraw() { drawEpoch++; queueRender(); },
    close() { live.close(); timers.forEach(clearInterval); },
  };
}

// ------------------------------------------------------------ target page

// The API's presets (GET /api/v1/service `ranges`); 90d and 1y come from hour rollups.
const RANGES = ['15m', '1h', '6h', '24h', '7d', '30d', '90d', '1y'];
const RANGE_MS = { '15m': 9e5, '1h': 36e5, '6h': 216e5, '24h': 864e5, '7d': 6048e5, '30d': 2592e6, '90d': 7776e6, '1y': 31536e6 };

function toLocalInput(tms) {
  const d = new Date(tms);
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + 'T' + pad2(d.getHours()) + ':' + pad2(d.getMinutes());
}

/** The ECMP branch whose history the page graphs (`?branch=N`), or null: the target's own flow. */
function branchFromUrl() {
  const n = Number(new URLSearchParams(location.search).get('branch'));
  return Number.isInteger(n) && n >= 1 && n <= 255 ? n : null;
}

/** A custom range from the page's URL (`?from=&to=`, Unix ms), or null. */
function rangeFromUrl() {
  const q = new URLSearchParams(location.search);
  const from = Number(q.get('from'));
  const to = Number(q.get('to'));
  return q.has('from') && q.has('to') && Number.isFinite(from) && Number.isFinite(to) && from < to ? { from, to } : null;
}

function targetPage(root, id) {
  const enc = encodeURIComponent(id);
  let detail = null;
  let selected = 'destination';
  let range = prefs.get('range', '1h');
  let custom = rangeFromUrl(); // {from, to}: a zoom or a custom range, kept in the URL
  let branch = branchFromUrl(); // the ECMP branch the graphs show, kept in the URL; null: the target's own flow
  let hopView = 'window';
  let graphs = { latency: null, heat: null, series: null, map: null, range: null, branch: null };
  let refreshTimer = 0;

  const title = h('h1');
  const stateBadge = h('span', { class: 'state-badge' });
  const sub = h('div', { class: 'sub' });
  const pauseBtn = h('button', { type: 'button', id: 'btn-pause', onclick: togglePause });
  const removeBtn = h('button', { type: 'button', class: 'ghost', id: 'btn-remove', text: 'Remove', onclick: remove });
  const kpis = h('div', { class: 'kpis' });
  const banners = h('div');
  const hopBody = h('tbody');
  const hopHead = h('thead', {}, h('tr', {},
    h('th', { class: 'num', text: 'Hop' }), h('th', { text: 'Host' }), h('th', { class: 'num', text: 'Loss' }),
    h('th', { class: 'num', text: 'Sent' }), h('th', { class: 'num', text: 'Last ms' }), h('th', { class: 'num', text: 'Avg' }),
    h('th', { class: 'num hide-sm', text: 'Best' }), h('th', { class: 'num hide-sm', text: 'Worst' }),
    h('th', { class: 'num hide-sm', text: 'StDev' }), h('th', { class: 'num hide-sm', text: 'Jitter' }),
    h('th', { class: 'num', text: 'p95' })));
  const hopTable = h('table', { class: 'hops', id: 'hops' }, hopHead, hopBody);
  const winBtn = h('button', { type: 'button', text: 'Window', onclick: () => setHopView('window') });
  const startBtn = h('button', { type: 'button', text: 'Since start', onclick: () => setHopView('since_start') });
  const windowNote = h('span', { class: 'muted' });
  const branchNote = h('span', { class: 'muted' });
  const branchBody = h('tbody');
  const branchPanel = h('section', { class: 'panel', id: 'branches', hidden: true },
    h('div', { class: 'panel-head' }, h('h2', { text: 'Branches (ECMP)' }), branchNote),
    h('div', { class: 'table-wrap' }, h('table', { class: 'hops' },
      h('thead', {}, h('tr', {},
        h('th', { class: 'num', text: 'Branch' }), h('th', { text: 'Path (split → join)' }),
        h('th', { class: 'num', text: 'Loss' }), h('th', { class: 'num', text: 'Sent' }),
        h('th', { class: 'num', text: 'Avg' }), h('th', { class: 'num', text: 'Jitter' }),
        h('th', { text: 'Health' }), h('th', { text: 'History' }))),
      branchBody)),
    h('div', { class: 'legend' },
      h('span', { text: 'Each branch is probed over its own flow (source port or ICMP id) that keeps to it. Loss, latency and jitter are end to end over the window; the path shows the hops between where the branches split and join. Each branch\'s rounds are stored like the target\'s: "Graph" shows its history below.' })));

  const rangeButtons = RANGES.map((r) => h('button', { type: 'button', text: r, dataset: { range: r }, onclick: () => setRange(r) }));
  const customBtn = h('button', { type: 'button', text: 'Custom', onclick: () => { customBox.hidden = !customBox.hidden; } });
  const fromInput = h('input', { type: 'datetime-local', 'aria-label': 'From' });
  const toInput = h('input', { type: 'datetime-local', 'aria-label': 'To' });
  const customBox = h('span', { class: 'custom', hidden: true }, fromInput, '→', toInput,
    h('button', { type: 'button', text: 'Apply', onclick: applyCustom }));
  const exportCsv = h('button', { type: 'button', class: 'ghost', id: 'export-csv', text: 'Export CSV', onclick: () => doExport('csv') });
  const exportJson = h('button', { type: 'button', class: 'ghost', id: 'export-json', text: 'Export JSON', onclick: () => doExport('json') });
  const exportAsn = h('input', { type: 'checkbox', id: 'export-asn' });
  const exportAsnLabel = h('label', { class: 'asn-opt', title: 'Add each hop\'s AS number and organisation to the export' }, exportAsn, 'AS columns');
  const graphTitle = h('h2');
  const latencyCanvas = h('canvas', { class: 'chart', id: 'latency', 'aria-label': 'Latency graph' });
  const heatCanvas = h('canvas', { class: 'chart', id: 'heatmap', 'aria-label': 'All hops heatmap' });
  const graphNote = h('div', { class: 'chart-note' });
  const heatNote = h('div', { class: 'chart-note' });
  const eventsList = h('ul', { class: 'events', id: 'events' });
  const alertsBox = h('div', { id: 'target-alerts' });
  const incidents = incidentsPanel(id, '30d');
  const map = HopMap.create({ css });

  const legend = (items) => h('div', { class: 'legend' }, items.map(([cssVar, label, alpha]) =>
    h('span', {}, h('i', { dataset: { c: cssVar, a: alpha || '' } }), label)));

  root.replaceChildren(
    h('nav', { class: 'crumbs' }, h('a', { href: '/', text: '← All targets' })),
    h('section', { class: 'panel' },
      h('div', { class: 'target-head' },
        h('div', { class: 'title' }, h('div', { class: 'title-row' }, title, stateBadge), sub),
        h('div', { class: 'actions' }, pauseBtn, removeBtn)),
      kpis, banners),
    h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', { text: 'Hops' }), windowNote, h('span', { class: 'spacer' }),
        h('div', { class: 'seg' }, winBtn, startBtn)),
      h('div', { class: 'table-wrap' }, hopTable),
      h('div', { class: 'legend' },
        h('span', { text: 'Rows: amber = some loss or a slow hop, red = heavy loss or the start of a finding, grey "rate-limited" = the router limits its ICMP replies (not path loss). Click a row to graph that hop.' }))),
    branchPanel,
    h('section', { class: 'panel' },
      h('div', { class: 'range-bar' }, h('div', { class: 'seg', role: 'group', 'aria-label': 'Time range' }, rangeButtons, customBtn),
        customBox, h('span', { class: 'spacer' }), exportAsnLabel, exportCsv, exportJson),
      graphTitle,
      h('div', { class: 'chart-wrap' }, latencyCanvas),
      legend([['--band', 'min – max'], ['--band-2', 'min – p95'], ['--loss-0', 'median, no loss'], ['--loss-1', '< 5% lost'],
        ['--loss-2', '< 20% lost'], ['--loss-3', '≥ 20% lost'], ['--bad', 'lost probes']]),
      graphNote,
      h('h2', { text: 'All hops' }),
      h('div', { class: 'chart-wrap' }, heatCanvas),
      legend([['--heat-0', 'at the hop\'s baseline'], ['--heat-1', '+2 ms'], ['--heat-2', '+15 ms'], ['--heat-3', '+60 ms'],
        ['--bad', 'loss'], ['--paused', 'unanswered at a rate-limited hop'], ['--empty', 'no data']]),
      heatNote),
    map.el,
    h('section', { class: 'panel' }, h('h2', { text: 'Alerts' }), alertsBox),
    incidents.el,
    h('section', { class: 'panel' }, h('h2', { text: 'Route history and events' }), eventsList));

  function paintLegends() {
    for (const i of root.querySelectorAll('.legend i[data-c]')) i.style.background = css(i.dataset.c);
  }

  function setHopView(v) {
    hopView = v;
    renderHops();
  }

  function span() {
    if (custom) return custom;
    const now = Date.now();
    return { from: now - RANGE_MS[range], to: now };
  }

  function rangeQuery() {
    return custom ? 'from=' + Math.round(custom.from) + '&to=' + Math.round(custom.to) : 'range=' + range;
  }

  /** The history endpoints' `branch` parameter for the graphed flow ('' for the target's own). */
  function branchQuery() {
    return branch === null ? '' : '&branch=' + branch;
  }

  /** Graphs (and exports) the history of ECMP branch `n`, or of the target's own flow for null. */
  function setBranch(n) {
    branch = n;
    const q = new URLSearchParams(location.search);
    if (branch === null) q.delete('branch'); else q.set('branch', String(branch));
    const qs = q.toString();
    history.replaceState(history.state, '', location.pathname + (qs ? '?' + qs : '') + location.hash);
    renderBranches();
    loadGraphs();
  }

  function setRange(r) {
    range = r;
    custom = null;
    prefs.set('range', r);
    customBox.hidden = true;
    rangeToUrl();
    loadGraphs();
    loadEvents();
  }

  function applyCustom() {
    const from = new Date(fromInput.value).getTime();
    const to = new Date(toInput.value).getTime();
    if (!(from < to)) { toast('Choose a start before the end.', 'bad'); return; }
    custom = { from, to };
    rangeToUrl();
    loadGraphs();
    loadEvents();
  }

  /** A zoom (drag on a graph) becomes the custom range. */
  function zoomTo(from, to) {
    custom = { from, to };
    fromInput.value = toLocalInput(from);
    toInput.value = toLocalInput(to);
    rangeToUrl();
    loadGraphs();
    loadEvents();
  }

  /** Double-click: back to the preset range the page had before zooming. */
  function resetZoom() {
    if (!custom) return;
    custom = null;
    fromInput.value = toInput.value = '';
    rangeToUrl();
    loadGraphs();
    loadEvents();
  }

  /** The custom range into the page's URL (from/to, Unix ms), so a reload or a shared link shows it. */
  function rangeToUrl() {
    const q = new URLSearchParams(location.search);
    if (custom) {
      q.set('from', String(Math.round(custom.from)));
      q.set('to', String(Math.round(custom.to)));
    } else {
      q.delete('from');
      q.delete('to');
    }
    const qs = q.toString();
    history.replaceState(history.state, '', location.pathname + (qs ? '?' + qs : '') + location.hash);
  }

  function renderHead() {
    const t = detail;
    const st = status(t);
    document.title = t.name + ' · hopwatch';
    setText(title, t.name);
    setText(stateBadge, t.state);
    setClass(stateBadge, 'state-badge s-' + st);
    const proto = t.protocol.toUpperCase() + (t.port ? ' port ' + t.port : '') +
      (t.final_hop_only ? (t.protocol === 'tcp' ? ', final hop only: handshake time' : ', final hop only') : '');
    setText(sub, [t.host + (t.address && t.address !== t.host ? ' → ' + t.address : ''), proto,
      t.packet_size + ' B every ' + interval(t.interval_ms), 'timestamps: ' + (t.timestamp_source || service.timestamp_source),
      'window ' + t.window_probes + ' probes', t.error ? 'error: ' + t.error : null].filter(Boolean).join(' · '));
    setText(pauseBtn, t.paused ? 'Resume' : 'Pause');
    pauseBtn.classList.toggle('primary', t.paused);
    for (const b of [pauseBtn, removeBtn]) {
      b.disabled = !(service && service.writes_enabled);
      b.title = b.disabled ? 'Changes are disabled: the server has no [web] write_token' : '';
    }
    const d = t.destination.window;
    const k = (label, value, cls) => h('div', { class: 'kpi ' + (cls || '') }, h('small', { text: label }), h('b', { text: value }));
    kpis.replaceChildren(
      k('Loss', pct(t.loss_pct), t.loss_pct >= 5 ? 'bad' : t.loss_pct > 0 ? 'warn' : ''),
      k('Latency', d.avg_ns === null ? '–' : ms(d.avg_ns) + ' ms'),
      k('p95', ms(d.p95_ns)),
      k('Jitter', ms(d.jitter_ns)),
      k('MOS', mosText(t.mos), t.mos !== null && t.mos < 3.6 ? 'bad' : t.mos !== null && t.mos < 4 ? 'warn' : ''),
      k('Hops', t.final_hop_only ? 'final only' : String(t.hop_count ?? '–')),
      k('Rounds', String(t.rounds)),
      k('Last round', ago(t.last_round_at_ms)));
    const items = [];
    for (const f of t.findings) items.push(h('div', { class: 'banner finding' }, h('b', { text: f.kind === 'loss' ? 'Loss: ' : 'Latency: ' }), f.summary, f.confidence < 0.75 ? h('span', { class: 'muted', text: ' (not yet sure)' }) : null));
    for (const f of t.branch_findings || []) items.push(h('div', { class: 'banner finding branch-finding', dataset: { branch: String(f.branch) } }, h('b', { text: f.kind === 'latency' ? 'Branch latency: ' : 'Branch loss: ' }), f.summary));
    if (t.pending_change_rounds) items.push(h('div', { class: 'banner' }, 'A route change is being confirmed (' + t.pending_change_rounds + ' diverging rounds so far).'));
    banners.replaceChildren(...items);
    alertsBox.replaceChildren(alertList(t.alerts, 'No alert is firing for this target.'));
  }

  function hopClass(hop, prevAvg) {
    const s = hop[hopView];
    if (hop.rate_limited) return 'rl';
    const finding = detail.findings.find((f) => f.ttl === hop.ttl);
    if (finding) return 's-bad';
    if (s.loss_pct >= 10) return 's-bad';
    if (s.loss_pct > 0) return 's-warn';
    if (s.avg_ns !== null && (s.avg_ns >= 250e6)) return 's-bad';
    if (s.avg_ns !== null && (s.avg_ns >= 100e6 || (prevAvg && s.avg_ns - prevAvg > 30e6))) return 's-warn';
    return '';
  }

  function renderHops() {
    winBtn.classList.toggle('on', hopView === 'window');
    startBtn.classList.toggle('on', hopView === 'since_start');
    if (!detail) return;
    setText(windowNote, hopView === 'window' ? 'last ' + detail.window_probes + ' probes per hop' : 'since the daemon started');
    let prevAvg = null;
    const rows = detail.hops.map((hop) => {
      const s = hop[hopView];
      const cls = hopClass(hop, prevAvg);
      if (s.avg_ns !== null) prevAvg = s.avg_ns;
      const key = hop.is_destination ? 'destination' : String(hop.ttl);
      const hostCell = h('td', { class: 'host' });
      if (!hop.responders.length) hostCell.append(h('span', { class: 'muted', text: '???' }));
      for (const r of hop.responders) {
        hostCell.append(h('div', { class: 'resp' },
          r.hostname ? h('span', { class: 'rname', text: r.hostname + ' ' }) : null,
          r.hostname ? h('span', { class: 'muted', text: '(' + r.address + ')' }) : r.address,
          asLabel(r.asn, r.as_org) ? h('span', { class: 'asn', text: asLabel(r.asn, r.as_org), title: 'Autonomous system (from the ASN database)' }) : null,
          hop.responders.length > 1 && r.share_pct !== null ? h('span', { class: 'share', text: r.share_pct.toFixed(0) + '%' }) : null));
      }
      if (hop.other_responders) hostCell.append(h('div', { class: 'muted', text: '+ others (' + hop.other_responders + ' answers)' }));
      if (hop.is_destination) hostCell.firstChild.append(h('span', { class: 'tag dest', text: 'destination' }));
      if (hop.rate_limited) hostCell.firstChild.append(h('span', { class: 'tag', text: 'rate-limited', title: 'This router answers fewer probes than the hops after it: it limits its ICMP replies. Its loss is not path loss.' }));
      if (hop.slow_responder) hostCell.firstChild.append(h('span', { class: 'tag', text: 'slow responder', title: 'This router answers later than the hops after it: it generates its ICMP replies slowly. Its latency is not path latency.' }));
      // Path facts: rewrites first seen in this hop's quotes, and the MPLS
      // label stacks its routers report (older daemons send neither).
      for (const m of hop.middleboxes || []) {
        hostCell.append(h('div', { class: 'fact middlebox', dataset: { field: m.field } },
          h('span', { class: 'tag warn', text: 'middlebox' }),
          h('span', { text: m.summary, title: 'The probe header this router quotes in its ICMP error shows the ' + m.field.replace('_', ' ') + ' rewritten from ' + m.from + ' to ' + m.to + ': a middlebox between the previous hop and this one changed it.' })));
      }
      for (const l of hop.mpls || []) {
        hostCell.append(h('div', { class: 'fact mpls', title: 'RFC 4950 MPLS label stack reported by ' + l.responder + ', outermost first' },
          h('span', { class: 'tag', text: 'MPLS' }),
          hop.responders.length > 1 ? h('span', { class: 'muted', text: l.responder + ' ' }) : null,
          h('span', { class: 'labels', text: l.labels.map((x) => '[' + 'Lbl ' + x.label + ' TC ' + x.traffic_class + ' S ' + (x.bottom_of_stack ? 1 : 0) + ' TTL ' + x.ttl + ']').join(' ') })));
      }
      const tr = h('tr', { class: [cls, selected === key || (selected === String(hop.ttl)) ? 'sel' : ''].join(' ').trim(), dataset: { hop: key } },
        // A final-hop-only target's one row is the destination, not TTL 1.
        h('td', { class: 'num', text: detail.final_hop_only ? 'dst' : String(hop.ttl) }), hostCell,
        h('td', { class: 'num loss', text: pct(s.loss_pct) }), h('td', { class: 'num', text: String(s.sent) }),
        h('td', { class: 'num', text: ms(s.last_ns) }), h('td', { class: 'num', text: ms(s.avg_ns) }),
        h('td', { class: 'num hide-sm', text: ms(s.best_ns) }), h('td', { class: 'num hide-sm', text: ms(s.worst_ns) }),
        h('td', { class: 'num hide-sm', text: ms(s.stddev_ns) }), h('td', { class: 'num hide-sm', text: ms(s.jitter_ns) }),
        h('td', { class: 'num', text: ms(s.p95_ns) }));
      tr.addEventListener('click', () => { selected = key; renderHops(); loadGraphs(); });
      return tr;
    });
    if (!rows.length) {
      rows.push(h('tr', {}, h('td', { colspan: 11, class: 'muted', text: detail.paused ? 'Paused: not probed.' : 'Waiting for the first round…' })));
    }
    hopBody.replaceChildren(...rows);
  }

  function renderRangeBar() {
    for (const b of rangeButtons) b.classList.toggle('on', !custom && b.dataset.range === range);
    customBtn.classList.toggle('on', !!custom);
    const s = span();
    if (!fromInput.value) fromInput.value = toLocalInput(s.from);
    if (!toInput.value) toInput.value = toLocalInput(s.to);
  }

  function hopLabel() {
    if (selected === 'destination') return 'the destination' + (detail && detail.destination.address ? ' (' + detail.destination.address + ')' : '');
    const hop = detail && detail.hops.find((x) => String(x.ttl) === selected);
    const r = hop && hop.responders[0];
    return 'hop ' + selected + (r ? ' (' + (r.hostname || r.address) + ')' : '');
  }

  async function loadGraphs() {
    renderRangeBar();
    clearTimeout(refreshTimer);
    const width = latencyCanvas.clientWidth || 800;
    const maxPoints = Math.max(30, Math.min(600, Math.floor((width - PLOT.left - PLOT.right) / 3)));
    const columns = Math.max(20, Math.min(400, Math.floor((width - PLOT.left - PLOT.right) / 4)));
    setText(graphTitle, 'Latency of ' + hopLabel() + (branch === null ? '' : ' over branch ' + branch));
    const shown = branch;
    try {
      const [series, heat] = await Promise.all([
        api('/api/v1/targets/' + enc + '/series?hop=' + selected + '&' + rangeQuery() + branchQuery() + '&max_points=' + maxPoints),
        api('/api/v1/targets/' + enc + '/heatmap?' + rangeQuery() + branchQuery() + '&columns=' + columns),
      ]);
      // A click on another branch meanwhile has its own load under way.
      if (shown !== branch) return;
      graphs.series = series.series[0];
      graphs.map = heat.heatmap;
      graphs.range = custom ? 'custom' : range;
      graphs.branch = shown;
      drawGraphs();
    } catch (e) {
      setText(graphNote, 'Could not load the history: ' + e.message);
    }
    // Hour rollups change once an hour: a long range need not be re-read every minute.
    if (!custom) refreshTimer = setTimeout(loadGraphs, RANGE_MS[range] <= 36e5 ? 10000 : RANGE_MS[range] <= 2592e6 ? 60000 : 300000);
  }

  function drawGraphs() {
    const s = graphs.series;
    const from = s ? s.from_ms : span().from;
    const to = s ? s.to_ms : span().to;
    graphs.latency = drawLatency(latencyCanvas, s, from, to);
    const limitedHops = new Set(detail ? detail.hops.filter((x) => x.rate_limited).map((x) => x.ttl) : []);
    graphs.heat = drawHeatmap(heatCanvas, graphs.map, limitedHops);
    // What was drawn, for people reading the DOM and for the browser test.
    // The range the drawn data was loaded for: a click on a preset redraws
    // only when its data arrives, so the counts below may still be the old range's.
    latencyCanvas.dataset.range = heatCanvas.dataset.range = graphs.range || '';
    // Whose history it is: a branch's index, or '' for the target's own flow.
    latencyCanvas.dataset.branch = heatCanvas.dataset.branch = graphs.branch == null ? '' : String(graphs.branch);
    latencyCanvas.dataset.from = String(Math.round(graphs.latency.from));
    latencyCanvas.dataset.to = String(Math.round(graphs.latency.to));
    heatCanvas.dataset.from = graphs.heat ? String(graphs.heat.from) : '';
    heatCanvas.dataset.to = graphs.heat ? String(graphs.heat.to) : '';
    // What the export buttons will ask for: the drawn range.
    exportCsv.dataset.query = exportJson.dataset.query = rangeQuery();
    latencyCanvas.dataset.points = String(graphs.latency.points.filter((p) => p.p50_ns !== null).length);
    latencyCanvas.dataset.ticks = graphs.latency.axis.join('|');
    heatCanvas.dataset.ticks = graphs.heat ? graphs.heat.axis.join('|') : '';
    heatCanvas.dataset.cells = String(graphs.map ? graphs.map.rows.reduce((n, r) => n + r.p50_ns.filter((v) => v !== null).length, 0) : 0);
    paintLegends();
    if (s) {
      const t = s.total;
      const res = s.resolution === 'raw' ? 'one point per round' : s.resolution + ' rollups';
      setText(graphNote, [t.sent + ' probes', t.sent ? pct(100 * t.lost / t.sent) + ' lost' : null,
        t.p50_ns !== null ? 'median ' + ms(t.p50_ns) + ' ms' : null, t.p95_ns !== null ? 'p95 ' + ms(t.p95_ns) + ' ms' : null,
        'from ' + res + (s.bucket_ms ? ', ' + duration(s.bucket_ms) + ' per column' : '')].filter(Boolean).join(' · '));
    }
    if (graphs.map) setText(heatNote, graphs.map.rows.length + ' rows · ' + duration(graphs.map.bucket_ms) + ' per column · from ' + (graphs.map.resolution === 'raw' ? 'raw rounds' : graphs.map.resolution + ' rollups'));
  }

  latencyCanvas.addEventListener('mousemove', (ev) => {
    const g = graphs.latency;
    if (!g || !g.points.length) return hideTip();
    const rect = latencyCanvas.getBoundingClientRect();
    const x = ev.clientX - rect.left;
    let best = null;
    for (let i = 0; i < g.points.length; i++) {
      const p = g.points[i];
      const px = g.X(p.at_ms);
      if (x >= px - 2 && x <= px + g.colW(p, i) + 2) { best = p; break; }
    }
    if (!best) return hideTip();
    showTip(ev, [fmtFull(best.at_ms), best.sent + ' sent, ' + best.lost + ' lost',
      'min ' + ms(best.min_ns) + '  p50 ' + ms(best.p50_ns), 'p95 ' + ms(best.p95_ns) + '  max ' + ms(best.max_ns) + ' ms'].join('\n'));
  });
  latencyCanvas.addEventListener('mouseleave', hideTip);
  heatCanvas.addEventListener('mousemove', (ev) => {
    const g = graphs.heat;
    const map = graphs.map;
    if (!g || !map) return hideTip();
    const rect = heatCanvas.getBoundingClientRect();
    const ri = Math.floor((ev.clientY - rect.top - g.yTop) / g.rowH);
    const ci = Math.floor((ev.clientX - rect.left - g.x0) / g.colW);
    const row = g.rows[ri];
    if (!row || ci < 0 || ci >= map.columns) return hideTip();
    const v = row.p50_ns[ci];
    const loss = row.loss[ci];
    showTip(ev, [(row.hop === 'destination' ? 'destination' : 'hop ' + row.hop) + (row.responder ? ' ' + row.responder : ''),
      fmtFull(map.from_ms + ci * map.bucket_ms),
      'median ' + ms(v) + ' ms' + (v !== null && g.baselines[ri] !== null ? ' (+' + ms(v - g.baselines[ri]) + ')' : ''),
      'loss ' + (loss === null ? '–' : pct(loss * 100))].join('\n'));
  });
  heatCanvas.addEventListener('mouseleave', hideTip);
  zoomable(latencyCanvas, () => graphs.latency);
  zoomable(heatCanvas, () => graphs.heat);

  /**
   * Drag across a graph to zoom into that time range: it becomes the custom
   * range (URL, export buttons, events and both graphs follow); a
   * double-click goes back. `drawn()` is what the canvas shows: its plot's
   * x0..x1 and the time from..to they span.
   */
  function zoomable(canvas, drawn) {
    const sel = h('div', { class: 'zoom-sel', hidden: true });
    canvas.parentElement.append(sel);
    let drag = null;
    const xOf = (ev) => ev.clientX - canvas.getBoundingClientRect().left;
    const clamp = (d, x) => Math.max(d.x0, Math.min(d.x1, x));
    canvas.addEventListener('pointerdown', (ev) => {
      const d = drawn();
      const x = xOf(ev);
      if (ev.button !== 0 || !d || !(d.to > d.from) || x < d.x0 || x > d.x1) return;
      drag = { d, x };
      canvas.setPointerCapture(ev.pointerId);
      ev.preventDefault();
    });
    canvas.addEventListener('pointermove', (ev) => {
      if (!drag) return;
      hideTip();
      const x = clamp(drag.d, xOf(ev));
      Object.assign(sel.style, {
        left: canvas.offsetLeft + Math.min(drag.x, x) + 'px', width: Math.abs(x - drag.x) + 'px',
        top: canvas.offsetTop + 'px', height: canvas.offsetHeight + 'px',
      });
      sel.hidden = false;
    });
    const end = (ev) => {
      if (!drag) return;
      const { d } = drag;
      const a = Math.min(drag.x, clamp(d, xOf(ev)));
      const b = Math.max(drag.x, clamp(d, xOf(ev)));
      drag = null;
      sel.hidden = true;
      if (ev.type !== 'pointerup' || b - a < 5) return; // a click, not a drag
      const at = (px) => Math.round(d.from + ((px - d.x0) / (d.x1 - d.x0)) * (d.to - d.from));
      zoomTo(at(a), at(b));
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
    canvas.addEventListener('dblclick', resetZoom);
    canvas.title = 'Drag to zoom into a time range; double-click to go back';
  }

  function routeTable(detailObj, asInfo) {
    const before = detailObj.before || [];
    const after = detailObj.after || [];
    const asOf = new Map((asInfo || []).map((x) => [x.address, asLabel(x.asn, x.as_org)]));
    const n = Math.max(before.length, after.length);
    const rows = [];
    const cell = (addr, list, i) => {
      if (addr === null) return h('td', { class: 'mono', text: i < list.length ? '*' : '' });
      const label = asOf.get(String(addr));
      return h('td', { class: 'mono' }, String(addr), label ? h('span', { class: 'asn', text: label }) : null);
    };
    for (let i = 0; i < n; i++) {
      const b = before[i] ?? null;
      const a = after[i] ?? null;
      rows.push(h('tr', { class: b === a ? '' : 'changed' }, h('td', { class: 'num', text: String(i + 1) }),
        cell(b, before, i), cell(a, after, i)));
    }
    return h('table', { class: 'route' }, h('thead', {}, h('tr', {}, h('th', { text: 'Hop' }), h('th', { text: 'Before' }), h('th', { text: 'After' }))), h('tbody', {}, rows));
  }

  async function loadEvents() {
    try {
      const doc = await api('/api/v1/targets/' + enc + '/events?' + rangeQuery());
      const items = doc.events.slice().reverse().map((e) => h('li', {},
        h('span', { class: 'when', text: fmtFull(e.at_ms) }), h('span', { class: 'kind', text: e.kind.replace(/_/g, ' ') }), e.summary,
        (e.kind === 'route_changed' || e.kind === 'return_path_changed') && e.detail && e.detail.before ? routeTable(e.detail, e.as_info) : null));
      eventsList.replaceChildren(...(items.length ? items : [h('li', { class: 'muted', text: 'No route changes or other events in this range.' })]));
    } catch (e) {
      eventsList.replaceChildren(h('li', { class: 'muted', text: 'Could not load the events: ' + e.message }));
    }
  }

  async function togglePause() {
    if (!detail) return;
    const action = detail.paused ? 'resume' : 'pause';
    pauseBtn.disabled = true;
    const done = await write('POST', '/api/v1/targets/' + enc + '/' + action);
    pauseBtn.disabled = false;
    if (done) {
      toast((action === 'pause' ? 'Paused ' : 'Resumed ') + detail.name + '; saved in the config file.');
      detail.paused = action === 'pause';
      detail.state = detail.paused ? 'paused' : 'resolving';
      renderHead();
    }
  }

  async function remove() {
    if (!detail) return;
    const ok = await confirmDialog('Remove ' + detail.name + '?', 'It stops being probed and its [[target]] table is deleted from the config file. Its history stays in the store until retention removes it.', 'Remove');
    if (!ok) return;
    const done = await write('DELETE', '/api/v1/targets/' + enc);
    if (done) location.href = '/';
  }

  async function doExport(format) {
    try {
      const res = await api('/api/v1/targets/' + enc + '/export?format=' + format + '&' + rangeQuery() + branchQuery() + (exportAsn.checked ? '&asn=true' : ''), { raw: true });
      const blob = await res.blob();
      const name = (res.headers.get('content-disposition') || '').match(/filename="([^"]+)"/);
      const a = h('a', { href: URL.createObjectURL(blob), download: name ? name[1] : 'hopwatch-' + id + '.' + format });
      document.body.append(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    } catch (e) {
      toast('Export failed: ' + e.message, 'bad');
    }
  }

  /** A multipath target's branches: where each splits and joins, and its health. */
  function renderBranches() {
    const bs = (detail && detail.branches) || [];
    branchPanel.hidden = bs.length === 0;
    if (!bs.length) return;
    const m = detail.multipath;
    setText(branchNote, m ? bs.length + ' of ' + m.found + ' found · discovery: ' + m.probes_sent + ' probes in ' + interval(m.discovery_ms) + ', ' + m.stop + ', ' + ago(m.discovered_at_ms) : '');
    branchBody.replaceChildren(...bs.map((b) => {
      const e = b.end_to_end;
      // A branch may be both lossy and slow: the loss is named first, a slow branch is a warning.
      const findings = (detail.branch_findings || []).filter((f) => f.branch === b.index);
      const finding = findings.find((f) => f.kind !== 'latency');
      const slow = findings.find((f) => f.kind === 'latency');
      const between = b.hops.filter((x) => (b.split_ttl === null || x.ttl > b.split_ttl) && (b.join_ttl === null || x.ttl < b.join_ttl));
      const path = (b.split_ttl !== null ? 'hop ' + b.split_ttl + ' → ' : '') +
        (between.map((x) => x.ttl + ': ' + (x.responder || '?')).join(' → ') || 'direct') +
        (b.join_ttl !== null ? ' → hop ' + b.join_ttl : '');
      const health = finding ? 'loss through ' + (finding.through || 'hop ' + finding.through_ttl) : slow ? 'slow through ' + (slow.through || 'hop ' + slow.through_ttl) : e.loss_pct === null ? 'waiting' : e.loss_pct >= 5 ? 'lossy' : e.loss_pct > 0 ? 'some loss' : 'healthy';
      const cls = (finding || e.loss_pct >= 10 ? 's-bad' : slow || e.loss_pct > 0 ? 's-warn' : '') + (branch === b.index ? ' sel' : '');
      const shown = branch === b.index;
      // A link, so the branch's history can be opened in a new tab or shared; a click graphs it here.
      const graph = h('a', { class: 'branch-history', href: '?branch=' + b.index, text: shown ? 'Back to target' : 'Graph',
        title: shown ? 'The graphs below show this branch\'s stored history; click to go back to the target\'s own flow' : 'Graph this branch\'s stored history below',
        onclick: (ev) => { ev.preventDefault(); setBranch(shown ? null : b.index); } });
      return h('tr', { class: cls.trim(), dataset: { branch: String(b.index), flow: String(b.flow_id) } },
        h('td', { class: 'num', text: String(b.index) }),
        h('td', { class: 'branch-path', text: path, title: 'flow ' + b.flow_id }),
        h('td', { class: 'num branch-loss', text: pct(e.loss_pct) }),
        h('td', { class: 'num', text: String(e.sent) }),
        h('td', { class: 'num', text: ms(e.avg_ns) }),
        h('td', { class: 'num', text: ms(e.jitter_ns) }),
        h('td', { class: 'branch-health', text: health }),
        h('td', {}, graph));
    }));
  }

  function show(d) {
    detail = d;
    renderHead();
    renderHops();
    renderBranches();
    map.update(d, !!(service && service.city_database));
  }

  const live = stream('/api/v1/targets/' + enc + '/live', {
    target: show,
    event: () => { loadEvents(); loadGraphs(); incidents.load(); },
    removed: () => {
      banners.replaceChildren(h('div', { class: 'banner removed' }, 'This target was removed. ', h('a', { href: '/', text: 'Back to all targets' })));
      live.close();
    },
  });
  api('/api/v1/targets/' + enc).then((d) => { show(d); loadGraphs(); loadEvents(); incidents.load(); }).catch((e) => {
    root.replaceChildren(h('nav', { class: 'crumbs' }, h('a', { href: '/', text: '← All targets' })),
      h('p', { class: 'empty-note', text: e.status === 404 ? 'There is no target named "' + id + '".' : 'Could not load the target: ' + e.message }));
    live.close();
  });
  renderHops();
  renderRangeBar();

  return {
    refresh() { loadGraphs(); loadEvents(); incidents.load(); },
    redraw() { if (graphs.series || graphs.map) drawGraphs(); map.redraw(); },
    close() { live.close(); clearTimeout(refreshTimer); },
  };
}

// ------------------------------------------------------------------ start

function redrawAll() {
  if (page && page.redraw) page.redraw();
}

function start() {
  applyTheme();
  applyWall();
  $('#btn-theme').addEventListener('click', cycleTheme);
  $('#btn-wall').addEventListener('click', toggleWall);
  $('#btn-token').addEventListener('click', () => openTokens(''));
  $('#dlg-token [data-action=forget]').addEventListener('click', () => {
    tokens.forget();
    $('#dlg-token').close('cancel');
    toast('Tokens forgotten.');
  });
  setInterval(() => { $('#clock').textContent = fmtFull(Date.now()); }, 1000);
  let resizeTimer = 0;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(redrawAll, 150); });
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { themeChanged(); redrawAll(); });

  const root = $('#app');
  const match = location.pathname.match(/^\/targets\/([^/]+)$/);
  const peerMatch = location.pathname.match(/^\/peers\/([^/]+)$/);
  loadService().catch(() => {}).finally(() => {
    if (peerMatch) page = peerPage(root, decodeURIComponent(peerMatch[1]));
    else page = match ? targetPage(root, decodeURIComponent(match[1])) : overviewPage(root);
  });
}

start();
