/**
 * SVG pictures for the command line: `generate --record FILE.svg` (an animated picture of a
 * sequence being denoised) and `bench --svg FILE` (a bar chart of the timings). Plain strings,
 * no dependencies; the animation is SMIL, which browsers (and GitHub's README images) play.
 */

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Colours per phase of the step that revealed a position. */
export const PHASE_COLOURS: Record<string, string> = {
  given: '#57606a', diffusion: '#0969da', sequential: '#bc4c00', mdlm: '#0969da', ar: '#bc4c00',
};

export interface Recording {
  /** Text shown for each position (already decoded, one cell per position). */
  cells: string[];
  /** Step (0-based) that revealed each position; -1 = given from the start (prompt / infill). */
  revealedAt: number[];
  /** Phase of that step (`given` for given positions). */
  phase: string[];
  steps: number;
  title: string;
}

/**
 * An animated SVG of one sequence filling in: masked positions are grey blocks, each position
 * turns into its token when its step comes, coloured by phase (given, diffusion, sequential);
 * the animation loops with a pause on the finished text.
 */
export function denoisingSvg(rec: Recording, opts: { columns?: number; frameSeconds?: number; holdSeconds?: number } = {}): string {
  const columns = opts.columns ?? 64;
  const cw = 9.6, lh = 22, pad = 16, top = 52;
  const frame = opts.frameSeconds ?? Math.min(0.25, Math.max(0.04, 6 / Math.max(1, rec.steps)));
  const hold = opts.holdSeconds ?? 3;
  const dur = rec.steps * frame + hold;
  // Lay the cells out left to right in a monospace grid, wrapping at `columns` characters.
  let x = 0, y = 0;
  const placed = rec.cells.map((c) => {
    const text = c.replace(/\n/g, '⏎').replace(/\s/g, ' ') || ' ';
    const w = [...text].length;
    if (x > 0 && x + w > columns) { x = 0; y++; }
    const at = { x, y, text, w };
    x += w;
    return at;
  });
  const rows = y + 1;
  const width = Math.round(Math.max(pad * 2 + columns * cw, 720));
  const height = Math.round(top + rows * lh + pad + 18);
  const key = (t: number): string => (t / dur).toFixed(4);
  const parts: string[] = [];
  placed.forEach((p, i) => {
    const px = (pad + p.x * cw).toFixed(1), py = top + p.y * lh;
    const step = rec.revealedAt[i]!;
    const colour = PHASE_COLOURS[rec.phase[i]!] ?? '#24292f';
    if (step < 0) {
      parts.push(`<text x="${px}" y="${py}" fill="${colour}">${esc(p.text)}</text>`);
      return;
    }
    const t = key((step + 1) * frame);
    parts.push(
      `<rect x="${px}" y="${py - 15}" width="${(p.w * cw - 1.5).toFixed(1)}" height="19" rx="2" fill="#d0d7de">` +
      `<animate attributeName="opacity" values="1;0" keyTimes="0;${t}" calcMode="discrete" dur="${dur.toFixed(2)}s" repeatCount="indefinite"/></rect>` +
      `<text x="${px}" y="${py}" fill="${colour}" opacity="0">${esc(p.text)}` +
      `<animate attributeName="opacity" values="0;1" keyTimes="0;${t}" calcMode="discrete" dur="${dur.toFixed(2)}s" repeatCount="indefinite"/></text>`);
  });
  let lx = pad;
  const legend = [['given', 'given'], ['diffusion', 'diffusion: any order'], ['sequential', 'sequential: left to right, KV cache'], ['mdlm', 'MDLM'], ['ar', 'AR']]
    .filter(([k]) => rec.phase.includes(k!))
    .map(([k, label]) => {
      const item = `<rect x="${lx}" y="${height - 24}" width="12" height="12" rx="2" fill="${PHASE_COLOURS[k!]}"/>` +
        `<text x="${lx + 18}" y="${height - 14}" font-size="13" fill="#24292f">${esc(label!)}</text>`;
      lx += 18 + label!.length * 7.2 + 24;
      return item;
    }).join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(rec.title)}">
<rect width="100%" height="100%" rx="8" fill="#ffffff" stroke="#d0d7de"/>
<text x="${pad}" y="28" font-family="system-ui, sans-serif" font-size="15" font-weight="600" fill="#24292f">${esc(rec.title)}</text>
<g font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" font-size="16" xml:space="preserve">
${parts.join('\n')}
</g>
<g font-family="system-ui, sans-serif">${legend}</g>
</svg>
`;
}

export interface BenchBar {
  label: string;
  seconds: number;
  /** Bar colour key: the method. */
  method: string;
}

/** A horizontal bar chart of generation times (seconds, shorter is faster). */
export function benchSvg(bars: BenchBar[], title: string, subtitle: string): string {
  const pad = 16, labelW = 130, barMax = 420, lh = 28, top = 66;
  const width = pad * 2 + labelW + barMax + 90;
  const height = top + bars.length * lh + pad;
  const max = Math.max(...bars.map((b) => b.seconds), 1e-9);
  const colour: Record<string, string> = { esolm: '#0969da', mdlm: '#8250df', ar: '#bc4c00' };
  const rows = bars.map((b, i) => {
    const y = top + i * lh;
    const w = Math.max(1, (b.seconds / max) * barMax);
    return `<text x="${pad + labelW - 8}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>` +
      `<rect x="${pad + labelW}" y="${y + 2}" width="${w.toFixed(1)}" height="18" rx="3" fill="${colour[b.method] ?? '#57606a'}"/>` +
      `<text x="${(pad + labelW + w + 6).toFixed(1)}" y="${y + 15}">${b.seconds < 1 ? `${(b.seconds * 1e3).toFixed(0)} ms` : `${b.seconds.toFixed(2)} s`}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">
<rect width="100%" height="100%" rx="8" fill="#ffffff" stroke="#d0d7de"/>
<g font-family="system-ui, sans-serif" font-size="13" fill="#24292f">
<text x="${pad}" y="26" font-size="15" font-weight="600">${esc(title)}</text>
<text x="${pad}" y="46" fill="#57606a">${esc(subtitle)}</text>
${rows.join('\n')}
</g>
</svg>
`;
}
