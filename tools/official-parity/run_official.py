# Makes test/fixtures/official/: runs the official Eso-LMs network (github s-sahoo/Eso-LMs,
# models/dit.py at commit 92e7982, NOT part of this repository: copy it next to this file as
# dit.py) in float32 on random weights of a tiny Eso-LM and dumps the weights (safetensors),
# inputs and logits of every attention mode plus a greedy trace of its KV-cached sampler
# (forward_sample). test/official-parity.test.ts checks our engine against these files.
# Needs PyTorch >= 2.5 (flex_attention), a CUDA GPU (their block masks are built on 'cuda'),
# einops, huggingface_hub and safetensors; omegaconf is stubbed. Usage:
#   OUT=test/fixtures/official python3 tools/official-parity/run_official.py
# Float32 everywhere: autocast is disabled, TF32 off, flex_attention run eagerly.
import contextlib, json, math, os, sys, types
sys.modules.setdefault('omegaconf', types.ModuleType('omegaconf'))
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import torch
import dit
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision('highest')
torch.amp.autocast = lambda *a, **k: contextlib.nullcontext()  # float32 everywhere
dit.fused_flex_attention = lambda q, k, v, mask, dynamic_shape: dit.flex_attention(q, k, v, block_mask=mask)
from safetensors.torch import save_file

out = os.environ.get('OUT', '/tmp/official-out')
os.makedirs(out, exist_ok=True)
NS = types.SimpleNamespace
V, MASK, L, B = 61, 60, 32, 2

def make(mode):
    cfg = NS(algo=NS(causal_attention=False, diffusion_attn_mode=mode, sequential_attn_mode='causal', prepend_token='none'),
             model=NS(hidden_size=64, cond_dim=16, n_heads=4, n_blocks=2, length=L, dropout=0.0, scale_by_sigma=False),
             attn=NS(dynamic_shape=False), sampling=NS(kv_cache=True))
    return dit.EsoLMDiT(cfg, vocab_size=V, mask_index=MASK).cuda().eval()

torch.manual_seed(0)
m = make('causal')
with torch.no_grad():
    for name, p in m.named_parameters():
        if name == 'vocab_embed.embedding':
            p.normal_(0, 1)
        elif p.dim() == 1:
            p.normal_(1.0 if 'norm' in name else 0.0, 0.3)
        else:
            p.normal_(0, 1 / math.sqrt(p.shape[1]))
sd = {k: v.detach().contiguous().cpu() for k, v in m.state_dict().items()}
save_file(sd, os.path.join(out, 'model.safetensors'))
json.dump({'arch': 'esolm', 'hidden_size': 64, 'n_heads': 4, 'n_blocks': 2, 'cond_dim': 16,
           'vocab_size': V, 'mask_index': MASK, 'length': L}, open(os.path.join(out, 'config.json'), 'w'))

g = torch.Generator().manual_seed(1)
sort_idx = torch.stack([torch.randperm(L, generator=g) for _ in range(B)]).cuda()
clean = torch.randint(0, MASK, (B, L), generator=g).cuda()
n_clean = 12
zt = clean.clone(); zt[:, n_clean:] = MASK            # slot order: clean first, then masks
sigma = torch.zeros(B, device='cuda')
cases = {}
def dump(name, tokens, logits, x0=None, extra=None):
    d = {'tokens': tokens.flatten().tolist(), 'positions': sort_idx.flatten().tolist(),
         'logits': logits.float().flatten().tolist()}
    if x0 is not None: d['x0'] = x0.flatten().tolist()
    if extra: d.update(extra)
    cases[name] = d

with torch.no_grad():
    for mode in ['causal', 'bidirectional', 'mixed2']:
        mm = make(mode); mm.load_state_dict(m.state_dict())
        dump(mode, zt, mm(zt, sigma, sort_idx))
    dump('sequential', zt, m(zt, sigma, sort_idx, x0=clean), x0=clean)
    # KV-cached sampling path with greedy picks (the official forward_sample loop).
    ks = [5, 3, 1, 7, 2, 6, 8]
    m.reset_kv_cache(); m.reset_sorted_rotary_cache()
    z = torch.full((B, L), MASK, device='cuda', dtype=torch.long)
    u, p, step_logits = 0, 0, []
    for k in ks:
        lg = m.forward_sample(z, sort_idx, last_k_start=u - p, curr_k_start=u, curr_k_end=u + k)
        step_logits.append(lg.float().flatten().tolist())
        lg = lg.clone(); lg[..., MASK] = -1e6
        z[:, u:u + k] = lg.argmax(-1)
        u += k; p = k
    cases['kv_greedy'] = {'positions': sort_idx.flatten().tolist(), 'steps': ks, 'tokens_slot_order': z.flatten().tolist(),
                          'step_logits': step_logits}
json.dump(cases, open(os.path.join(out, 'cases.json'), 'w'))
print('wrote', out, 'torch', torch.__version__)
