#!/usr/bin/env python3
"""Compare two GGUF files with the `gguf` Python package (llama.cpp's gguf-py), independently of
edgellm's reader: metadata keys/values, tensor names, order, dims and types, and data bytes.

usage: scripts/compare-gguf.py A.gguf B.gguf
Prints the differences; exits 0 when every tensor's type, shape and bytes agree.
"""
import sys

import gguf

a, b = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])


def meta(r):
    out = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        try:
            v = f.contents()
        except Exception:  # older gguf-py
            v = [bytes(f.parts[i]) for i in f.data]
        out[k] = v if not isinstance(v, list) or len(v) < 20 else ("list", len(v), str(v[:3]))
    return out


ma, mb = meta(a), meta(b)
for k in sorted(set(ma) | set(mb)):
    if ma.get(k) != mb.get(k):
        print(f"metadata {k}: {str(ma.get(k))[:80]} | {str(mb.get(k))[:80]}")
if list(ma) != list(mb):
    print("metadata order differs")
ta, tb = a.tensors, b.tensors
bad = 0
if [t.name for t in ta] != [t.name for t in tb]:
    print("tensor order differs (llama-quantize orders by layer, then name); comparing by name")
byname = {t.name: t for t in tb}
if set(byname) != {t.name for t in ta}:
    print("tensor name sets differ")
    bad += 1
for x in ta:
    y = byname.get(x.name)
    if y is None:
        continue
    if (x.tensor_type, list(x.shape)) != (y.tensor_type, list(y.shape)):
        print(f"{x.name}: {x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}")
        bad += 1
    elif bytes(x.data.tobytes()) != bytes(y.data.tobytes()):
        print(f"{x.name}: {x.tensor_type.name} data differs")
        bad += 1
print(f"{len(ta)} tensors, {bad} differ")
sys.exit(1 if bad else 0)
