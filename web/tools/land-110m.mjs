// Converts Natural Earth's 1:110m land polygons, as the npm package
// `world-atlas` ships them (TopoJSON, land-110m.json), into the compact file
// the target page's map draws: web/assets/land-110m.json. Run it again only
// to change the data; the output is committed and compiled into the binary,
// so nothing is fetched at run time.
//
//   mkdir /tmp/atlas && cd /tmp/atlas && npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
//   node web/tools/land-110m.mjs /tmp/atlas/package > web/assets/land-110m.json
//
// Output: {"source", "licence", "units", "rings"}: every ring of every land
// polygon as a flat list [lon, lat, lon, lat, ...] in tenths of a degree
// (the 110m data is coarser than that), consecutive duplicates dropped, and
// longitudes kept continuous across the antimeridian (so a few rings reach
// beyond ±180°; Antarctica's ring runs from -180° to 180° and closes along
// its southern edge).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node land-110m.mjs <unpacked world-atlas package directory>');
  process.exit(2);
}
const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
const topo = JSON.parse(readFileSync(join(dir, 'land-110m.json'), 'utf8'));
const [sx, sy] = topo.transform.scale;
const [tx, ty] = topo.transform.translate;

// TopoJSON arcs are delta-coded quantized positions.
const arcs = topo.arcs.map((arc) => {
  let x = 0;
  let y = 0;
  return arc.map(([dx, dy]) => {
    x += dx;
    y += dy;
    return [x * sx + tx, y * sy + ty];
  });
});

/** A ring from arc indices; ~i is arc i reversed; arcs share their end points. */
function ring(indices) {
  const points = [];
  for (const i of indices) {
    const arc = i >= 0 ? arcs[i] : arcs[~i].slice().reverse();
    points.push(...(points.length ? arc.slice(1) : arc));
  }
  const flat = [];
  let shift = 0;
  let prev = null;
  for (const [rawLon, lat] of points) {
    // Rings that cross the antimeridian (Eurasia's Chukotka, Fiji, Wrangel
    // Island) jump between +180 and -180: keep them continuous (longitudes
    // beyond ±180), so no edge runs across the whole map; the page draws
    // such rings again 360° over.
    if (prev !== null && rawLon + shift - prev > 180) shift -= 360;
    else if (prev !== null && rawLon + shift - prev < -180) shift += 360;
    const lon = rawLon + shift;
    prev = lon;
    const x = Math.round(lon * 10);
    const y = Math.round(lat * 10);
    const n = flat.length;
    if (n && flat[n - 2] === x && flat[n - 1] === y) continue;
    flat.push(x, y);
  }
  return flat;
}

const rings = [];
for (const geometry of topo.objects.land.geometries) {
  const polygons = geometry.type === 'Polygon' ? [geometry.arcs] : geometry.arcs;
  for (const polygon of polygons) for (const r of polygon) rings.push(ring(r));
}

const out = {
  source: `Natural Earth 1:110m land (naturalearthdata.com, v4.1.0), from the npm package world-atlas ${pkg.version} (land-110m.json), converted by web/tools/land-110m.mjs`,
  // The packaging's ISC notice travels with the data (it is compiled into the binary).
  licence: 'Natural Earth data: public domain. world-atlas packaging: ISC License, Copyright 2013-2019 Michael Bostock. ' +
    'Permission to use, copy, modify, and/or distribute this software for any purpose with or without fee is hereby ' +
    'granted, provided that the above copyright notice and this permission notice appear in all copies.',
  units: 'tenths of a degree; each ring is [lon, lat, lon, lat, ...], continuous across the antimeridian (longitudes may pass ±180)',
  rings,
};
process.stdout.write(JSON.stringify(out) + '\n');
