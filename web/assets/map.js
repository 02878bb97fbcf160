// hopwatch target page: the world map of a path. Each hop the city database
// ([enrichment] city_database) places is a point, joined to the next placed
// hop in path (TTL) order, on Natural Earth's 1:110m coastline (land-110m.json,
// served from the binary like every other file: nothing loads from elsewhere).
// Hops without a position are listed beside the map with the reason (private
// or other special-purpose address, not in the database, no answer), never
// guessed. Equirectangular projection on a canvas, fitted to the placed hops.
//
// Used by app.js: `const map = HopMap.create({ css })`, then `map.el` goes in
// the page, `map.update(detail, cityDatabase)` on every live update and
// `map.redraw()` on resize or theme change.
'use strict';

const HopMap = (() => {
  /** The coastline, fetched once per page from the embedded assets. */
  let landPromise = null;
  function loadLand() {
    if (!landPromise) {
      landPromise = fetch('/assets/land-110m.json')
        .then((res) => {
          if (!res.ok) throw new Error('HTTP ' + res.status);
          return res.json();
        })
        .catch((e) => {
          landPromise = null;
          throw e;
        });
    }
    return landPromise;
  }

  /** A ring's least and greatest longitude (tenths of a degree), computed once. */
  const extents = new WeakMap();
  function extent(ring) {
    let e = extents.get(ring);
    if (!e) {
      e = [Infinity, -Infinity];
      for (let i = 0; i < ring.length; i += 2) {
        e[0] = Math.min(e[0], ring[i]);
        e[1] = Math.max(e[1], ring[i]);
      }
      extents.set(ring, e);
    }
    return e;
  }

  /**
   * Where each hop is, in path order: `placed` are points (one per placed
   * responder; the first of a hop carries the path line), `unplaced` say why
   * a hop or responder has none.
   */
  function positions(detail, cityDatabase) {
    const placed = [];
    const unplaced = [];
    for (const hop of detail.hops) {
      const ttl = detail.final_hop_only ? 'dst' : String(hop.ttl);
      if (!hop.responders.length) {
        unplaced.push({ ttl, address: null, reason: 'no-answer', text: 'no answer' });
        continue;
      }
      let first = true;
      for (const r of hop.responders) {
        if (r.latitude !== null && r.latitude !== undefined && r.longitude !== null && r.longitude !== undefined) {
          placed.push({
            ttl, address: r.address, lat: r.latitude, lon: r.longitude, onPath: first,
            destination: hop.is_destination, where: [r.city, r.country].filter(Boolean).join(', '),
          });
          first = false;
        } else if (r.special_purpose) {
          unplaced.push({ ttl, address: r.address, reason: 'special', text: r.special_purpose + ': not looked up' });
        } else if (!cityDatabase) {
          unplaced.push({ ttl, address: r.address, reason: 'no-database', text: 'no city database' });
        } else {
          unplaced.push({ ttl, address: r.address, reason: 'unknown', text: 'not in the city database' });
        }
      }
    }
    return { placed, unplaced };
  }

  /**
   * The part of the world to draw: the placed hops with a margin, at least
   * 40° × 20°, widened to the canvas's shape, within the world's edges.
   */
  function view(placed, w, h) {
    if (!placed.length) return { lon0: -180, lon1: 180, lat0: -60, lat1: 85 };
    let lon0 = Math.min(...placed.map((p) => p.lon));
    let lon1 = Math.max(...placed.map((p) => p.lon));
    let lat0 = Math.min(...placed.map((p) => p.lat));
    let lat1 = Math.max(...placed.map((p) => p.lat));
    const padLon = Math.max(40 - (lon1 - lon0), (lon1 - lon0) * 0.3) / 2;
    const padLat = Math.max(20 - (lat1 - lat0), (lat1 - lat0) * 0.3) / 2;
    lon0 -= padLon; lon1 += padLon; lat0 -= padLat; lat1 += padLat;
    // Same scale on both axes (degrees per pixel): widen the narrower one.
    const perPx = Math.max((lon1 - lon0) / w, (lat1 - lat0) / h);
    const midLon = (lon0 + lon1) / 2;
    const midLat = (lat0 + lat1) / 2;
    const halfW = Math.min(180, (perPx * w) / 2);
    const halfH = Math.min(90, (perPx * h) / 2);
    const shift = (mid, half, lo, hi) => Math.max(lo + half, Math.min(hi - half, mid));
    const cLon = shift(midLon, halfW, -180, 180);
    const cLat = shift(midLat, halfH, -90, 90);
    return { lon0: cLon - halfW, lon1: cLon + halfW, lat0: cLat - halfH, lat1: cLat + halfH };
  }

  function create({ css }) {
    const canvas = document.createElement('canvas');
    canvas.className = 'chart map';
    canvas.id = 'hop-map';
    canvas.setAttribute('aria-label', 'World map of the path');
    const wrap = document.createElement('div');
    wrap.className = 'chart-wrap map-wrap';
    wrap.append(canvas);
    const list = document.createElement('ul');
    list.className = 'map-unplaced';
    list.id = 'map-unplaced';
    const sideTitle = document.createElement('h3');
    sideTitle.textContent = 'Not on the map';
    const side = document.createElement('div');
    side.className = 'map-side';
    side.append(sideTitle, list);
    const note = document.createElement('div');
    note.className = 'chart-note';
    const row = document.createElement('div');
    row.className = 'map-row';
    row.append(wrap, side);
    const el = document.createElement('section');
    el.className = 'panel';
    el.id = 'map-panel';
    const title = document.createElement('h2');
    title.textContent = 'Map';
    el.append(title, row, note);

    let land = null;
    let landError = null;
    let state = null; // { placed, unplaced, cityDatabase }
    let listKey = '';
    let drawn = []; // [{ p, x, y }] for hovering

    loadLand().then((l) => { land = l; draw(); }).catch((e) => { landError = e; draw(); });

    function renderList() {
      const key = JSON.stringify(state.unplaced);
      if (key === listKey) return;
      listKey = key;
      const items = state.unplaced.map((u) => {
        const li = document.createElement('li');
        li.dataset.ttl = u.ttl;
        li.dataset.reason = u.reason;
        const hop = document.createElement('b');
        hop.textContent = (u.ttl === 'dst' ? 'dst' : 'hop ' + u.ttl) + ' ';
        const addr = document.createElement('span');
        addr.className = 'mono';
        addr.textContent = u.address || '???';
        const why = document.createElement('span');
        why.className = 'muted';
        why.textContent = ' ' + u.text;
        li.append(hop, addr, why);
        return li;
      });
      if (!items.length) {
        const li = document.createElement('li');
        li.className = 'muted';
        li.textContent = 'Every hop is on the map.';
        items.push(li);
      }
      list.replaceChildren(...items);
    }

    function draw() {
      if (!state) return;
      const started = performance.now();
      const width = Math.max(200, canvas.clientWidth || wrap.clientWidth || 600);
      const height = Math.round(Math.max(180, Math.min(420, width * 0.5)));
      const dpr = window.devicePixelRatio || 1;
      canvas.style.height = height + 'px';
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      const ctx = canvas.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const v = view(state.placed, width, height);
      const X = (lon) => ((lon - v.lon0) / (v.lon1 - v.lon0)) * width;
      const Y = (lat) => ((v.lat1 - lat) / (v.lat1 - v.lat0)) * height;
      ctx.fillStyle = css('--map-sea') || '#dde7f0';
      ctx.fillRect(0, 0, width, height);
      let rings = 0;
      if (land) {
        ctx.beginPath();
        for (const ring of land.rings) {
          // Rings that cross the antimeridian reach past ±180° (see
          // web/tools/land-110m.mjs): drawn again 360° over where that shows.
          const [min, max] = extent(ring);
          let drawnOnce = false;
          for (const shift of [0, 360, -360]) {
            if (min / 10 + shift > v.lon1 || max / 10 + shift < v.lon0) continue;
            for (let i = 0; i < ring.length; i += 2) {
              const x = X(ring[i] / 10 + shift);
              const y = Y(ring[i + 1] / 10);
              if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
            }
            ctx.closePath();
            drawnOnce = true;
          }
          if (drawnOnce) rings++;
        }
        ctx.fillStyle = css('--map-land') || '#c9d3cc';
        ctx.fill('evenodd');
        ctx.strokeStyle = css('--map-coast') || 'rgba(0,0,0,.25)';
        ctx.lineWidth = 0.6;
        ctx.stroke();
      }
      // The path: the first placed responder of each hop, in TTL order.
      const onPath = state.placed.filter((p) => p.onPath);
      const accent = css('--accent') || '#1f6feb';
      ctx.strokeStyle = accent;
      ctx.lineWidth = 2;
      ctx.lineJoin = 'round';
      let segments = 0;
      if (onPath.length > 1) {
        ctx.beginPath();
        onPath.forEach((p, i) => {
          if (i === 0) ctx.moveTo(X(p.lon), Y(p.lat)); else { ctx.lineTo(X(p.lon), Y(p.lat)); segments++; }
        });
        ctx.stroke();
      }
      // Points on top, labelled with their TTLs (hops in one city share a label).
      drawn = state.placed.map((p) => ({ p, x: X(p.lon), y: Y(p.lat) }));
      const labels = new Map();
      for (const d of drawn) {
        const key = Math.round(d.x) + ',' + Math.round(d.y);
        if (!labels.has(key)) labels.set(key, { x: d.x, y: d.y, ttls: [] });
        labels.get(key).ttls.push(d.p.ttl);
      }
      for (const d of drawn) {
        ctx.beginPath();
        ctx.arc(d.x, d.y, d.p.destination ? 6 : 5, 0, 2 * Math.PI);
        ctx.fillStyle = d.p.destination ? (css('--loss-0') || '#1a7f37') : accent;
        ctx.fill();
        ctx.lineWidth = 1.5;
        ctx.strokeStyle = css('--panel') || '#ffffff';
        ctx.stroke();
      }
      ctx.font = '12px ' + (css('--mono') || 'monospace');
      ctx.textBaseline = 'middle';
      for (const l of labels.values()) {
        const text = [...new Set(l.ttls)].join(',');
        const right = l.x + 9 + ctx.measureText(text).width < width;
        ctx.textAlign = right ? 'left' : 'right';
        const tx = right ? l.x + 9 : l.x - 9;
        ctx.lineWidth = 3;
        ctx.strokeStyle = css('--panel') || '#ffffff';
        ctx.strokeText(text, tx, l.y);
        ctx.fillStyle = css('--fg') || '#1b1f24';
        ctx.fillText(text, tx, l.y);
      }
      // What was drawn, for people reading the DOM and for the browser test:
      // the placed hops and where (CSS pixels), the path's segments, the
      // coastline's rings in view.
      canvas.dataset.points = String(drawn.length);
      canvas.dataset.segments = String(segments);
      canvas.dataset.rings = String(rings);
      canvas.dataset.hops = drawn.map((d) => d.p.ttl + '@' + d.x.toFixed(1) + ',' + d.y.toFixed(1)).join('|');
      canvas.dataset.unplaced = String(state.unplaced.length);
      canvas.dataset.drawMs = (performance.now() - started).toFixed(1);
      const placedText = drawn.length === 1 ? '1 hop placed' : drawn.length + ' hops placed';
      note.textContent = [
        placedText,
        landError ? 'the coastline could not be loaded: ' + landError.message : null,
        state.cityDatabase ? 'positions from the city database ([enrichment] city_database), approximate' : 'no city database: set [enrichment] city_database to place public hops',
        'coastline: Natural Earth 1:110m (public domain)',
      ].filter(Boolean).join(' · ');
    }

    canvas.addEventListener('mousemove', (ev) => {
      const rect = canvas.getBoundingClientRect();
      const x = ev.clientX - rect.left;
      const y = ev.clientY - rect.top;
      const near = drawn.filter((d) => Math.hypot(d.x - x, d.y - y) <= 8);
      canvas.title = near.map((d) => (d.p.ttl === 'dst' ? 'dst' : 'hop ' + d.p.ttl) + ' ' + d.p.address +
        (d.p.where ? ' · ' + d.p.where : '') + (d.p.destination ? ' (destination)' : '')).join('\n');
    });

    return {
      el,
      /** A new live view of the target; redraws only when a position changed. */
      update(detail, cityDatabase) {
        const next = positions(detail, cityDatabase);
        const changed = !state || JSON.stringify(next) !== JSON.stringify({ placed: state.placed, unplaced: state.unplaced }) ||
          cityDatabase !== state.cityDatabase;
        state = { ...next, cityDatabase };
        renderList();
        if (changed) draw();
      },
      redraw: draw,
    };
  }

  return { create, positions, view };
})();
