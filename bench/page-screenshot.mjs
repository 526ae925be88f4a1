// bench/page-screenshot.mjs — the README's picture of the page at `/` (docs/serve-page.png):
// `esolm serve` with the default model, Debian's chromium through playwright-core, and a
// real /v1/generate stream cut after --steps step events, so the page is caught
// mid-denoising. Usage: node bench/page-screenshot.mjs [--out docs/serve-page.png] [--steps 24]
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { createServer } from '../dist/serve/index.js';
import { opt } from './common.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = opt('--out', path.join(root, 'docs', 'serve-page.png'));
const keepSteps = Number(opt('--steps', '24'));

const server = await createServer({ model: path.join(root, 'models', 'default'), backend: 'cpu', port: 0, logger: false });
const url = await server.listen();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
});
try {
  const page = await browser.newPage({ viewport: { width: 980, height: 430 }, deviceScaleFactor: 1 });
  await page.route('**/v1/generate', async (route) => {
    const res = await route.fetch();
    const events = (await res.text()).split('\n\n');
    let steps = 0;
    const kept = events.filter((e) => !e.startsWith('event: step') || ++steps <= keepSteps).filter((e) => !e.startsWith('event: result') && !e.includes('[DONE]'));
    await route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: kept.join('\n\n') + '\n\n' });
  });
  await page.goto(url + '/');
  await page.waitForFunction(() => document.getElementById('model').textContent.includes('default'));
  await page.fill('#prompt', 'And God said');
  await page.fill('#steps', '48');
  await page.fill('#alpha0', '0.6');
  await page.fill('#seed', '17');
  await page.click('#go');
  await page.waitForFunction((n) => (window.esolmProgress ?? []).length >= n, keepSteps);
  await page.evaluate(() => {  // the stream was cut for the picture: show the status as it was then
    document.getElementById('go').disabled = true;
  });
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.close();
}
