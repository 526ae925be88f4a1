// The page at `/` in a real browser: Debian's chromium driven by playwright-core (headless,
// kept off the network), against `esolm serve` with the default model on 127.0.0.1. The
// slots must fill in out of order while the SSE stream runs, and the final text must equal
// the API's for the same seed. Set ESOLM_SCREENSHOT=<file> to save a screenshot (README).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type EsolmServer } from '../lib/serve/index.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const root = path.join(import.meta.dirname, '..');
let server: EsolmServer;
let url: string;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`chromium is needed for this test: apt-get install -y chromium (looked for ${CHROMIUM})`);
  server = await createServer({ model: path.join(root, 'models', 'default'), backend: 'cpu', port: 0, logger: false });
  url = await server.listen();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe('the live denoising page', () => {
  it('fills the slots in out of order and ends with the API\'s text for the same seed', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    // Nothing but the server: any other request fails the test.
    const foreign: string[] = [];
    await page.route('**/*', (route) => {
      if (route.request().url().startsWith(url)) return route.continue();
      foreign.push(route.request().url());
      return route.abort();
    });
    await page.goto(url + '/');
    await page.waitForFunction(() => document.getElementById('model')!.textContent!.includes('default'));
    await page.fill('#prompt', 'And God said');
    await page.selectOption('#method', 'esolm');
    await page.fill('#steps', '48');
    await page.fill('#alpha0', '0.6');
    await page.fill('#length', '96');
    await page.fill('#seed', '17');
    await page.click('#go');
    await page.waitForSelector('#status[data-state=done]', { timeout: 60_000 });

    const slots = await page.$$eval('#slots .slot', (els) => els.map((e) => (e as HTMLElement).dataset.state));
    expect(slots).toHaveLength(96);
    expect(slots.filter((s) => s === 'given')).toHaveLength(12);
    expect(slots.filter((s) => s === 'revealed')).toHaveLength(84);
    // They filled in step by step (the revealed slots in the DOM after each step event), out of order.
    const progress = await page.evaluate(() => (window as unknown as { esolmProgress: number[] }).esolmProgress);
    expect(progress.length).toBeGreaterThan(10);
    expect(progress.every((n, i) => i === 0 || n > progress[i - 1])).toBe(true);
    expect(progress.at(-1)).toBe(84);
    const reveals = await page.evaluate(() => (window as unknown as { esolmReveals: number[] }).esolmReveals);
    expect(reveals).toHaveLength(84);
    expect(reveals).not.toEqual([...reveals].sort((a, b) => a - b));

    const shown = await page.textContent('#final');
    const api = await fetch(url + '/v1/generate', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sampler: { method: 'esolm', topP: 0.9, steps: 48, alpha0: 0.6, seed: 17 }, length: 96, prompt: 'And God said' }),
    }).then((r) => r.json());
    expect(shown).toBe(api.sequences[0].text);
    expect(await page.textContent('#status')).toMatch(/seed 17/);
    expect(foreign).toEqual([]);
    if (process.env.ESOLM_SCREENSHOT) await page.screenshot({ path: process.env.ESOLM_SCREENSHOT, fullPage: true });
    await page.close();
  });
});
