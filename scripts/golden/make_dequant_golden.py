#!/usr/bin/env python3
"""Golden values for edgellm-core's quant formats, from independent references.

Writes tests/golden/dequant/golden.json:

* "dequant": for every type, a few blocks of deterministic pseudo-random bytes (scale fields
  set to sane finite values, plus one block with extreme scales and one all-zero block) and the
  f32 values that `gguf.quants.dequantize` (gguf-py) decodes them to. Q8_K has no gguf-py
  decoder; its values come from the one-line formula `d * q` in numpy. When --ggml-lib is
  given, every case is also decoded by ggml's C `dequantize_row_*` and must agree bit for bit.

* "quantize": input floats and the bytes a reference quantizer makes of them.
  - F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: `gguf.quants.quantize` (gguf-py); with
    --ggml-lib they are also checked against ggml's C `quantize_row_*_ref`.
  - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K: gguf-py has no quantizer for these, so they are only
    written when --ggml-lib is given: ggml's `ggml_quantize_chunk` with no importance matrix
    (what llama-quantize runs), checked against `quantize_row_*_ref` (Q8_K: the latter only).

Floats are stored as hex of their little-endian f32 bytes (exact, and NaN/inf survive).

Usage:
    pip install gguf==0.19.0 numpy
    python3 scripts/golden/make_dequant_golden.py \
        [--ggml-lib /path/to/libggml-base.so] [--out tests/golden/dequant/golden.json]

See tests/golden/dequant/README.md for how the committed file was made.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]

# name -> (ggml type id, block size, bytes per block)
TYPES = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "BF16": (30, 1, 2),
    "Q4_0": (2, 32, 18),
    "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22),
    "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34),
    "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
    "Q8_K": (15, 256, 292),
}

# Scale fields of each block type: (byte offset, "f16" | "f32", role); role "d" is a scale,
# "m" an offset (Q4_1/Q5_1 minimum) or a scale of minimums (k-quant dmin).
SCALE_FIELDS = {
    "Q4_0": [(0, "f16", "d")],
    "Q4_1": [(0, "f16", "d"), (2, "f16", "m")],
    "Q5_0": [(0, "f16", "d")],
    "Q5_1": [(0, "f16", "d"), (2, "f16", "m")],
    "Q8_0": [(0, "f16", "d")],
    "Q2_K": [(80, "f16", "d"), (82, "f16", "m")],
    "Q3_K": [(108, "f16", "d")],
    "Q4_K": [(0, "f16", "d"), (2, "f16", "m")],
    "Q5_K": [(0, "f16", "d"), (2, "f16", "m")],
    "Q6_K": [(208, "f16", "d")],
    "Q8_K": [(0, "f32", "d")],
}

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]


def f32_hex(a: np.ndarray) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def seed_of(name: str, salt: int) -> int:
    return (sum(ord(c) * 131**i for i, c in enumerate(name)) * 1_000_003 + salt) % 2**32


def put_scale(block: np.ndarray, off: int, kind: str, value: float) -> None:
    dt = "<f2" if kind == "f16" else "<f4"
    raw = np.array([value], dtype=dt).view(np.uint8)
    block[off : off + raw.size] = raw


# ----------------------------------------------------------------------------- dequant inputs


def dequant_blocks(name: str) -> tuple[np.ndarray, list[str]]:
    """Bytes of a few blocks of `name` and a label per block."""
    _, bs, ts = TYPES[name]
    rng = np.random.default_rng(seed_of(name, 1))
    if bs == 1:
        return plain_dequant_bytes(name, rng)
    labels = ["random", "random", "extreme-large", "extreme-small", "zero"]
    blocks = rng.integers(0, 256, size=(len(labels), ts), dtype=np.uint8)
    for i, label in enumerate(labels):
        for off, kind, role in SCALE_FIELDS[name]:
            if label == "random":
                v = float(rng.uniform(1e-3, 0.05))
                if role == "m" and name in ("Q4_1", "Q5_1"):
                    v = -v * 8  # a typical negative block minimum
            elif label == "extreme-large":
                v = 65504.0 if kind == "f16" else 3.0e34  # f16 max; f32 large but finite
                if role == "m" and name in ("Q4_1", "Q5_1"):
                    v = -65504.0
            else:  # extreme-small: subnormal f16 (2^-24 · 3) / tiny f32
                v = 1.79e-7 if kind == "f16" else 1.0e-38
            put_scale(blocks[i], off, kind, v)
        if label == "zero":
            blocks[i][:] = 0
    return blocks.reshape(-1), labels


def plain_dequant_bytes(name: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    n = 96
    if name == "F32":
        vals = np.concatenate(
            [
                rng.standard_normal(48).astype(np.float32),
                (rng.standard_normal(16) * 1e30).astype(np.float32),
                (rng.standard_normal(16) * 1e-40).astype(np.float32),  # f32 subnormals
                np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, -1.0, 1.0e-45], dtype=np.float32),
                rng.standard_normal(8).astype(np.float32),
            ]
        )
        return vals.view(np.uint8), ["values"]
    bits = rng.integers(0, 65536, size=n, dtype=np.uint16)
    if name == "F16":
        # Keep NaN patterns out: NaN payload handling differs between software and F16C
        # conversions. Infinities, subnormals and signed zeros stay in.
        nan = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x03FF) != 0)
        bits[nan] &= 0xFC00 | 0x01FF
        bits[nan] ^= 0x4000  # move the exponent off all-ones
        bits[:6] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x7BFF]
    else:  # BF16: a pure bit shift, NaNs included
        bits[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001]
    return bits.astype("<u2").view(np.uint8), ["values"]


def ref_dequant(name: str, data: np.ndarray) -> np.ndarray:
    if name == "Q8_K":
        blocks = data.reshape(-1, 292)
        d = blocks[:, :4].copy().view("<f4").astype(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1).astype(np.float32)
    return np.asarray(quants.dequantize(data, T[name]), dtype=np.float32).reshape(-1)


# ---------------------------------------------------------------------------- quantize inputs


def quant_inputs(name: str) -> tuple[np.ndarray, list[str]]:
    """A few blocks of input floats with a label per block."""
    _, bs, _ = TYPES[name]
    rng = np.random.default_rng(seed_of(name, 2))
    bs_eff = max(bs, 32)
    blocks: list[np.ndarray] = []
    labels: list[str] = []

    def add(label: str, x: np.ndarray) -> None:
        labels.append(label)
        blocks.append(np.asarray(x, dtype=np.float32).reshape(bs_eff))

    add("gaussian", rng.standard_normal(bs_eff))
    add("gaussian-scaled", rng.standard_normal(bs_eff) * 0.02 + 0.01)
    heavy = rng.standard_t(3, bs_eff)
    heavy[rng.integers(0, bs_eff, size=max(1, bs_eff // 64))] *= 20
    add("heavy-tailed", heavy)
    add("positive", np.abs(rng.standard_normal(bs_eff)) + 0.5)
    # Values on a grid, so that many land exactly on rounding ties.
    add("ties", rng.integers(-16, 17, size=bs_eff) * 0.5)
    add("zero", np.zeros(bs_eff))
    add("small", rng.standard_normal(bs_eff) * 1e-6)  # f16 block scales underflow
    add("tiny", rng.standard_normal(bs_eff) * 1e-10)
    add("large", rng.standard_normal(bs_eff) * 1e4)
    add("constant", np.full(bs_eff, 0.75))
    add("one-spike", np.where(np.arange(bs_eff) == 5, -3.0, 0.0))
    x = np.concatenate(blocks).astype(np.float32)
    if bs == 1:
        extra = np.array(
            [0.0, -0.0, 65504.0, 65520.0, 1e-8, -2.9802322e-08, 1.0000001, 3.0e38, np.inf, -np.inf,
             1.00390625, 1.01171875, -1.00390625, 2.0**-133],
            dtype=np.float32,
        )
        x = np.concatenate([x, extra])
        labels = ["values"]
    return x, labels


def gguf_quant(name: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(quants.quantize(x, T[name])).view(np.uint8).reshape(-1)


# ------------------------------------------------------------------------------- ggml via C


class Ggml:
    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ]

    def _fn(self, sym: str):
        f = getattr(self.lib, sym)
        f.restype = None
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        return f

    def quantize_row_ref(self, name: str, x: np.ndarray) -> np.ndarray:
        _, bs, ts = TYPES[name]
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(x.size // bs * ts, dtype=np.uint8)
        self._fn(f"quantize_row_{name.lower().replace('_k', '_K')}_ref")(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def quantize_chunk(self, name: str, x: np.ndarray) -> np.ndarray:
        tid, bs, ts = TYPES[name]
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(x.size // bs * ts, dtype=np.uint8)
        n = self.lib.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, x.size // bs, bs, None)
        assert n == out.size, (name, n, out.size)
        return out

    def dequantize_row(self, name: str, data: np.ndarray, n: int) -> np.ndarray:
        data = np.ascontiguousarray(data, dtype=np.uint8)
        out = np.zeros(n, dtype=np.float32)
        self._fn(f"dequantize_row_{name.lower().replace('_k', '_K')}")(data.ctypes.data, out.ctypes.data, n)
        return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(a.view(np.uint32) == b.view(np.uint32)))


# ---------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests/golden/dequant/golden.json"))
    ap.add_argument("--ggml-lib", help="libggml-base shared library exporting quantize_row_*_ref")
    ap.add_argument("--ggml-version", default="", help="recorded in the provenance")
    args = ap.parse_args()

    ggml = Ggml(args.ggml_lib) if args.ggml_lib else None
    notes: list[str] = []

    dequant_cases = []
    for name in TYPES:
        data, labels = dequant_blocks(name)
        n = data.size // TYPES[name][2] * TYPES[name][1]
        with np.errstate(over="ignore", invalid="ignore"):
            want = ref_dequant(name, data)
        assert want.size == n
        ref = "numpy d*q (gguf-py has no Q8_K)" if name == "Q8_K" else "gguf.quants.dequantize"
        if ggml is not None and name not in ("F32", "F16", "BF16"):
            c = ggml.dequantize_row(name, data, n)
            if not same_bits(c, want):
                bad = int(np.sum(c.view(np.uint32) != want.view(np.uint32)))
                notes.append(f"dequant {name}: ggml C differs from {ref} in {bad} of {n} values")
            else:
                ref += " (= ggml dequantize_row, bit-exact)"
        dequant_cases.append(
            {"type": name, "n": n, "blocks": labels, "ref": ref, "bytes": data.tobytes().hex(), "want": f32_hex(want)}
        )

    quant_cases = []
    for name in TYPES:
        x, labels = quant_inputs(name)
        if name in KQUANTS:
            if ggml is None:
                print(f"skip quantize {name}: needs --ggml-lib", file=sys.stderr)
                continue
            row_ref = ggml.quantize_row_ref(name, x)
            if name == "Q8_K":
                want, ref = row_ref, "ggml quantize_row_q8_K_ref"
            else:
                want = ggml.quantize_chunk(name, x)
                assert np.array_equal(want, row_ref), f"{name}: quantize_chunk != quantize_row_ref"
                ref = f"ggml ggml_quantize_chunk(imatrix=NULL) (= quantize_row_{name.lower().replace('_k', '_K')}_ref)"
        else:
            want = gguf_quant(name, x)
            ref = "gguf.quants.quantize"
            if ggml is not None and name in LEGACY:
                c = ggml.quantize_row_ref(name, x)
                if np.array_equal(c, want):
                    ref += f" (= ggml quantize_row_{name.lower()}_ref, bit-exact)"
                else:
                    bad = int(np.sum(c != want))
                    notes.append(f"quantize {name}: ggml C differs from gguf-py in {bad} bytes")
                    ref += " (differs from ggml C; see notes)"
        quant_cases.append(
            {"type": name, "n": int(x.size), "blocks": labels, "ref": ref, "input": f32_hex(x), "want": want.tobytes().hex()}
        )

    doc = {
        "provenance": {
            "script": "scripts/golden/make_dequant_golden.py",
            "gguf": metadata.version("gguf"),
            "numpy": np.__version__,
            "ggml": args.ggml_version if ggml is not None else None,
            "date": datetime.date.today().isoformat(),
            "encoding": "bytes/want(quantize): hex bytes; input/want(dequant): hex of little-endian f32",
            "notes": notes,
        },
        "dequant": dequant_cases,
        "quantize": quant_cases,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes); notes: {notes or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
