#!/usr/bin/env python3
"""Train, evaluate, sample and export the package's default model: a small byte-level Eso-LM (B).

Everything here is written from docs/MODEL-REFERENCE.md (no code copied from the official repo):
  * the network (§1): EsoLM-DiT with adaLN under constant sigma = 0 conditioning, RoPE over the full
    head dim with half-split rotation at ORIGINAL positions, LayerNorm without bias (eps 1e-5),
    GELU tanh, attention scale 1/sqrt(head_dim), untied input/output embeddings;
  * Eso-LM (B) token orders and masks (§2.1-2.3): diffusion phase = clean tokens first in random
    order, then masks in random order, causal attention in that sorted order; sequential phase =
    the 2N input z0 (+) x with the block-diff mask (block 1), masks left-to-right;
  * the hybrid NELBO (§3.1) with batch_split 0.5 and the ELBO weighting
    alpha0 (1 - eps) / (1 - alpha_t) on the diffusion term (also in training; with alpha0 < 1 this
    weight lies in [alpha0 (1-eps), alpha0 (1-eps)/(1-alpha0)] so it is well behaved);
  * the Eso-LM (B) ancestral sampler (§2.5-2.6) without KV cache (full causal forwards over the
    sorted prefix, which §2.5 states is equal to the cached sampler).

Tokenizer: bytes. token id = UTF-8 byte value (0..255), MASK = 256, vocab 257.

Sub-commands (see tools/README.md):
  bench   time a few training steps (tokens/s) for a config
  train   train for --minutes of wall time (cosine schedule over wall-clock progress) or --steps
  export  evaluate the latest checkpoint, sample, write models/default/{config.json,model.safetensors,README.md}
  parity  write reference logits of the exported (bf16) model for tools/check_default_model.mjs
"""
import argparse
import json
import math
import os
import platform
import struct
import sys
import time

os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # before numpy/torch load the BLAS
os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 257
MASK = 256
EPS = 1e-3  # noise schedule eps: alpha_t = alpha0 (1 - (1 - EPS) t)
NEG = -1e6  # value written into the MASK logit before any softmax

# ----------------------------------------------------------------------------------------------
# network (MODEL-REFERENCE §1)


class VocabEmbed(nn.Module):
    def __init__(self, V, d):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(V, d))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, ids):
        return self.embedding[ids]


class SigmaMap(nn.Module):
    """Timestep embedder; only ever evaluated at sigma = 0 (time_conditioning False)."""

    def __init__(self, cond_dim, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self):
        half = self.freq_dim // 2
        dev = self.mlp[0].weight.device
        # sigma = 0: cos(0) for the first half, sin(0) for the second
        e = torch.cat([torch.ones(half, device=dev), torch.zeros(half, device=dev)])
        return self.mlp(e)


class LayerNormNoBias(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.d = d

    def forward(self, x):
        return F.layer_norm(x.float(), [self.d], eps=1e-5) * self.weight


def rope_tables(pos, head_dim):
    """pos [B, n] (original positions) -> cos, sin [B, 1, n, head_dim] (32-vector repeated twice)."""
    half = head_dim // 2
    inv = 1.0 / (10000.0 ** (torch.arange(0, half, dtype=torch.float32) * 2.0 / head_dim))
    ang = pos.to(torch.float32)[..., None] * inv  # [B, n, half]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos()[:, None], ang.sin()[:, None]


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class Block(nn.Module):
    def __init__(self, d, H, cond_dim, mlp_ratio=4):
        super().__init__()
        self.H = H
        self.norm1 = LayerNormNoBias(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = LayerNormNoBias(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(approximate='tanh'), nn.Linear(mlp_ratio * d, d))
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * d)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x, c, cos, sin, mask):
        B, n, d = x.shape
        H = self.H
        hd = d // H
        sa, ca, ga, sm, cm, gm = self.adaLN_modulation(c).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + ca) + sa
        q, k, v = self.attn_qkv(h).view(B, n, 3, H, hd).permute(2, 0, 3, 1, 4)  # each [B, H, n, hd]
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)) + mask
        o = att.softmax(dim=-1) @ v  # [B, H, n, hd]
        o = o.transpose(1, 2).reshape(B, n, d)
        x = x + ga * self.attn_out(o)
        h = self.norm2(x) * (1 + cm) + sm
        return x + gm * self.mlp(h)

    def forward_seq(self, xz, xx, c, cos, sin, causal, strict):
        """Sequential phase (z0 (+) x, §2.3) without the dense 2n x 2n mask: the x stream is causal over
        itself; z row i attends to x rows j < i (additive mask `strict`) and to itself. Same result as
        forward() on the concatenation with sequential_mask(n); about 4x less attention work."""
        B, n, d = xx.shape
        H = self.H
        hd = d // H
        sa, ca, ga, sm, cm, gm = self.adaLN_modulation(c).chunk(6, dim=-1)
        both = torch.cat([xz, xx], 1)
        h = self.norm1(both) * (1 + ca) + sa
        q, k, v = self.attn_qkv(h).view(B, 2 * n, 3, H, hd).permute(2, 0, 3, 1, 4)
        cos2, sin2 = torch.cat([cos, cos], 2), torch.cat([sin, sin], 2)
        q = apply_rope(q, cos2, sin2)
        k = apply_rope(k, cos2, sin2)
        qz, qx = q[:, :, :n], q[:, :, n:]
        kz, kx = k[:, :, :n], k[:, :, n:]
        vz, vx = v[:, :, :n], v[:, :, n:]
        scale = 1.0 / math.sqrt(hd)
        # x stream: causal (j <= i)
        ax = (qx @ kx.transpose(-1, -2)) * scale + causal
        ox = ax.softmax(-1) @ vx
        # z stream: x keys j < i, plus itself
        azx = (qz @ kx.transpose(-1, -2)) * scale + strict
        azz = (qz * kz).sum(-1, keepdim=True) * scale
        pz = torch.cat([azx, azz], -1).softmax(-1)
        oz = pz[..., :n] @ vx + pz[..., n:] * vz
        o = torch.cat([oz, ox], 2).transpose(1, 2).reshape(B, 2 * n, d)
        both = both + ga * self.attn_out(o)
        h = self.norm2(both) * (1 + cm) + sm
        both = both + gm * self.mlp(h)
        return both[:, :n], both[:, n:]


class FinalLayer(nn.Module):
    def __init__(self, d, V, cond_dim):
        super().__init__()
        self.norm_final = LayerNormNoBias(d)
        self.linear = nn.Linear(d, V)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * d)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class EsoDiT(nn.Module):
    def __init__(self, hidden, heads, blocks, cond_dim, vocab=VOCAB):
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.vocab_embed = VocabEmbed(vocab, hidden)
        self.sigma_map = SigmaMap(cond_dim)
        self.blocks = nn.ModuleList([Block(hidden, heads, cond_dim) for _ in range(blocks)])
        self.output_layer = FinalLayer(hidden, vocab, cond_dim)

    def forward(self, ids, pos, mask):
        """ids, pos: [B, n] (slot order); mask: additive [n, n] (0 / -inf). Returns logits [B, n, V]."""
        c = F.silu(self.sigma_map())
        x = self.vocab_embed(ids)
        cos, sin = rope_tables(pos, self.hidden // self.heads)
        for blk in self.blocks:
            x = blk(x, c, cos, sin, mask)
        return self.output_layer(x, c)

    def forward_seq(self, zs, xs, pos, masks):
        """Sequential-phase forward of z0 (+) x (both [B, n], same sorted positions pos [B, n]);
        returns the z-half logits [B, n, V]. Equal to forward(cat(zs, xs), cat(pos, pos), sequential_mask(n))[:, :n]."""
        c = F.silu(self.sigma_map())
        hz, hx = self.vocab_embed(zs), self.vocab_embed(xs)
        cos, sin = rope_tables(pos, self.hidden // self.heads)
        for blk in self.blocks:
            hz, hx = blk.forward_seq(hz, hx, c, cos, sin, masks['causal'], masks['strict'])
        return self.output_layer(hz, c)


def causal_mask(n):
    return torch.full((n, n), float('-inf')).triu(1)


def sequential_mask(n):
    """2n x 2n additive mask over z (+) x (MODEL-REFERENCE §2.3, block_diff_mask with block size 1)."""
    allow = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    i = torch.arange(n)
    allow[:n, :n] = torch.eye(n, dtype=torch.bool)  # z query i: itself
    allow[:n, n:] = i[None, :] < i[:, None]  # z query i: x keys j < i
    allow[n:, n:] = i[None, :] <= i[:, None]  # x query i: x keys j <= i
    m = torch.zeros(2 * n, 2 * n)
    m[~allow] = float('-inf')
    return m


# ----------------------------------------------------------------------------------------------
# Eso-LM (B) hybrid loss (MODEL-REFERENCE §2.1-2.3, §3.1)


def sort_clean_first(is_mask, masks_left_to_right, gen):
    """Key = is_mask + offset; ascending argsort -> clean first (random order), then masks
    (random order, or left-to-right if masks_left_to_right)."""
    B, n = is_mask.shape
    off = torch.rand(B, n, generator=gen) * 0.9
    if masks_left_to_right:
        lin = torch.arange(n, dtype=torch.float32)[None].expand(B, n) / n
        off = torch.where(is_mask, lin, off)
    return (is_mask.float() + off).argsort(dim=1)


def logp_targets(logits, targets):
    logits = logits.clone()
    logits[..., MASK] = NEG
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])[..., 0]


def diffusion_term(model, x, alpha0, gen, masks_cache):
    """Per-token diffusion term (ELBO weight) summed over rows, and #tokens. x [B, n]."""
    B, n = x.shape
    # antithetic/stratified t over the half-batch, t in [EPS, 1]
    u0 = torch.rand(1, generator=gen)
    t = (u0 + torch.arange(B) / B) % 1.0
    t = (1 - EPS) * t + EPS
    alpha_t = alpha0 * (1 - (1 - EPS) * t)  # [B]
    is_mask = torch.rand(B, n, generator=gen) < (1 - alpha_t)[:, None]
    idx = sort_clean_first(is_mask, False, gen)
    xs = x.gather(1, idx)
    ms = is_mask.gather(1, idx)
    zs = torch.where(ms, torch.full_like(xs, MASK), xs)
    logits = model(zs, idx, masks_cache['causal'])
    nll = -logp_targets(logits, xs)  # [B, n]
    w = (alpha0 * (1 - EPS) / (1 - alpha_t))[:, None]
    return (nll * w * ms).sum(), B * n


def sequential_term(model, x, alpha0, gen, masks_cache, z_all_mask=False):
    """Per-token sequential (reconstruction) term summed over rows, and #tokens.
    z_all_mask: every position masked, identity order = the exact left-to-right likelihood."""
    B, n = x.shape
    if z_all_mask:
        is_mask = torch.ones(B, n, dtype=torch.bool)
        idx = torch.arange(n)[None].expand(B, n)
    else:
        is_mask = torch.rand(B, n, generator=gen) < (1 - alpha0)
        idx = sort_clean_first(is_mask, True, gen)
    xs = x.gather(1, idx)
    ms = is_mask.gather(1, idx)
    zs = torch.where(ms, torch.full_like(xs, MASK), xs)
    logits = model.forward_seq(zs, xs, idx, masks_cache)
    nll = -logp_targets(logits, xs)
    return (nll * ms).sum(), B * n


def make_masks(n):
    return {'causal': causal_mask(n), 'strict': torch.full((n, n), float('-inf')).triu(0)}


# ----------------------------------------------------------------------------------------------
# data


def load_corpus(path, val_frac):
    lines = open(path, 'rb').read().split(b'\n')
    lines = [ln for ln in lines if ln]
    nval = max(1, int(round(len(lines) * val_frac)))
    train = b'\n'.join(lines[:-nval]) + b'\n'
    val = b'\n'.join(lines[-nval:]) + b'\n'
    return (np.frombuffer(train, dtype=np.uint8).astype(np.int64),
            np.frombuffer(val, dtype=np.uint8).astype(np.int64), len(lines), nval)


def random_crops(data, B, L, rng):
    starts = rng.integers(0, len(data) - L, size=B)
    return torch.from_numpy(np.stack([data[s:s + L] for s in starts]))


def val_chunks(data, L):
    n = len(data) // L
    return torch.from_numpy(data[:n * L].reshape(n, L).copy())


# ----------------------------------------------------------------------------------------------
# safetensors (written by hand)


def bf16_round(t):
    return t.detach().to(torch.float32).to(torch.bfloat16).to(torch.float32)


def export_state(model):
    sd = {}
    for k, v in model.state_dict().items():
        sd[k] = v.detach().to(torch.float32).contiguous()
    return sd


def write_safetensors_bf16(path, sd):
    header, blobs, off = {}, [], 0
    for name in sorted(sd):
        t = sd[name].to(torch.bfloat16).contiguous()
        raw = t.view(torch.int16).numpy().astype('<i2').tobytes()
        header[name] = {'dtype': 'BF16', 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header['__metadata__'] = {'format': 'pt'}
    hj = json.dumps(header, separators=(',', ':')).encode()
    hj += b' ' * ((8 - len(hj) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    raw = open(path, 'rb').read()
    hl = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + hl])
    base = 8 + hl
    out = {}
    for name, h in header.items():
        if name == '__metadata__':
            continue
        a, b = h['data_offsets']
        assert h['dtype'] == 'BF16'
        bits = np.frombuffer(raw[base + a:base + b], dtype='<u2').astype(np.uint32) << 16
        out[name] = torch.from_numpy(bits.view(np.float32).copy()).view(*h['shape'])
    return out


# ----------------------------------------------------------------------------------------------
# sampler: Eso-LM (B) ancestral sampling (MODEL-REFERENCE §2.5-2.6), no KV cache


def tokens_per_step(L, T, alpha0, nprng):
    R, dt, out = L, 1.0 / T, []
    alpha = lambda tau: alpha0 * (1 - (1 - EPS) * tau)
    for t in np.linspace(1, dt, T):
        s = t - dt
        p = (alpha(s) - alpha(t)) / (1 - alpha(t))
        n = int(nprng.binomial(R, p))
        if n > 0:
            out.append(n)
            R -= n
    if R != 0 and alpha0 == 1:
        out.append(R)
    return out


def top_p_filter(logits, p):
    srt, order = logits.sort(descending=True)
    cum = srt.softmax(-1).cumsum(-1)
    remove = cum > p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    out = logits.clone()
    out.scatter_(-1, order, srt.masked_fill(remove, float('-inf')))
    return out


@torch.no_grad()
def sample(model, L, alpha0, T, top_p, seed):
    gen = torch.Generator().manual_seed(seed)
    nprng = np.random.default_rng(seed)
    ks = tokens_per_step(L, T, alpha0, nprng)
    D = sum(ks)
    ks = ks + [1] * (L - D)
    sigma = torch.rand(L, generator=gen).argsort()
    sigma[D:] = sigma[D:].sort().values
    z = torch.full((L,), MASK, dtype=torch.long)
    u = 0
    for k in ks:
        n = u + k
        logits = model(z[None, :n], sigma[None, :n], causal_mask(n))[0, u:n].double()
        logits[:, MASK] = NEG
        logits = top_p_filter(logits, top_p)
        U = torch.rand(logits.shape, generator=gen, dtype=torch.float64)
        z[u:n] = (logits - torch.log(-torch.log(U))).argmax(-1)
        u = n
    x = torch.empty(L, dtype=torch.long)
    x[sigma] = z
    return bytes(x.tolist()), len(ks)


# ----------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(model, val, L, alpha0, batch, seed, max_rows=None):
    """Returns (hybrid NELBO nats/byte, seq term, diff term, exact left-to-right NLL nats/byte).
    Every validation row gets BOTH terms (one z0 draw, one t draw); terms are averaged per token
    over the whole validation split and summed (same estimator as training, lower variance)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    X = val_chunks(val, L)
    if max_rows:
        X = X[:max_rows]
    masks = make_masks(L)
    s_seq = s_diff = s_ar = 0.0
    ntok = 0
    for i in range(0, len(X), batch):
        x = X[i:i + batch]
        a, n = sequential_term(model, x, alpha0, gen, masks)
        b, _ = diffusion_term(model, x, alpha0, gen, masks)
        c, _ = sequential_term(model, x, alpha0, gen, masks, z_all_mask=True)
        s_seq += a.item(); s_diff += b.item(); s_ar += c.item(); ntok += n
    model.train()
    return (s_seq + s_diff) / ntok, s_seq / ntok, s_diff / ntok, s_ar / ntok, ntok


# ----------------------------------------------------------------------------------------------
# training


def build(cfg):
    return EsoDiT(cfg['hidden_size'], cfg['n_heads'], cfg['n_blocks'], cfg['cond_dim'])


def lr_at(progress, base, warm_frac, final_frac=0.05):
    if progress < warm_frac:
        return base * progress / warm_frac
    p = min(1.0, (progress - warm_frac) / (1 - warm_frac))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.workdir, exist_ok=True)
    logf = open(os.path.join(args.workdir, 'train.log'), 'a')

    def log(msg):
        line = f'[{time.strftime("%H:%M:%S")}] {msg}'
        print(line, flush=True)
        logf.write(line + '\n')
        logf.flush()

    train_data, val_data, nlines, nval = load_corpus(args.corpus, args.val_frac)
    cfg = dict(arch='esolm', hidden_size=args.hidden, n_heads=args.heads, n_blocks=args.blocks,
               cond_dim=args.cond_dim, vocab_size=VOCAB, mask_index=MASK, length=args.length, tokenizer='bytes')
    model = build(cfg)
    nparam = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=args.wd)
    ckpt_path = os.path.join(args.workdir, 'ckpt.pt')
    state = dict(step=0, elapsed=0.0, tokens=0)
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck['model']); opt.load_state_dict(ck['opt']); state = ck['state']
        log(f'resumed from step {state["step"]}')
    log(f'config {json.dumps(cfg)} params {nparam} train bytes {len(train_data)} val bytes {len(val_data)} '
        f'verses {nlines} (val {nval}) alpha0 {args.alpha0} batch {args.batch} lr {args.lr} threads {args.threads}')
    rng = np.random.default_rng(args.seed + state['step'])
    gen = torch.Generator().manual_seed(args.seed + state['step'])
    masks = make_masks(args.length)
    budget = args.minutes * 60.0 if args.minutes else None
    nd = int(args.batch * args.batch_split)

    def save(tag=''):
        meta = dict(state, cfg=cfg, alpha0=args.alpha0, batch=args.batch, lr=args.lr, wd=args.wd,
                    batch_split=args.batch_split, warm_frac=args.warm_frac, minutes=args.minutes,
                    steps_target=args.steps, threads=args.threads, seed=args.seed, corpus=args.corpus,
                    val_frac=args.val_frac, params=nparam)
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), state=state, meta=meta), ckpt_path + '.tmp')
        os.replace(ckpt_path + '.tmp', ckpt_path)
        log(f'saved checkpoint step {state["step"]} {tag}')

    t_last_save = time.time()
    t0 = time.time() - state['elapsed']
    run_loss = None
    while True:
        elapsed = time.time() - t0
        progress = elapsed / budget if budget else state['step'] / args.steps
        if progress >= 1.0:
            break
        lr = lr_at(progress, args.lr, args.warm_frac)
        for g in opt.param_groups:
            g['lr'] = lr
        x = random_crops(train_data, args.batch, args.length, rng)
        ld, nd_tok = diffusion_term(model, x[:nd], args.alpha0, gen, masks)
        ls, ns_tok = sequential_term(model, x[nd:], args.alpha0, gen, masks)
        loss = ld / nd_tok + ls / ns_tok
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state['step'] += 1
        state['tokens'] += args.batch * args.length
        state['elapsed'] = time.time() - t0
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        if state['step'] % args.log_every == 0:
            log(f'step {state["step"]} loss {loss.item():.4f} ema-loss {run_loss:.4f} ({run_loss / math.log(2):.3f} bpb) '
                f'diff {ld.item() / nd_tok:.4f} seq {ls.item() / ns_tok:.4f} gn {gn:.2f} lr {lr:.2e} '
                f'elapsed {state["elapsed"]:.0f}s tok/s {state["tokens"] / state["elapsed"]:.0f}')
        if args.bench_steps and state['step'] >= args.bench_steps:
            log(f'bench: {state["step"]} steps in {state["elapsed"]:.1f}s = {state["elapsed"] / state["step"]:.3f} s/step, '
                f'{state["tokens"] / state["elapsed"]:.0f} bytes/s')
            return
        if time.time() - t_last_save > args.save_every:
            save()
            t_last_save = time.time()
        if args.eval_every and state['step'] % args.eval_every == 0:
            nelbo, sq, df, ar, _ = evaluate(model, val_data, args.length, args.alpha0, 16, 0, max_rows=64)
            log(f'quick-val (64 rows) nelbo {nelbo / math.log(2):.3f} bpb (seq {sq / math.log(2):.3f} diff {df / math.log(2):.3f}) '
                f'left-to-right {ar / math.log(2):.3f} bpb')
    save('final')
    log(f'training done: {state["step"]} steps, {state["elapsed"]:.0f}s wall')


# ----------------------------------------------------------------------------------------------
# export


def cpu_model_name():
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def export(args):
    torch.set_num_threads(args.threads)
    ck = torch.load(os.path.join(args.workdir, 'ckpt.pt'))
    meta = ck['meta']
    cfg = meta['cfg']
    model = build(cfg)
    model.load_state_dict(ck['model'])
    os.makedirs(args.out, exist_ok=True)
    sd = export_state(model)
    st_path = os.path.join(args.out, 'model.safetensors')
    write_safetensors_bf16(st_path, sd)
    # the training settings, as `esolm convert` records them (sampling and eval default to alpha0)
    training = dict(algo='esolm', alpha0=meta['alpha0'], batch_split=meta['batch_split'],
                    diffusion_attn_mode='causal', sequential_attn_mode='causal', length=cfg['length'])
    with open(os.path.join(args.out, 'config.json'), 'w') as f:
        json.dump({**cfg, 'training': training}, f, indent=2)
        f.write('\n')
    # evaluate and sample with the exported (bf16-rounded) weights
    model.load_state_dict(read_safetensors(st_path))
    model.eval()
    alpha0 = meta['alpha0']
    train_data, val_data, nlines, nval = load_corpus(meta['corpus'], meta['val_frac'])
    t = time.time()
    nelbo, sq, df, ar, ntok = evaluate(model, val_data, cfg['length'], alpha0, 16, 1234, max_rows=args.max_val_rows or None)
    t_eval = time.time() - t
    ln2 = math.log(2)
    print(f'val: hybrid NELBO {nelbo / ln2:.4f} bpb (seq {sq / ln2:.4f}, diff {df / ln2:.4f}); '
          f'left-to-right exact {ar / ln2:.4f} bpb over {ntok} bytes ({t_eval:.0f}s)', flush=True)
    samples = []
    for s in range(args.n_samples):
        txt, nfe = sample(model, cfg['length'], alpha0, args.sample_steps, 0.9, seed=s)
        samples.append((s, nfe, txt))
        print(f'--- sample seed {s} (NFE {nfe})\n{txt.decode("utf-8", "replace")}', flush=True)
    extra = []
    for a0 in [float(v) for v in args.extra_alpha0.split(',') if v.strip()]:
        for s in range(args.n_samples):
            txt, nfe = sample(model, cfg['length'], a0, args.sample_steps, 0.9, seed=s)
            extra.append((a0, s, nfe, txt))
            print(f'--- extra sample alpha0_eval {a0} seed {s} (NFE {nfe})\n{txt.decode("utf-8", "replace")}', flush=True)
    size = os.path.getsize(st_path)
    st = meta
    hours = st['elapsed'] / 60
    fence = '```'
    sample_md = '\n\n'.join(
        f'Seed {s} ({nfe} steps):\n\n{fence}text\n{txt.decode("utf-8", "replace")}\n{fence}' for s, nfe, txt in samples)
    extra_md = ''
    if extra:
        extra_md = ('For comparison (not the training alpha0): the same sampler with a different alpha0 at sampling time '
                    '(alpha0_eval = 0: no diffusion phase, every byte left to right), same seeds and top-p.\n\n' + '\n\n'.join(
                        f'alpha0_eval {a0}, seed {s} ({nfe} steps):\n\n{fence}text\n{txt.decode("utf-8", "replace")}\n{fence}'
                        for a0, s, nfe, txt in extra) + '\n\n')
    readme = f"""# Default model: byte-level Eso-LM (B) trained on the King James Bible

A small Eso-LM (B) (`arch: "esolm"`), shipped so that the package works without downloading
anything. It is a toy for demos and tests: it writes text in the style of the King James Bible,
with real words and phrases but little sense over long spans.

| | |
|---|---|
| architecture | EsoLM-DiT (adaLN, sigma = 0), hidden {cfg['hidden_size']}, {cfg['n_heads']} heads (head dim {cfg['hidden_size'] // cfg['n_heads']}), {cfg['n_blocks']} blocks, cond_dim {cfg['cond_dim']}, MLP 4x |
| vocabulary | bytes: token id = UTF-8 byte value 0..255, MASK = 256, vocab 257 (`tokenizer: "bytes"`) |
| length | {cfg['length']} bytes |
| parameters | {st['params']:,} |
| file | `model.safetensors`, BF16, {size:,} bytes ({size / 2**20:.2f} MiB) |

## Corpus and split

The King James Version as printed by Debian's `bible-kjv` package (`tools/kjv_corpus.sh`): one verse
per line, book/chapter/verse references removed, Genesis 1:1 to Revelation 22:21 in canonical order.
{nlines:,} verses, {len(train_data) + len(val_data):,} bytes. The last {nval:,} verses ({meta['val_frac']:.0%}: 2 Peter 1:1 to
Revelation 22:21, {len(val_data):,} bytes) are the validation split; the rest (Genesis 1:1 to 1 Peter 5:14) is training data.
Training samples are {cfg['length']}-byte crops at random byte offsets of the training text (verses joined by `\\n`).

## Training recipe

- Loss: the Eso-LM (B) hybrid NELBO (MODEL-REFERENCE §3.1), alpha0 = {alpha0}, batch_split {meta['batch_split']}:
  half of each batch gets the diffusion term (t ~ stratified U[1e-3, 1], alpha_t = alpha0 (1 - (1 - 1e-3) t),
  clean tokens first in random order then masks in random order, causal attention in that order, ELBO weight
  alpha0 (1 - 1e-3) / (1 - alpha_t) on each masked byte), the other half the sequential term
  (z0 masks each byte w.p. 1 - alpha0, clean first in random order, masks left to right, 2N input z0 + x with the
  block-diff mask, loss on the masked z positions). Each term is divided by its half's byte count; loss = sum.
  RoPE at original positions; MASK logit set to -1e6 before the log-softmax.
- alpha0 = {alpha0} rather than 0.5: with this little compute a byte-level model places bytes in random order
  poorly, and a smaller alpha0 makes sampling more left-to-right (about {1 - alpha0:.0%} of the bytes) and the samples
  more word-like, while keeping both terms of the hybrid loss.
- AdamW (betas 0.9/0.98, weight decay {meta['wd']}), peak lr {meta['lr']}, linear warmup over the first {meta['warm_frac']:.0%}
  then cosine decay to 5% of peak; the schedule runs on wall-clock progress over a {meta['minutes']}-minute budget.
  Batch {meta['batch']} x {cfg['length']} bytes, grad clip 1, no dropout, no EMA, fp32.
- {st['step']:,} steps, {st['tokens']:,} training bytes seen (about {st['tokens'] / len(train_data):.1f} epochs), wall time {st['elapsed']:.0f} s ({hours:.1f} min).
- Machine: {cpu_model_name()} ({os.cpu_count()} logical CPUs, shared with other work), {meta['threads']} PyTorch thread(s), `nice -n 19`,
  PyTorch {torch.__version__} (Debian python3-torch) with OpenBLAS.{(chr(10) + '- ' + args.note) if args.note else ''}

## Validation likelihood (bits per byte, whole validation split, bf16 weights)

| measure | bits/byte |
|---|---|
| hybrid NELBO at alpha0 = {alpha0} (the training objective, ELBO weighting): sequential term + diffusion term | **{nelbo / ln2:.4f}** ({sq / ln2:.4f} + {df / ln2:.4f}) |
| exact left-to-right likelihood (alpha0 = 0 style: every byte masked, masks in left-to-right order, one 2N sequential forward) | **{ar / ln2:.4f}** |

The NELBO draws one z0 and one t per validation row (each row gets both terms; fixed seed) over all
{ntok:,} validation bytes ({ntok // cfg['length']} rows of {cfg['length']}; the last partial row is dropped). It is a variational upper bound on the
negative log-likelihood of the model's generative process at alpha0 = {alpha0}. The left-to-right number is an exact negative
log-likelihood, of the single left-to-right order (what sampling at alpha0_eval = 0 draws from); it is lower because the model
is much better at predicting a byte from all earlier bytes than at placing bytes in random order. Training at
alpha0 = {alpha0} trains this order only indirectly (almost every z0 there keeps some clean bytes in random order).

The training log is `train.log` next to this file.

## Samples

Eso-LM (B) ancestral sampling (MODEL-REFERENCE §2.5-2.6) at alpha0 = {alpha0}, T = {args.sample_steps} diffusion steps,
nucleus top-p 0.9, L = {cfg['length']}, no prompt; produced by `tools/train_default_model.py export` with the bf16 weights.

{sample_md}

{extra_md}## Reproduce

See `tools/README.md` ("Default model").
"""
    with open(os.path.join(args.out, 'README.md'), 'w') as f:
        f.write(readme)
    log_src = os.path.join(args.workdir, 'train.log')
    if os.path.exists(log_src):
        with open(log_src) as fi, open(os.path.join(args.out, 'train.log'), 'w') as fo:
            fo.write(fi.read())
    print(f'wrote {args.out} ({size} bytes)')


# ----------------------------------------------------------------------------------------------
# parity reference for tools/check_default_model.mjs


def parity(args):
    torch.set_num_threads(args.threads)
    cfg = json.load(open(os.path.join(args.out, 'config.json')))
    model = build(cfg)
    model.load_state_dict(read_safetensors(os.path.join(args.out, 'model.safetensors')))
    model.eval()
    L = cfg['length']
    g = torch.Generator().manual_seed(7)
    cases = []
    text = torch.tensor(list(b'In the beginning God created the heaven'))
    n = len(text)
    with torch.no_grad():
        # 1. plain causal, natural positions
        lg = model(text[None], torch.arange(n)[None], causal_mask(n))[0]
        cases.append(dict(name='causal natural order', attention='causal', tokens=text.tolist(),
                          positions=list(range(n)), logits=lg.flatten().tolist()))
        # 2. Eso-LM (B) diffusion-phase layout: clean first (random order), masks after, permuted positions
        x = torch.tensor(list(b'And God said, Let there be light: and there was light.'))[:48]
        n = len(x)
        ism = torch.rand(n, generator=g) < 0.5
        idx = sort_clean_first(ism[None], False, g)[0]
        z = torch.where(ism[idx], torch.full((n,), MASK), x[idx])
        lg = model(z[None], idx[None], causal_mask(n))[0]
        cases.append(dict(name='causal sorted, masks, permuted positions', attention='causal', tokens=z.tolist(),
                          positions=idx.tolist(), logits=lg.flatten().tolist()))
        # 3. sequential phase: z0 (+) x with masks left-to-right
        x = torch.tensor(list(b'For God so loved the world, that he gave his only begotten Son'))[:60]
        n = len(x)
        ism = torch.rand(n, generator=g) < 0.6
        idx = sort_clean_first(ism[None], True, g)[0]
        xs = x[idx]
        z = torch.where(ism[idx], torch.full((n,), MASK), xs)
        lg = model(torch.cat([z, xs])[None], torch.cat([idx, idx])[None], sequential_mask(n))[0, :n]
        cases.append(dict(name='sequential z0+x', attention='sequential', tokens=z.tolist(), x0=xs.tolist(),
                          positions=idx.tolist(), logits=lg.flatten().tolist()))
        # 4. full-length random bytes of the corpus, causal, L tokens
        data = open(args.corpus, 'rb').read()
        s = 123456
        x = torch.tensor(list(data[s:s + L]))
        lg = model(x[None], torch.arange(L)[None], causal_mask(L))[0]
        cases.append(dict(name=f'causal full length {L}', attention='causal', tokens=x.tolist(),
                          positions=list(range(L)), logits=lg.flatten().tolist()))
    with open(args.parity_out, 'w') as f:
        json.dump(dict(vocab=VOCAB, cases=cases), f)
    print(f'wrote {args.parity_out} ({len(cases)} cases)')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('cmd', choices=['bench', 'train', 'export', 'parity'])
    ap.add_argument('--corpus', default='/tmp/esolm-kjv/kjv.txt')
    ap.add_argument('--workdir', default='/tmp/esolm-train')
    ap.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'models', 'default'))
    ap.add_argument('--val-frac', type=float, default=0.02)
    ap.add_argument('--hidden', type=int, default=192)
    ap.add_argument('--heads', type=int, default=3)
    ap.add_argument('--blocks', type=int, default=4)
    ap.add_argument('--cond-dim', type=int, default=64)
    ap.add_argument('--length', type=int, default=128)
    ap.add_argument('--alpha0', type=float, default=0.25)
    ap.add_argument('--batch-split', type=float, default=0.5)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--wd', type=float, default=0.01)
    ap.add_argument('--warm-frac', type=float, default=0.03)
    ap.add_argument('--minutes', type=float, default=42.0)
    ap.add_argument('--steps', type=int, default=0, help='fixed step count instead of --minutes (0 = use --minutes)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--log-every', type=int, default=20)
    ap.add_argument('--eval-every', type=int, default=400)
    ap.add_argument('--save-every', type=float, default=120.0, help='seconds between checkpoints')
    ap.add_argument('--resume', action='store_true')
    ap.add_argument('--bench-steps', type=int, default=0)
    ap.add_argument('--n-samples', type=int, default=3)
    ap.add_argument('--max-val-rows', type=int, default=0, help='export: evaluate only this many validation rows (0 = all; for tests)')
    ap.add_argument('--sample-steps', type=int, default=128)
    ap.add_argument('--extra-alpha0', default='0', help='export: comma-separated alpha0 values for extra comparison samples (empty = none)')
    ap.add_argument('--note', default='', help='export: an extra line for the training recipe in README.md')
    ap.add_argument('--parity-out', default='/tmp/esolm-parity.json')
    args = ap.parse_args()
    if args.steps:
        args.minutes = 0
    if args.cmd == 'bench':
        args.bench_steps = args.bench_steps or 10
        args.workdir = args.workdir + '-bench'
        args.save_every = 1e9
        args.eval_every = 0
        args.log_every = 1
        args.minutes = 60
        train(args)
    elif args.cmd == 'train':
        train(args)
    elif args.cmd == 'export':
        export(args)
    else:
        parity(args)


if __name__ == '__main__':
    main()
