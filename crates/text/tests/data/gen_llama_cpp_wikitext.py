#!/usr/bin/env python3
"""Fingerprint llama.cpp's token ids of a whole text file (llama-cpp-python 0.3.36).

Usage: python3 gen_llama_cpp_wikitext.py MODEL.gguf TEXT OUT.json [CHUNKS]

TEXT is tokenized whole with llama_tokenize(add_special=True, parse_special=False) (BOS as the
model says), and recorded as its id count and the FNV-1a 64 hash of the ids (each a u32, little
endian). To tell where an implementation departs, the text is also cut into CHUNKS runs of whole
lines, each tokenized on its own (add_special=False) and fingerprinted the same way; the script
checks that the chunks' ids put together are the whole text's (true where a newline is always a
token of its own, as in Gemma's vocabulary, and the file has no blank line runs "\\n\\n").
"""
import hashlib
import json
import sys

import llama_cpp


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    model, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    n_chunks = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    raw = open(path, "rb").read()
    text = raw.decode("utf-8")
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    whole = llm.tokenize(raw, add_bos=True, special=False)
    # Lines end at "\n" only (not str.splitlines' other breaks), each keeping its "\n".
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    per = -(-len(lines) // n_chunks)
    chunks, joined = [], whole[:1] if whole and whole[0] == llm.token_bos() else []
    for first in range(0, len(lines), per):
        part = "".join(lines[first:first + per])
        ids = llm.tokenize(part.encode("utf-8"), add_bos=False, special=False)
        joined += ids
        chunks.append({"first_line": first, "n_lines": len(lines[first:first + per]),
                       "n_ids": len(ids), "fnv1a64": fnv1a64(ids)})
    assert joined == whole, "chunk ids do not add up to the whole text's"
    doc = {
        "model": model.rsplit("/", 1)[-1],
        "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
        "command": f"gen_llama_cpp_wikitext.py MODEL {path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]} OUT {n_chunks}",
        "text_sha256": hashlib.sha256(raw).hexdigest(),
        "add_bos": True,
        "n_ids": len(whole),
        "fnv1a64": fnv1a64(whole),
        "chunks": chunks,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
