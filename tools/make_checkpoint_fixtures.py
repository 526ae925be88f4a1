#!/usr/bin/env python3
"""Writes the small checkpoint fixtures of test/checkpoint.test.ts into test/fixtures/checkpoints/.

Needs PyTorch (Debian: `apt-get install python3-torch`, then run with /usr/bin/python3):

    /usr/bin/python3 tools/make_checkpoint_fixtures.py

Tiny random models with the official names and parameter order (MODEL-REFERENCE.md §1.2, §1.7),
in the shape test/helpers/random-model.ts uses (TINY: hidden 32, 4 heads, 2 blocks, cond_dim 16,
vocab 61, length 64). The "EMA" weights are the reference; the raw weights are exactly 2x the EMA
weights. Every value is bf16-representable, so any of the float dtypes below stores it exactly.

- tiny-esolm.ckpt: a PyTorch Lightning-style checkpoint written by torch.save (STORED zip with data
  descriptors): state_dict ('backbone.' + names, rotary_emb.inv_freq buffer, one non-backbone I64
  tensor; BF16 / F32 tensors, a transposed view, views at a storage offset into one shared
  storage), ema (decay, num_updates, shadow_params in parameter order, plus one trailing extra
  tensor as a noise-schedule parameter would be; BF16 / F32 / F16 / F64, one transposed view),
  hyper_parameters (an omegaconf-like DictConfig and a tokenizer-like object, as Lightning pickles
  them), epoch, global_step, loops, optimizer_states, callbacks.
- tiny-ar.ckpt: the same for the AR network (no sigma_map, no adaLN), with shadow_params matching
  the parameters exactly, then rewritten as a zip64 archive (zip64 central directory and
  end records, data descriptors) to exercise that path of the reader; torch.load reads it back.
- mdlm-hf/: the esolm EMA weights as Hugging Face kuleshov-group/mdlm-owt publishes them:
  model.safetensors (F32, 'backbone.' names, incl. backbone.rotary_emb.inv_freq) + config.json
  with MDLMConfig fields (hidden_dim, model_length, ...).
- tiny-esolma.ckpt: an Eso-LM (A) Lightning checkpoint as scripts/esolm/train_owt_esolma_alpha0_0d25.sh
  trains it: algo alpha_0 0.25, batch_split 0.5, diffusion_attn_mode mixed2 (shuffled), sequential_attn_mode
  mixed (unshuffled); the esolm EMA weights of tiny-esolm.ckpt (so both convert to the same tensors).
  `--only esolma` writes just this file.
- ar-hub/: the AR EMA weights without the 'backbone.' prefix (a PyTorchModelHubMixin-style
  export) + a nested config.json ({"config": {"model": ..., "algo": ...}, "vocab_size": ...}).
"""
import collections
import json
import os
import struct
import sys
import types
import zipfile
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', 'test', 'fixtures', 'checkpoints')
D, H, NB, C, V, L = 32, 4, 2, 16, 61, 64
FREQ = 256  # frequency_embedding_size of the sigma embedder


def state_dict_layout(arch):
    """(name, shape, is_buffer) in state_dict order; parameters() order = the same minus buffers."""
    adaln = arch != 'ar'
    out = [('vocab_embed.embedding', [V, D], False)]
    if adaln:
        out += [('sigma_map.mlp.0.weight', [C, FREQ], False), ('sigma_map.mlp.0.bias', [C], False),
                ('sigma_map.mlp.2.weight', [C, C], False), ('sigma_map.mlp.2.bias', [C], False)]
    out += [('rotary_emb.inv_freq', [D // H // 2], True)]
    for i in range(NB):
        p = f'blocks.{i}.'
        out += [(p + 'norm1.weight', [D], False), (p + 'attn_qkv.weight', [3 * D, D], False),
                (p + 'attn_out.weight', [D, D], False), (p + 'norm2.weight', [D], False),
                (p + 'mlp.0.weight', [4 * D, D], False), (p + 'mlp.0.bias', [4 * D], False),
                (p + 'mlp.2.weight', [D, 4 * D], False), (p + 'mlp.2.bias', [D], False)]
        if adaln:
            out += [(p + 'adaLN_modulation.weight', [6 * D, C], False), (p + 'adaLN_modulation.bias', [6 * D], False)]
    out += [('output_layer.norm_final.weight', [D], False), ('output_layer.linear.weight', [V, D], False),
            ('output_layer.linear.bias', [V], False)]
    if adaln:
        out += [('output_layer.adaLN_modulation.weight', [2 * D, C], False),
                ('output_layer.adaLN_modulation.bias', [2 * D], False)]
    return out


def inv_freq():
    hd = D // H
    return 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))


def random_weights(arch, seed):
    """EMA (reference) weights, rounded to bf16 values, in float32."""
    g = torch.Generator().manual_seed(seed)
    w = collections.OrderedDict()
    for name, shape, buf in state_dict_layout(arch):
        if buf:
            continue
        n = torch.randn(shape, generator=g)
        if name == 'vocab_embed.embedding':
            t = n
        elif 'norm' in name:
            t = 1 + 0.1 * n
        elif 'adaLN_modulation.weight' in name:
            t = n * (0.5 / C ** 0.5)
        elif 'adaLN_modulation.bias' in name:
            t = 0.1 * n
        elif name.endswith('.bias'):
            t = 0.05 * n
        else:
            t = n * max(0.02, 1 / shape[-1] ** 0.5)
        w[name] = t.bfloat16().float()
    return w


def transposed_view(t):
    """Same values, stored transposed: a non-contiguous view."""
    v = t.t().contiguous().t()
    assert not v.is_contiguous() and torch.equal(v, t)
    return v


# ---- stand-ins for the objects Lightning pickles in hyper_parameters ----
def _module(name):
    """Registers an empty module (and its parent packages) so pickle can name classes in it."""
    parts = name.split('.')
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault('.'.join(parts[:i]), types.ModuleType('.'.join(parts[:i])))
    return sys.modules[name]


_om_dict, _om_nodes, _om_base = _module('omegaconf.dictconfig'), _module('omegaconf.nodes'), _module('omegaconf.base')
_tok = _module('transformers.models.gpt2.tokenization_gpt2_fast')


class DictConfig:
    pass


class AnyNode:
    pass


class ContainerMetadata:
    pass


class GPT2TokenizerFast:
    pass


for cls, mod in ((DictConfig, _om_dict), (AnyNode, _om_nodes), (ContainerMetadata, _om_base), (GPT2TokenizerFast, _tok)):
    cls.__module__ = mod.__name__
    setattr(mod, cls.__name__, cls)


def dictconfig(d, parent=None):
    """An object pickled the way omegaconf's DictConfig is: __dict__ with _content of nodes."""
    obj = DictConfig()
    meta = ContainerMetadata()
    meta.__dict__.update(ref_type=object, object_type=dict, optional=True, key=None, flags={}, key_type=object, element_type=object)
    content = {}
    for k, v in d.items():
        if isinstance(v, dict):
            content[k] = dictconfig(v, obj)
        else:
            node = AnyNode()
            node.__dict__.update(_val=v, _metadata=None, _parent=obj)
            content[k] = node
    obj.__dict__.update(_metadata=meta, _parent=parent, _flags_cache=None, _content=content)
    return obj


# Eso-LM (A) with alpha_0 = 0.25 (scripts/esolm/train_owt_esolma_alpha0_0d25.sh)
ESOLM_A_ALGO = {'alpha_0': 0.25, 'batch_split': 0.5, 'diffusion_attn_mode': 'mixed2', 'diffusion_shuffle': True,
                'sequential_attn_mode': 'mixed', 'sequential_shuffle': False, 'loss_type': 'elbo'}


def hyper_parameters(arch, algo_extra=None):
    algo = {'esolm': {'name': 'esolm', 'backbone': 'dit', 'parameterization': 'subs', 'alpha_0': 1.0,
                      'causal_attention': False, 'time_conditioning': False},
            'ar': {'name': 'ar', 'backbone': 'dit', 'parameterization': 'ar', 'causal_attention': True}}[arch]
    algo = {**algo, **(algo_extra or {})}
    cfg = dictconfig({
        'model': {'name': 'tiny', 'type': 'ddit', 'hidden_size': D, 'cond_dim': C, 'length': L,
                  'n_blocks': NB, 'n_heads': H, 'scale_by_sigma': True, 'dropout': 0.1, 'tie_word_embeddings': False},
        'algo': algo,
        'training': {'ema': 0.9999, 'sampling_eps': 1e-3},
        'data': {'tokenizer_name_or_path': 'gpt2', 'wrap': True},
    })
    tok = GPT2TokenizerFast()
    tok.__dict__.update(name_or_path='gpt2', init_kwargs={'model_max_length': 1024},
                        _tokenizer_state=b'{"version": "1.0"}', special_ids={50256})
    return {'config': cfg, 'tokenizer': tok}


def lightning_checkpoint(arch, ema, extra_shadow, algo_extra=None):
    layout = state_dict_layout(arch)
    sd = collections.OrderedDict()
    # raw weights = 2 * EMA; F32 norm weights as views into one shared storage
    norms = [n for n, _, b in layout if not b and 'norm' in n]
    shared = torch.cat([2 * ema[n] for n in norms])
    offsets, at = {}, 0
    for n in norms:
        offsets[n] = at
        at += ema[n].numel()
    for name, shape, buf in layout:
        if buf:
            sd['backbone.' + name] = inv_freq()
            continue
        raw = 2 * ema[name]
        if name in offsets:
            t = shared[offsets[name]:offsets[name] + raw.numel()]
        elif name == 'blocks.0.attn_out.weight':
            t = transposed_view(raw)
        elif raw.dim() == 1:
            t = raw.clone()
        else:
            t = raw.bfloat16()
        sd['backbone.' + name] = t
    sd['train_metrics.count'] = torch.arange(5, dtype=torch.int64) * 1000000007  # I64, not a backbone tensor
    shadow = []
    for name, shape, buf in layout:
        if buf:
            continue
        e = ema[name]
        if name == 'output_layer.linear.weight':
            t = transposed_view(e)
        elif name == 'output_layer.norm_final.weight':
            t = e.half()
        elif name == 'sigma_map.mlp.2.bias':
            t = e.double()
        elif e.dim() == 1:
            t = e.clone()
        else:
            t = e.bfloat16()
        shadow.append(t)
    if extra_shadow:
        shadow.append(torch.zeros(3))  # a trailing noise-schedule parameter (chained after the backbone's)
    return {
        'epoch': 1,
        'global_step': 10,
        'pytorch-lightning_version': '2.5.0',
        'state_dict': sd,
        'loops': {'fit_loop': {'state_dict': {}, 'epoch_loop.state_dict': {'_batches_that_stepped': 10},
                               'epoch_progress': {'total': {'ready': 2, 'completed': 1}}}},
        'callbacks': {"ModelCheckpoint{'monitor': None}": {'best_model_score': None, 'kth_value': torch.tensor(float('inf')),
                                                            'dirpath': '/tmp/ckpts', 'best_k_models': {}}},
        'optimizer_states': [{'state': {0: {'step': torch.tensor(10.0)}},
                              'param_groups': [{'lr': 3e-4, 'betas': (0.9, 0.999), 'weight_decay': 0.0, 'params': [0]}]}],
        'lr_schedulers': [{'last_epoch': 10, '_step_count': 11}],
        'ema': {'decay': 0.9999, 'num_updates': 10, 'shadow_params': shadow},
        'hparams_name': 'kwargs',
        'hyper_parameters': hyper_parameters(arch, algo_extra),
    }


def write_safetensors(path, tensors):
    """safetensors by hand: u64 header length, JSON header padded to 8 bytes, little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        dtype = {torch.float32: 'F32', torch.bfloat16: 'BF16', torch.float16: 'F16'}[t.dtype]
        data = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {'dtype': dtype, 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header['__metadata__'] = {'format': 'pt'}
    js = json.dumps(header, separators=(',', ':')).encode()
    js += b' ' * ((8 - (8 + len(js)) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)


def rewrite_as_zip64(path):
    """Rewrites a torch.save archive as zip64 (zip64 extra fields, zip64 end records) with data
    descriptors and 64-byte aligned data, entries STORED and in the same order."""
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    out, cd = bytearray(), bytearray()
    for name, data in entries:
        nb = name.encode()
        off = len(out)
        crc = zlib.crc32(data)
        z64 = struct.pack('<HHQQ', 1, 16, 0, 0)
        pad = (-(off + 30 + len(nb) + len(z64) + 4)) % 64
        extra = z64 + struct.pack('<HH', 0x4246, pad) + b'Z' * pad  # 'FB' padding field, as torch writes
        out += struct.pack('<IHHHHHIIIHH', 0x04034b50, 45, 0x0808, 0, 0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(extra))
        out += nb + extra
        assert len(out) % 64 == 0
        out += data
        out += struct.pack('<IIQQ', 0x08074b50, crc, len(data), len(data))
        cextra = struct.pack('<HHQQQ', 1, 24, len(data), len(data), off)
        cd += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 45, 45, 0x0808, 0, 0, 0, crc,
                          0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF)
        cd += nb + cextra
    cd_off = len(out)
    out += cd
    z64_off = len(out)
    n = len(entries)
    out += struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 45, 45, 0, 0, n, n, len(cd), cd_off)
    out += struct.pack('<IIQI', 0x07064b50, 0, z64_off, 1)
    out += struct.pack('<IHHHHIIH', 0x06054b50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, 'wb') as f:
        f.write(out)


def check_same(a, b, where):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() \
            and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for k in a:
            check_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            check_same(x, y, f'{where}[{i}]')


def write_esolm_a():
    ema = random_weights('esolm', 1234)
    ck = lightning_checkpoint('esolm', ema, extra_shadow=False, algo_extra=ESOLM_A_ALGO)
    p = os.path.join(OUT, 'tiny-esolma.ckpt')
    torch.save(ck, p)
    back = torch.load(p)
    check_same(ck['state_dict'], back['state_dict'], 'state_dict')
    check_same(ck['ema'], back['ema'], 'ema')
    print(f'tiny-esolma.ckpt {os.path.getsize(p):8d} bytes')


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    if sys.argv[1:] == ['--only', 'esolma']:
        write_esolm_a()
        return

    # Eso-LM: Lightning .ckpt + the MDLM-style HF export of its EMA weights
    ema = random_weights('esolm', 1234)
    ck = lightning_checkpoint('esolm', ema, extra_shadow=True)
    p = os.path.join(OUT, 'tiny-esolm.ckpt')
    torch.save(ck, p)
    back = torch.load(p)
    check_same(ck['state_dict'], back['state_dict'], 'state_dict')
    check_same(ck['ema'], back['ema'], 'ema')

    hf = os.path.join(OUT, 'mdlm-hf')
    os.makedirs(hf, exist_ok=True)
    tensors = collections.OrderedDict()
    for name, shape, buf in state_dict_layout('esolm'):
        tensors['backbone.' + name] = inv_freq() if buf else ema[name]
    write_safetensors(os.path.join(hf, 'model.safetensors'), tensors)
    with open(os.path.join(hf, 'config.json'), 'w') as f:
        json.dump({'_name_or_path': 'kuleshov-group/mdlm-owt', 'architectures': ['MDLM'],
                   'auto_map': {'AutoConfig': 'configuration_mdlm.MDLMConfig', 'AutoModelForMaskedLM': 'modeling_mdlm.MDLM'},
                   'model_type': 'mdlm', 'vocab_size': V, 'model_length': L, 'hidden_dim': D, 'cond_dim': C,
                   'n_blocks': NB, 'n_heads': H, 'dropout': 0.1, 'time_conditioning': False, 'return_dict': False,
                   'torch_dtype': 'float32', 'transformers_version': '4.38.2'}, f, indent=2)

    # AR: Lightning .ckpt rewritten as zip64 + a hub export without the 'backbone.' prefix
    ema_ar = random_weights('ar', 4321)
    ck = lightning_checkpoint('ar', ema_ar, extra_shadow=False)
    p = os.path.join(OUT, 'tiny-ar.ckpt')
    torch.save(ck, p)
    rewrite_as_zip64(p)
    back = torch.load(p)
    check_same(ck['state_dict'], back['state_dict'], 'state_dict')
    check_same(ck['ema'], back['ema'], 'ema')

    hub = os.path.join(OUT, 'ar-hub')
    os.makedirs(hub, exist_ok=True)
    tensors = collections.OrderedDict()
    for name, shape, buf in state_dict_layout('ar'):
        tensors[name] = inv_freq() if buf else ema_ar[name]
    write_safetensors(os.path.join(hub, 'model.safetensors'), tensors)
    with open(os.path.join(hub, 'config.json'), 'w') as f:
        json.dump({'config': {'model': {'name': 'tiny', 'type': 'ddit', 'hidden_size': D, 'cond_dim': C, 'length': L,
                                        'n_blocks': NB, 'n_heads': H, 'dropout': 0.1},
                              'algo': {'name': 'ar', 'backbone': 'dit', 'causal_attention': True}},
                   'vocab_size': V}, f, indent=2)

    write_esolm_a()

    for root, _, files in os.walk(OUT):
        for fn in sorted(files):
            fp = os.path.join(root, fn)
            print(f'{os.path.relpath(fp, OUT):32s} {os.path.getsize(fp):8d} bytes')


if __name__ == '__main__':
    main()
