#!/usr/bin/env python3
"""Per-token comparison of quantized files against a base (why PPL and KLD disagree).

usage: python bench/quant-token-stats.py N_CHUNKS BASE.gguf FILE.gguf...

Runs each model with llama-cpp-python (0.3.36 was used) on the first N_CHUNKS chunks of
data/wikitext-2/wiki.test.raw, 512 tokens each with BOS first, scoring the second half as
llama-perplexity does, and prints per file: mean KLD vs the base, its 99th percentile, same-top
rate, mean entropy, mean ΔNLL (−ln q(target) + ln p(target)), the temperature minimizing KLD
and the ΔNLL at it, ΔNLL split by the base's probability of the target, and the share of ΔNLL
carried by the tokens with the largest KLD. Single-threaded; about 1 minute per file and chunk
pair on a busy 2-core machine.
"""
import os
import sys

import llama_cpp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(sys.argv[1])
files = sys.argv[2:]
text = open(os.path.join(ROOT, "data/wikitext-2/wiki.test.raw")).read()


def run(path):
    m = llama_cpp.Llama(model_path=path, n_ctx=512, n_batch=512, n_ubatch=512, logits_all=True,
                        n_threads=1, verbose=False)
    toks = m.tokenize(text.encode(), add_bos=False, special=False)
    bos = m.token_bos()
    outs, tg = [], []
    for c in range(N):
        ch = toks[c * 512:(c + 1) * 512]
        ch[0] = bos
        m.reset()
        m.eval(ch)
        outs.append(np.array(m.scores[:512], dtype=np.float64)[255:511])
        tg.append(np.array(ch[256:512]))
    del m
    return np.concatenate(outs), np.concatenate(tg)


def lsm(z):
    mx = z.max(-1, keepdims=True)
    return z - mx - np.log(np.exp(z - mx).sum(-1, keepdims=True))


zb, tg = run(files[0])
lb = lsm(zb)
pb = np.exp(lb)
hb = -(pb * lb).sum(-1)
nllb = -lb[np.arange(len(tg)), tg]
print(f"base: entropy {hb.mean():.4f} nll {nllb.mean():.4f}")
for f in files[1:]:
    zq, _ = run(f)
    lq = lsm(zq)
    kld = (pb * (lb - lq)).sum(-1)
    hq = -(np.exp(lq) * lq).sum(-1)
    d = -lq[np.arange(len(tg)), tg] - nllb
    top = (zb.argmax(-1) == zq.argmax(-1)).mean()
    best = None
    for t in np.arange(0.80, 1.31, 0.02):
        lt = lsm(zq / t)
        k = (pb * (lb - lt)).sum(-1).mean()
        if best is None or k < best[1]:
            best = (t, k, (-lt[np.arange(len(tg)), tg] - nllb).mean())
    lo = np.exp(-nllb) < 0.05
    print(f"{os.path.basename(f)}: KLD {kld.mean():.4f} p99 {np.percentile(kld, 99):.3f} "
          f"same-top {100 * top:.2f} entropy {hq.mean():.4f} dNLL {d.mean():.4f} | best T {best[0]:.2f}: "
          f"KLD {best[1]:.4f} dNLL {best[2]:.4f} | dNLL where p_base(target)<0.05 ({100 * lo.mean():.0f}% "
          f"of tokens) {d[lo].mean():.3f}, else {d[~lo].mean():.3f}")
    o = np.argsort(-kld)
    for frac in (0.01, 0.05):
        n = int(len(o) * frac)
        print(f"  top {frac:.0%} KLD tokens: mean KLD {kld[o[:n]].mean():.3f}, share of summed dNLL "
              f"{d[o[:n]].sum() / d.sum():.2f}, mean dNLL of the rest {d[o[n:]].mean():.4f}")
