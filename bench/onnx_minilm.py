#!/usr/bin/env python3
"""ONNX Runtime side of bench/vs-onnxruntime: a BERT sentence encoder as an ONNX graph, run on
the STS-B test sentences exactly as `edgellm eval sts` runs them.

The graph is written here from the model's config.json and model.safetensors (no PyTorch):
embeddings + LayerNorm, post-norm encoder layers (the MatMul/Add/Reshape/Transpose/Softmax
pattern of a Hugging Face export, erf GELU), masked mean pooling and L2 normalization. It is
then passed through onnxruntime's BERT optimizer (attention, LayerNorm, GELU and
bias fusions: the form ORT recommends for BERT on CPU), and an int8 copy is made with
onnxruntime's dynamic quantization (weights int8 per tensor, activations quantized at run
time): ORT fp32 and ORT int8.

Sentences are tokenized by the model's tokenizer.json (the `tokenizers` library), sorted by
length (longest first, as sentence-transformers and edgellm do), cut into batches, each padded
to its longest. Timing covers tokenization, padding and inference, like edgellm's figure.

Usage (from bench/vs-onnxruntime):
  onnx_minilm.py export MODEL_DIR OUT_DIR                 -> OUT_DIR/fp32.onnx, OUT_DIR/int8.onnx
  onnx_minilm.py run ONNX MODEL_DIR STS_TSV --threads 2 --batch 32 [--check EMB_JSON]
                                                          -> one JSON line: spearman, sentences/s
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np


def load_pairs(path):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) < 3:
                continue
            try:
                score = float(cols[0])
            except ValueError:
                if i == 0:
                    continue  # header
                raise
            pairs.append((score, cols[1], cols[2]))
    return pairs


def spearman(a, b):
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return np.array(r)

    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / math.sqrt((ra * ra).sum() * (rb * rb).sum()))


def export(model_dir, out_dir):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in w.items()}
    d, nh, nl = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    hd = d // nh
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    if cfg.get("hidden_act", "gelu") != "gelu":
        sys.exit(f"only erf GELU is written, not {cfg.get('hidden_act')}")

    inits, nodes = [], []
    counter = [0]

    def name(base):
        counter[0] += 1
        return f"{base}_{counter[0]}"

    def const(n, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def node(op, inputs, **attrs):
        out = name(op)
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def layer_norm(x, prefix):
        g = const(prefix + ".weight", w[prefix + ".weight"])
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=eps)

    def dense(x, prefix):
        wt = const(prefix + ".weight_t", np.ascontiguousarray(w[prefix + ".weight"].T))
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, wt]), b])

    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    word = node("Gather", [const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]), ids])
    seq_len = node("Gather", [node("Shape", [ids]), const("one_i", np.array(1, dtype=np.int64))], axis=0)
    arange = node("Range", [const("zero_i", np.array(0, dtype=np.int64)), seq_len, "one_i"])
    positions = node("Unsqueeze", [arange, const("axes0", np.array([0], dtype=np.int64))])
    pos = node("Gather", [const("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]), positions])
    typ = node("Gather", [const("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"]), types])
    x = layer_norm(node("Add", [node("Add", [word, pos]), typ]), "embeddings.LayerNorm")

    maskf = node("Cast", [mask], to=TensorProto.FLOAT)
    # Additive key mask [B, 1, 1, L]: 0 for a token, -10000 for padding (the subgraph of a
    # Hugging Face export, which ORT's attention fusion recognises).
    m1 = node("Unsqueeze", [mask, const("axes1u", np.array([1], dtype=np.int64))])
    m2 = node("Unsqueeze", [m1, const("axes2u", np.array([2], dtype=np.int64))])
    inverted = node("Sub", [const("one_f", np.array(1.0, dtype=np.float32)), node("Cast", [m2], to=TensorProto.FLOAT)])
    bias = node("Mul", [inverted, const("neg_big", np.array(-10000.0, dtype=np.float32))])
    split_shape = const("split_shape", np.array([0, 0, nh, hd], dtype=np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, d], dtype=np.int64))
    scale = const("scale", np.array(math.sqrt(hd), dtype=np.float32))
    for l in range(nl):
        p = f"encoder.layer.{l}"
        q = node("Transpose", [node("Reshape", [dense(x, f"{p}.attention.self.query"), split_shape])], perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [dense(x, f"{p}.attention.self.key"), split_shape])], perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [dense(x, f"{p}.attention.self.value"), split_shape])], perm=[0, 2, 1, 3])
        scores = node("Add", [node("Div", [node("MatMul", [q, k]), scale]), bias])
        probs = node("Softmax", [scores], axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3]), merge_shape])
        x = layer_norm(node("Add", [dense(ctx, f"{p}.attention.output.dense"), x]), f"{p}.attention.output.LayerNorm")
        h = dense(x, f"{p}.intermediate.dense")
        # erf GELU: 0.5 · h · (1 + erf(h / √2))
        root2 = const(f"sqrt2_{l}", np.array(math.sqrt(2.0), dtype=np.float32))
        one = const(f"one_{l}", np.array(1.0, dtype=np.float32))
        half = const(f"half_{l}", np.array(0.5, dtype=np.float32))
        erf1 = node("Add", [node("Erf", [node("Div", [h, root2])]), one])
        gelu = node("Mul", [node("Mul", [h, erf1]), half])
        x = layer_norm(node("Add", [dense(gelu, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm")

    m3 = node("Unsqueeze", [maskf, const("axes2", np.array([2], dtype=np.int64))])
    summed = node("ReduceSum", [node("Mul", [x, m3]), const("axes1", np.array([1], dtype=np.int64))], keepdims=0)
    count = node("ReduceSum", [maskf, "axes1"], keepdims=1)
    mean = node("Div", [summed, count])
    norm = node("ReduceL2", [mean], axes=[-1], keepdims=1)  # axes an attribute before opset 18
    emb = node("Div", [mean, node("Max", [norm, const("tiny", np.array(1e-12, dtype=np.float32))])])
    nodes.append(helper.make_node("Identity", [emb], ["sentence_embedding"], name="out"))

    def inp(n):
        return helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])

    graph = helper.make_graph(
        nodes,
        "minilm",
        [inp(ids), inp(mask), inp(types)],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", d])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgellm-bench")
    onnx.checker.check_model(model)
    os.makedirs(out_dir, exist_ok=True)
    raw = os.path.join(out_dir, "raw.onnx")
    onnx.save(model, raw)

    from onnxruntime.transformers.optimizer import optimize_model
    from onnxruntime.quantization import QuantType, quantize_dynamic

    opt = optimize_model(raw, model_type="bert", num_heads=nh, hidden_size=d, opt_level=0)
    fused = opt.get_fused_operator_statistics()
    fp32 = os.path.join(out_dir, "fp32.onnx")
    opt.save_model_to_file(fp32)
    int8 = os.path.join(out_dir, "int8.onnx")
    print(json.dumps({"fused": {k: v for k, v in fused.items() if v}}), file=sys.stderr)
    quantize_dynamic(
        fp32,
        int8,
        weight_type=QuantType.QInt8,
        per_channel=False,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    print(json.dumps({"fp32": fp32, "int8": int8, "fused": {k: v for k, v in fused.items() if v}}))


def run(onnx_path, model_dir, sts_path, threads, batch, rounds):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    pairs = load_pairs(sts_path)
    texts = [p[1] for p in pairs] + [p[2] for p in pairs]
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(512)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    def embed_all():
        enc = tok.encode_batch(texts)
        ids = [e.ids for e in enc]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = [None] * len(ids)
        for s in range(0, len(order), batch):
            chunk = order[s : s + batch]
            L = max(len(ids[i]) for i in chunk)
            a = np.zeros((len(chunk), L), dtype=np.int64)
            m = np.zeros((len(chunk), L), dtype=np.int64)
            for r, i in enumerate(chunk):
                a[r, : len(ids[i])] = ids[i]
                m[r, : len(ids[i])] = 1
            e = sess.run(None, {"input_ids": a, "attention_mask": m, "token_type_ids": np.zeros_like(a)})[0]
            for r, i in enumerate(chunk):
                out[i] = e[r]
        return np.stack(out)

    embed_all()  # warm-up
    times, emb = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        emb = embed_all()
        times.append(time.perf_counter() - t)
    n = len(pairs)
    cos = (emb[:n] * emb[n:]).sum(1) / (np.linalg.norm(emb[:n], axis=1) * np.linalg.norm(emb[n:], axis=1))
    sec = sorted(times)[len(times) // 2]
    print(
        json.dumps(
            {
                "spearman": 100.0 * spearman(list(cos), [p[0] for p in pairs]),
                "sentences": len(texts),
                "seconds": sec,
                "sentences_per_s": len(texts) / sec,
                "threads": threads,
                "batch": batch,
                "ort": ort.__version__,
            }
        )
    )
    return emb


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("model_dir")
    e.add_argument("out_dir")
    r = sub.add_parser("run")
    r.add_argument("onnx")
    r.add_argument("model_dir")
    r.add_argument("sts")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument("--save", help="write the embeddings (npy) here")
    a = ap.parse_args()
    if a.cmd == "export":
        export(a.model_dir, a.out_dir)
    else:
        emb = run(a.onnx, a.model_dir, a.sts, a.threads, a.batch, a.rounds)
        if a.save:
            np.save(a.save, emb)


if __name__ == "__main__":
    main()
