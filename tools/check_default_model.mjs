// Parity check of the default model: our engine's logits vs the PyTorch reference of
// tools/train_default_model.py (same bf16 weights, evaluated in float32).
//
//   /usr/bin/python3 tools/train_default_model.py parity --parity-out /tmp/esolm-parity.json
//   node tools/check_default_model.mjs [/tmp/esolm-parity.json] [models/default] [tolerance]
//
// Cases: causal forward in natural order; the Eso-LM (B) diffusion layout (clean bytes first in
// random order, masks after, permuted original positions); the sequential phase z0 (+) x; a full-length
// causal forward. Exits 1 when any max |diff| exceeds the tolerance (default 1e-3).
import { readFileSync } from 'node:fs';
import { Model } from '../dist/index.js';

const [refPath = '/tmp/esolm-parity.json', dir = 'models/default', tolArg = '1e-3'] = process.argv.slice(2);
const tol = Number(tolArg);
const ref = JSON.parse(readFileSync(refPath, 'utf8'));
const model = await Model.load(dir, { backend: 'cpu' });
let worst = 0;
for (const c of ref.cases) {
  const opts = {
    tokens: Int32Array.from(c.tokens),
    positions: Int32Array.from(c.positions),
    attention: c.attention,
  };
  if (c.x0) opts.x0 = Int32Array.from(c.x0);
  const got = await model.forward(opts);
  if (got.length !== c.logits.length) throw new Error(`${c.name}: ${got.length} logits, expected ${c.logits.length}`);
  let maxDiff = 0, maxAbs = 0, argmaxAgree = 0;
  const V = ref.vocab, n = c.logits.length / V;
  for (let i = 0; i < got.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - c.logits[i]));
    maxAbs = Math.max(maxAbs, Math.abs(c.logits[i]));
  }
  for (let r = 0; r < n; r++) {
    let a = 0, b = 0;
    for (let v = 1; v < V - 1; v++) {
      if (got[r * V + v] > got[r * V + a]) a = v;
      if (c.logits[r * V + v] > c.logits[r * V + b]) b = v;
    }
    if (a === b) argmaxAgree++;
  }
  worst = Math.max(worst, maxDiff);
  console.log(`${c.name.padEnd(44)} n=${String(n).padStart(3)}  max|diff| ${maxDiff.toExponential(2)}  ` +
    `(max|logit| ${maxAbs.toFixed(2)}, argmax agree ${argmaxAgree}/${n})`);
}
model.dispose();
console.log(`worst max|diff| ${worst.toExponential(2)} (tolerance ${tol}) -> ${worst <= tol ? 'PASS' : 'FAIL'}`);
process.exit(worst <= tol ? 0 : 1);
