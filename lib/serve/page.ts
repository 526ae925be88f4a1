/**
 * The page at `/`: a dependency-free playground that streams POST /v1/generate over SSE and
 * shows the sequence as slots filling in out of order. One HTML string (inline CSS and
 * script) so it ships inside dist/ with no static-file step.
 *
 * Hooks for tests and automation: #slots .slot[data-state=masked|given|revealed],
 * #status[data-state=idle|running|done|error], #final (the result text), window.esolmReveals
 * (positions in reveal order), window.esolmProgress (revealed slots in the DOM after each step).
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>esolm — live denoising</title>
<style>
  :root { --bg: #0f1115; --fg: #e6e6e6; --dim: #7a8190; --acc: #6cb6ff; --new: #ffd166; --given: #9be39b; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; background: var(--bg); color: var(--fg); }
  main { max-width: 980px; margin: 0 auto; padding: 20px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  h1 small { color: var(--dim); font-weight: normal; font-size: 14px; }
  form { display: grid; grid-template-columns: repeat(6, auto); gap: 8px 12px; align-items: end; margin: 14px 0; }
  label { display: flex; flex-direction: column; font-size: 12px; color: var(--dim); gap: 3px; }
  label.wide { grid-column: 1 / -1; }
  input, select, button { font: inherit; color: var(--fg); background: #1a1e26; border: 1px solid #2c3340; border-radius: 6px; padding: 6px 8px; }
  input[type=number] { width: 90px; }
  button { cursor: pointer; background: #1f3a5a; border-color: #2f5d8f; }
  button:disabled { opacity: .5; cursor: default; }
  #status { color: var(--dim); font-variant-numeric: tabular-nums; min-height: 1.5em; }
  #status[data-state=error] { color: #ff7b72; }
  #slots { display: flex; flex-wrap: wrap; gap: 2px; font: 15px/1 ui-monospace, monospace; margin: 12px 0; }
  .slot { min-width: 1.1em; height: 1.6em; padding: .3em .1em; text-align: center; background: #171b22; border-radius: 3px; white-space: pre; }
  .slot[data-state=masked] { color: #3a4150; }
  .slot[data-state=given] { color: var(--given); }
  .slot[data-state=revealed] { color: var(--fg); transition: background 1s; }
  .slot.new { background: #5a4a10; color: var(--new); transition: none; }
  pre#final { white-space: pre-wrap; background: #171b22; padding: 10px; border-radius: 6px; min-height: 2.5em; }
  details { color: var(--dim); font-size: 13px; }
</style>
</head>
<body>
<main>
  <h1>esolm <small id="model">live denoising</small></h1>
  <form id="form">
    <label class="wide">Prompt <input id="prompt" value="In the beginning" autocomplete="off"></label>
    <label>Method <select id="method"><option>esolm</option><option>mdlm</option><option>ar</option></select></label>
    <label>Steps <input id="steps" type="number" min="1" value="64"></label>
    <label>alpha0 <input id="alpha0" type="number" min="0" max="1" step="0.05" value="1"></label>
    <label>Length <input id="length" type="number" min="1" value="128"></label>
    <label>Seed <input id="seed" type="number" min="0" placeholder="random"></label>
    <label>&nbsp;<span><button id="go" type="submit">Generate</button> <button id="stop" type="button" disabled>Stop</button></span></label>
    <details class="wide"><summary>API key</summary><input id="key" type="password" placeholder="Bearer token, if the server needs one"></details>
  </form>
  <div id="status" data-state="idle">Press Generate to watch the sequence denoise.</div>
  <div id="slots" aria-label="sequence slots"></div>
  <pre id="final"></pre>
</main>
<script>
(() => {
  const $ = (id) => document.getElementById(id);
  const show = (p) => p.replace(/\\n/g, '⏎').replace(/\\t/g, '⇥');
  let ctl = null;
  window.esolmReveals = [];
  window.esolmProgress = [];

  fetch('/v1/models', { headers: auth() }).then((r) => r.ok ? r.json() : null).then((j) => {
    const m = j && j.data && j.data[0];
    if (!m) return;
    $('model').textContent = m.id + ' · ' + m.esolm.arch + ' · ' + m.esolm.backend + ' · context ' + m.esolm.length;
    $('length').max = m.esolm.length;
    $('length').value = m.esolm.length;
    const s = m.esolm.sampling || {};
    if (s.steps) $('steps').value = s.steps;
    if (s.alpha0 !== undefined) $('alpha0').value = s.alpha0;
    if (m.esolm.arch !== 'esolm') $('method').value = m.esolm.arch;
  }).catch(() => {});

  function auth() {
    const k = $('key') && $('key').value;
    return k ? { authorization: 'Bearer ' + k } : {};
  }

  function setStatus(state, text) {
    $('status').dataset.state = state;
    $('status').textContent = text;
  }

  function request() {
    const method = $('method').value;
    const sampler = { method, topP: 0.9 };
    if (method !== 'ar') sampler.steps = Number($('steps').value);
    if (method === 'esolm') sampler.alpha0 = Number($('alpha0').value);
    if ($('seed').value !== '') sampler.seed = Number($('seed').value);
    const body = { sampler, length: Number($('length').value), stream: true };
    if ($('prompt').value !== '') body.prompt = $('prompt').value;
    return body;
  }

  async function run(ev) {
    ev.preventDefault();
    ctl = new AbortController();
    $('go').disabled = true;
    $('stop').disabled = false;
    $('final').textContent = '';
    $('slots').textContent = '';
    window.esolmReveals = [];
    window.esolmProgress = [];
    const t0 = performance.now();
    let slots = [];
    let seed = '';
    setStatus('running', 'waiting for a batch…');
    try {
      const res = await fetch('/v1/generate', {
        method: 'POST', signal: ctl.signal,
        headers: { 'content-type': 'application/json', ...auth() },
        body: JSON.stringify(request()),
      });
      if (!res.ok) {
        const j = await res.json().catch(() => null);
        throw new Error(j && j.error ? j.error.message : 'HTTP ' + res.status);
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf('\\n\\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let name = 'message', data = '';
          for (const line of block.split('\\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          if (!data || data === '[DONE]') continue;
          const msg = JSON.parse(data);
          if (name === 'start') {
            seed = msg.seed;
            for (let p = 0; p < msg.length; p++) {
              const s = document.createElement('span');
              s.className = 'slot';
              s.dataset.state = 'masked';
              s.textContent = '░';
              $('slots').appendChild(s);
              slots.push(s);
            }
            msg.given.positions.forEach((p, i) => { slots[p].dataset.state = 'given'; slots[p].textContent = show(msg.given.pieces[i]); });
          } else if (name === 'step') {
            for (const s of document.querySelectorAll('.slot.new')) s.classList.remove('new');
            for (let q = 0; q < msg.perSequence; q++) {
              const p = msg.positions[q];
              if (p < 0) continue;
              slots[p].dataset.state = 'revealed';
              slots[p].textContent = show(msg.pieces[q]);
              slots[p].classList.add('new');
              window.esolmReveals.push(p);
            }
            window.esolmProgress.push(document.querySelectorAll('#slots .slot[data-state=revealed]').length);
            setStatus('running', 'step ' + (msg.step + 1) + ' / ' + msg.steps + ' · ' + msg.phase + ' · NFE ' + msg.nfe + ' · ' +
              ((performance.now() - t0) / 1000).toFixed(2) + ' s · seed ' + seed);
          } else if (name === 'result') {
            $('final').textContent = msg.sequences[0].text !== undefined ? msg.sequences[0].text : msg.sequences[0].tokens.join(' ');
            setStatus('done', 'done: ' + msg.steps + ' steps · NFE ' + msg.nfe + ' · ' + ((performance.now() - t0) / 1000).toFixed(2) +
              ' s · seed ' + msg.seed + ' · batch of ' + msg.batch.requests + ' request(s)');
          } else if (name === 'error') {
            throw new Error(msg.error.message);
          }
        }
      }
    } catch (e) {
      setStatus('error', e.name === 'AbortError' ? 'stopped' : 'error: ' + e.message);
    } finally {
      $('go').disabled = false;
      $('stop').disabled = true;
      ctl = null;
    }
  }

  $('form').addEventListener('submit', run);
  $('stop').addEventListener('click', () => ctl && ctl.abort());
})();
</script>
</body>
</html>
`;
