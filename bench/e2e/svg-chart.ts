// A hand-written SVG of the results: one small horizontal bar chart per
// figure (each with its own axis, since Gbit/s and ms share no scale; a log
// axis where the planes differ by more than LOG_SPREAD times, so the slow
// ones stay visible next to the kernel),
// a bar per data plane at its median with a whisker from min to max, and the
// C proxy's quoted figure as a dashed line where there is one.
import { METRICS, type MetricSpec } from './metrics.js';
import { PLANE_IDS } from './planes.js';
import type { BenchResults } from './results.js';

const WIDTH = 1000;
const MARGIN = 20;
const COLUMNS = 2;
const PANEL_WIDTH = (WIDTH - MARGIN * (COLUMNS + 1)) / COLUMNS;
const LABEL_WIDTH = 120;
const VALUE_WIDTH = 70;
const ROW_HEIGHT = 22;
const BAR_HEIGHT = 14;
const PANEL_TITLE_HEIGHT = 40;
const AXIS_HEIGHT = 26;
const HEADER_HEIGHT = 64;
const LOG_SPREAD = 20;

// Colour-blind-safe (Tableau 10), fixed per plane by its place in the plane table so charts of different runs agree.
const PALETTE = ['#79706e', '#4e79a7', '#f28e2b', '#edc948', '#e15759', '#59a14f', '#b07aa1', '#76b7b2'];

function colourOf(planeId: string): string {
  const i = PLANE_IDS.indexOf(planeId);
  return PALETTE[(i < 0 ? PLANE_IDS.length : i) % PALETTE.length]!;
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round axis steps (1, 2 or 5 times a power of ten) giving about four gridlines. */
export function niceTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((k) => k * power).find((s) => s >= rough)!;
  const ticks: number[] = [];
  for (let t = 0; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  if (ticks[ticks.length - 1]! < max) ticks.push(Number((ticks[ticks.length - 1]! + step).toPrecision(12)));
  return ticks;
}

export interface Axis {
  log: boolean;
  ticks: number[];
  /** Where a value falls, 0 at the left end, 1 at the right. */
  fraction(value: number): number;
}

/** Linear from 0, unless the positive values span more than LOG_SPREAD times: then decades. */
export function chooseAxis(values: readonly number[]): Axis {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v));
  const max = Math.max(0, ...positive);
  const min = Math.min(...positive);
  if (positive.length >= 2 && max / min > LOG_SPREAD) {
    // A third of a decade of room below the smallest value, so its bar does not shrink to nothing.
    const lo = Math.floor(Math.log10(min) - 0.3);
    const hi = Math.ceil(Math.log10(max));
    const ticks = Array.from({ length: hi - lo + 1 }, (_, i) => Number((10 ** (lo + i)).toPrecision(12)));
    return { log: true, ticks, fraction: (v) => (v > 0 ? Math.min(1, Math.max(0, (Math.log10(v) - lo) / (hi - lo))) : 0) };
  }
  const ticks = niceTicks(max);
  const top = ticks[ticks.length - 1]!;
  return { log: false, ticks, fraction: (v) => Math.max(0, v) / top };
}

function panelHeight(rows: number): number {
  return PANEL_TITLE_HEIGHT + rows * ROW_HEIGHT + AXIS_HEIGHT;
}

function panel(results: BenchResults, m: MetricSpec, x: number, y: number): string {
  const planes = results.planes;
  const stats = planes.map((p) => results.summaries[p.id]?.[m.key]);
  const reference = results.reference.figures[m.key];
  const axis = chooseAxis([...stats.flatMap((s) => (s ? [s.min, s.max] : [])), ...(reference === undefined ? [] : [reference])]);
  const barLeft = x + LABEL_WIDTH;
  const barWidth = PANEL_WIDTH - LABEL_WIDTH - VALUE_WIDTH;
  const scale = (v: number) => barLeft + axis.fraction(v) * barWidth;
  const rowsTop = y + PANEL_TITLE_HEIGHT;
  const rowsBottom = rowsTop + planes.length * ROW_HEIGHT;
  const way = m.better === 'higher' ? 'higher is better' : m.better === 'lower' ? 'lower is better' : '';
  const subtitle = [m.unit, way, axis.log ? 'log scale' : ''].filter(Boolean).join(', ');
  const out: string[] = [
    `<rect x="${x}" y="${y}" width="${PANEL_WIDTH}" height="${panelHeight(planes.length)}" fill="#fafafa" stroke="#dddddd"/>`,
    `<text x="${x + 10}" y="${y + 18}" class="title">${esc(m.title)}</text>`,
    `<text x="${x + 10}" y="${y + 33}" class="sub">${esc(subtitle)}</text>`,
  ];
  for (const t of axis.ticks) {
    const tx = scale(t);
    out.push(`<line x1="${tx}" y1="${rowsTop - 2}" x2="${tx}" y2="${rowsBottom + 2}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${tx}" y="${rowsBottom + 16}" class="tick" text-anchor="middle">${esc(formatTick(t))}</text>`);
  }
  // Before the bars, so their value labels (with a halo) stay legible where the line crosses them.
  if (reference !== undefined) {
    const rx = scale(reference);
    out.push(`<line x1="${rx}" y1="${rowsTop - 4}" x2="${rx}" y2="${rowsBottom}" stroke="#c00000" stroke-width="1.5" stroke-dasharray="4 3"/>`);
    // In the title band, right-aligned, where it cannot collide with the subtitle or a bar's value.
    out.push(`<text x="${x + PANEL_WIDTH - 10}" y="${y + 33}" class="ref" text-anchor="end">- - - C proxy (ref., not measured): ${reference}</text>`);
  }
  planes.forEach((p, i) => {
    const s = stats[i];
    const cy = rowsTop + i * ROW_HEIGHT + ROW_HEIGHT / 2;
    out.push(`<text x="${barLeft - 8}" y="${cy + 4}" class="label" text-anchor="end">${esc(p.short)}</text>`);
    if (!s) {
      out.push(`<text x="${barLeft + 4}" y="${cy + 4}" class="na">${m.agentOnly ? 'n/a (no agent)' : 'no figure'}</text>`);
      return;
    }
    const end = scale(s.median);
    out.push(`<rect x="${barLeft}" y="${cy - BAR_HEIGHT / 2}" width="${Math.max(1, end - barLeft)}" height="${BAR_HEIGHT}" fill="${colourOf(p.id)}"/>`);
    if (s.n > 1 && s.max > s.min) {
      const [x1, x2] = [scale(s.min), scale(s.max)];
      out.push(
        `<path d="M${x1} ${cy}H${x2}M${x1} ${cy - 4}V${cy + 4}M${x2} ${cy - 4}V${cy + 4}" stroke="#222222" stroke-width="1.2" fill="none"/>`,
      );
    }
    out.push(`<text x="${Math.max(end, scale(s.max)) + 6}" y="${cy + 4}" class="value">${esc(s.median.toFixed(m.decimals))}</text>`);
  });
  return out.join('\n');
}

function formatTick(t: number): string {
  if (t === 0) return '0';
  if (Math.abs(t) >= 1000) return `${Number((t / 1000).toPrecision(6))}k`;
  return String(Number(t.toPrecision(6)));
}

export function renderSvg(results: BenchResults): string {
  const charted = METRICS.filter((m) => m.chart);
  const rows = Math.ceil(charted.length / COLUMNS);
  const ph = panelHeight(results.planes.length);
  const height = HEADER_HEIGHT + rows * (ph + MARGIN) + 24;
  const m = results.machine;
  const panels = charted.map((metric, i) => {
    const col = i % COLUMNS;
    const row = Math.floor(i / COLUMNS);
    return panel(results, metric, MARGIN + col * (PANEL_WIDTH + MARGIN), HEADER_HEIGHT + row * (ph + MARGIN));
  });
  const subtitle =
    `${results.mode === 'quick' ? 'QUICK SMOKE RUN, ' : ''}${results.plan.reps} rep(s): bar = median, whisker = min–max. ` +
    `${m.date.slice(0, 16).replace('T', ' ')} UTC, ${m.cpuCount} × ${m.cpuModel}, kernel ${m.kernel}, Node ${m.node}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    '<style>',
    '  .h1 { font-size: 18px; font-weight: bold; fill: #111111 }',
    '  .h2 { font-size: 12px; fill: #444444 }',
    '  .title { font-size: 13px; font-weight: bold; fill: #111111 }',
    '  .sub { font-size: 11px; fill: #666666 }',
    '  .label { font-size: 12px; fill: #222222; paint-order: stroke; stroke: #fafafa; stroke-width: 3px }',
    '  .value { font-size: 11px; fill: #222222; paint-order: stroke; stroke: #fafafa; stroke-width: 3px }',
    '  .tick { font-size: 10px; fill: #777777 }',
    '  .na { font-size: 11px; fill: #999999; font-style: italic }',
    '  .ref { font-size: 10px; fill: #c00000 }',
    '  .foot { font-size: 11px; fill: #666666 }',
    '</style>',
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="${MARGIN}" y="28" class="h1">flannel-udp end-to-end: pod to pod across 2 namespace nodes</text>`,
    `<text x="${MARGIN}" y="48" class="h2">${esc(subtitle)}</text>`,
    ...panels,
    `<text x="${MARGIN}" y="${height - 10}" class="foot">${esc("reference fwd = an independent forwarder with the C proxy's structure (bench/reference/udp_proxy.py); the dashed 'C proxy ref.' lines are figures quoted for flannel's real C proxy, not measured in this run.")}</text>`,
    '</svg>',
    '',
  ].join('\n');
}
