#!/usr/bin/env python3
"""Dump llama.cpp's named intermediate tensors (f32 ones) for a token sequence, to find where
edgellm and llama.cpp diverge, layer by layer (`attn_norm-0`, `Vcur-0`, `kqv_out-0`, `l_out-0`,
...; names as llama.cpp's graph callbacks give them).

Needs llama-cpp-python 0.3.36 (`pip install llama-cpp-python==0.3.36`, a source build).
Usage: llama_cpp_dump.py MODEL.gguf ID,ID,... OUT.npz

Reads ggml_tensor fields by their offsets in ggml 0.3.36's struct layout (type at 0, ne at 16,
nb at 48, data at 248, name at 256): re-check them against ggml.h for another version.
"""
import sys, ctypes, numpy as np, llama_cpp
import llama_cpp.llama as L
M=sys.argv[1]; ids=[int(x) for x in sys.argv[2].split(',')]; out=sys.argv[3]
dump={}
@llama_cpp.ggml_backend_sched_eval_callback
def cb(t, ask, ud):
    base=ctypes.cast(t, ctypes.c_void_p).value
    typ=ctypes.c_int32.from_address(base).value
    name=ctypes.string_at(base+256).decode()
    if ask: return True
    if typ!=0: return True
    ne=[ctypes.c_int64.from_address(base+16+8*i).value for i in range(4)]
    nb=[ctypes.c_size_t.from_address(base+48+8*i).value for i in range(4)]
    data=ctypes.c_void_p.from_address(base+248).value
    if data is None: return True
    n=ne[0]*ne[1]*ne[2]*ne[3]
    if nb[0]!=4 or nb[1]!=4*ne[0] or nb[2]!=nb[1]*ne[1]: return True
    if n>5_000_000: return True
    arr=np.ctypeslib.as_array((ctypes.c_float*n).from_address(data)).copy()
    dump[name]=arr.reshape(ne[3],ne[2],ne[1],ne[0]).squeeze()
    return True
origc = llama_cpp.llama_context_default_params
def pc():
    p=origc(); p.cb_eval=cb; return p
L.llama_cpp.llama_context_default_params = pc
from llama_cpp import Llama
llm = Llama(model_path=M, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
llm.eval(ids)
np.savez(out, **dump)
print(sorted(dump.keys())[:80], len(dump))
