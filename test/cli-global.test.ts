// The esolm executable's global behaviour (lib/cli.ts), run as a child process like a user
// would: --version, flag-worded errors, --stream as NDJSON off a terminal, doctor's exit code
// and paths, and Ctrl-C under the progress bar (a real pseudo-terminal via script(1)):
// the generation stops, the cursor is shown again and the exit status is 130.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRandomModel } from './helpers/random-model.js';

const root = path.resolve(import.meta.dirname, '..');
const bin = path.join(root, 'dist', 'bin.js');
let dir: string;
let modelDir: string;
let slowDir: string;

const esolm = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000 });

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-cli-global-'));
  modelDir = path.join(dir, 'bytes');
  makeRandomModel(modelDir, { arch: 'esolm', seed: 5, vocab_size: 257, length: 64, editConfig: (c) => { c.mask_index = 256; c.tokenizer = 'bytes'; } });
  // Big enough that 1024 steps take seconds: time to press Ctrl-C.
  slowDir = path.join(dir, 'slow');
  makeRandomModel(slowDir, { arch: 'esolm', seed: 6, vocab_size: 257, length: 1024, hidden_size: 128, n_heads: 4, n_blocks: 2,
    editConfig: (c) => { c.mask_index = 256; c.tokenizer = 'bytes'; } });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('esolm executable: global behaviour', () => {
  it('--version prints the package version', () => {
    const v = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version;
    expect(esolm('--version').stdout.trim()).toBe(v);
    expect(esolm('-V').stdout.trim()).toBe(v);
  });

  it('errors name the flags, exit 1', () => {
    const r = esolm('generate', 'x', '-m', modelDir, '--top-p', '2', '--backend', 'cpu');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('--top-p');
    expect(r.stderr).not.toContain('topP');
    expect(r.stderr).toContain('ERR_INVALID_ARG');
    const t = esolm('generate', 'x', '-m', modelDir, '-T', '0', '--backend', 'cpu');
    expect(t.stderr).toContain('--steps');
  });

  it('--stream off a terminal writes NDJSON step events, then the result', () => {
    const r = esolm('generate', 'Hi', '-m', modelDir, '-n', '24', '-T', '4', '--stream', '--backend', 'cpu', '--seed', '2');
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const steps = lines.filter((l) => l.type === 'step');
    expect(steps.length).toBeGreaterThan(0);
    expect(steps.map((s) => s.step)).toEqual(steps.map((_, i) => i));
    for (const s of steps) expect(['diffusion', 'sequential']).toContain(s.phase);
    const result = lines.at(-1);
    expect(result.type).toBe('result');
    // The step events reveal exactly the generated positions with the final tokens.
    const final = result.sequences[0].tokens as number[];
    const seen = new Map<number, number>();
    for (const s of steps) s.positions.forEach((p: number, i: number) => { if (p >= 0) seen.set(p, s.tokens[i]); });
    expect([...seen.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 22 }, (_, i) => i + 2));
    for (const [p, t] of seen) expect(final[p]).toBe(t);
  });

  it('doctor prints the version and the addon path; exits 1 when the CPU addon cannot load', () => {
    const ok = esolm('doctor');
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^esolm\s+\d+\.\d+\.\d+/m);
    expect(ok.stdout).toContain('esolm_cpu.node');
    const bad = spawnSync(process.execPath, [bin, 'doctor', '--json'], { encoding: 'utf8', env: { ...process.env, ESOLM_ADDON_PATH: path.join(dir, 'nope.node') } });
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout).cpu.ok).toBe(false);
  });

  it('info and bench take -m like generate and eval', () => {
    const r = esolm('info', '-m', modelDir, '--json', '--backend', 'cpu');
    expect(JSON.parse(r.stdout).config.vocab_size).toBe(257);
  });

  it.skipIf(spawnSync('script', ['--version']).status !== 0)('Ctrl-C under the progress bar: stops, shows the cursor, exits 130', async () => {
    const cmd = [process.execPath, bin, 'generate', '-m', slowDir, '-n', '1024', '-T', '1024', '--method', 'mdlm', '--backend', 'cpu']
      .map((a) => `'${a}'`).join(' ');
    const child = spawn('script', ['-qefc', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    const t0 = Date.now();
    // Wait for the progress bar (it hides the cursor), then type Ctrl-C into the terminal.
    while (!out.includes('\x1b[?25l') && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 50));
    expect(out).toContain('\x1b[?25l');
    child.stdin.write('\x03');
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(code).toBe(130);
    const after = out.slice(out.lastIndexOf('\x1b[?25l'));
    expect(after).toContain('\x1b[?25h');
    expect(out).toContain('interrupted');
    expect(out).not.toMatch(/sequence|NFE=/);
  }, 120_000);
});

describe('SVG output', () => {
  it('generate --record writes an animated SVG: given cells static, every other cell revealed at its step, coloured by phase', () => {
    const file = path.join(dir, 'rec.svg');
    const r = esolm('generate', 'Hi', '-m', modelDir, '-n', '40', '-T', '8', '--alpha0', '0.5', '--seed', '3', '--backend', 'cpu', '--record', file, '--stream');
    expect(r.status, r.stderr).toBe(0);
    const steps = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === 'step');
    const svg = readFileSync(file, 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    const texts = [...svg.matchAll(/<text x="[\d.]+" y="\d+" fill="(#[0-9a-f]{6})"( opacity="0")?>[^<]*(<animate [^>]*keyTimes="0;([\d.]+)")?/g)];
    expect(texts).toHaveLength(40);
    // The prompt "Hi" is given: static, grey.
    expect(texts.slice(0, 2).every((t) => t[2] === undefined && t[1] === '#57606a')).toBe(true);
    // Every other position appears at (step + 1) / steps of the animation, in the colour of its phase.
    const at = new Map<number, { step: number; phase: string }>();
    for (const s of steps) s.positions.forEach((p: number) => { if (p >= 0) at.set(p, { step: s.step, phase: s.phase }); });
    const colour: Record<string, string> = { diffusion: '#0969da', sequential: '#bc4c00' };
    let last = -1;
    for (let p = 2; p < 40; p++) {
      const t = texts[p]!;
      expect(t[2]).toBe(' opacity="0"');
      expect(t[1]).toBe(colour[at.get(p)!.phase]);
      const k = Number(t[4]);
      expect(k).toBeGreaterThan(0);
      expect(k).toBeLessThan(1);
      if (at.get(p)!.phase === 'sequential') { expect(k).toBeGreaterThan(last); last = k; }  // left to right
    }
    expect(new Set(steps.map((s) => s.phase))).toEqual(new Set(['diffusion', 'sequential']));
  });

  it('bench --svg writes a bar chart of the rows it printed', () => {
    const file = path.join(dir, 'bench.svg');
    const r = esolm('bench', '-m', modelDir, '-n', '16', '--steps', '4,8', '--json', '--backend', 'cpu', '--svg', file);
    expect(r.status, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout).rows as { method: string; T: number | null; seconds: number }[];
    const svg = readFileSync(file, 'utf8');
    const labels = [...svg.matchAll(/text-anchor="end">([^<]+)</g)].map((m) => m[1]);
    expect(labels).toEqual(rows.map((x) => (x.T === null ? 'ar' : `${x.method} T=${x.T}`)));
    const widths = [...svg.matchAll(/<rect x="\d+" y="\d+" width="([\d.]+)" height="18"/g)].map((m) => Number(m[1]));
    const max = Math.max(...rows.map((x) => x.seconds));
    widths.forEach((w, i) => expect(w).toBeCloseTo(Math.max(1, (rows[i]!.seconds / max) * 420), 0));
  });
});
