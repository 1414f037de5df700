#!/usr/bin/env python3
"""Make tokenize cases with llama.cpp (llama-cpp-python 0.3.36) for crates/text/tests.

Usage: python3 gen_llama_cpp_tokenize.py MODEL.gguf OUT.json [N] [SEED] [EXTRA]

Texts are random mixes of ASCII words, digits, every kind of whitespace, punctuation,
contractions, accented and non-Latin letters, CJK, emoji (with ZWJ and skin tones), combining
marks, unassigned and private-use code points, and the model's control-token strings. Each text is
tokenized with llama_tokenize(add_special=False) twice: parse_special False and True.
EXTRA names more pieces for one model family ("gemma3": its control, user-defined and byte-token
strings, the SentencePiece space mark, runs of spaces, tabs and newlines); without it the pieces
and thus the texts are those of the SmolLM2 data.
"""
import json
import random
import sys

import llama_cpp

PIECES = [
    "the", "The", " quick", "brown", "fox", "HELLO", "wOrLd", "a", "I", "x",
    "0", "7", "42", "2024", "3.14", "1,000", "-5", "½", "²", "٣", "Ⅻ", "〇",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "\u2009", "\u0085", "\u200b",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'", "''", "\"",
    "!", "?", ".", "...", ",", ";", ":", "(", ")", "{", "}", "[", "]", "<", ">", "/", "\\", "|",
    "#", "$", "%", "&", "*", "+", "-", "=", "_", "~", "`", "^", "@",
    "é", "café", "naïve", "Ünïcödé", "ß", "ñ", "Ωμέγα", "Привет", "مرحبا", "שלום", "नमस्ते", "ไทย",
    "中文", "设备端推理", "日本語", "テキスト", "한국어", "：", "，", "。", "「", "」",
    "🙂", "👍🏽", "🚀", "👩‍👩‍👧", "❤️", "🇫🇷", "©", "®", "™", "€", "→", "∑", "√",
    "e\u0301", "\u0301", "\u200d", "\ufe0f", "\U000e0001", "\U0010ffff", "\ue000", "\u0378",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<|im_start", "im_end|>", "<", "|>",
    "http://x.y/z?q=1&r=2", "fn main() {}", "def f(x):", "    return", "x**2", "a_b", "CamelCase",
]

EXTRA = {
    "gemma3": [
        "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<s>", "</s>",
        "[multimodal]", "<start_of_image>", "<end_of_image>", "<unused0>", "<unused6241>", "<unused",
        "<table>", "</td>", "<strong>", "<h1>", "<0x41>", "<0x0A>", "<start_of", "turn>", "user\n", "model\n",
        "\u2581", "\u2581\u2581", "\u2581the", "    ", "        ", "\t\t", "\n\n\n", "  \n", "\r", "\u2028",
        "ǅ", "ﬁ", "𝔘𝔫𝔦", "A\u030a", "Å", "0xDEADBEEF", "Supercalifragilisticexpialidocious",
        "{\"key\": [1, 2.5e-3, null]}", "¿Qué?", "Ça va", "ΑΒΓ", "😀😃😄", "🏳️‍🌈", "\U0001F9D1\u200d\U0001F4BB",
    ],
}


def rand_text(rng, pieces):
    n = rng.randint(1, 12)
    return "".join(rng.choice(pieces) for _ in range(n))


def main():
    model, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 400
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    extra = sys.argv[5] if len(sys.argv) > 5 else None
    pieces = PIECES + EXTRA[extra] if extra else PIECES
    rng = random.Random(seed)
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    cases = []
    seen = set()
    while len(cases) < n:
        t = rand_text(rng, pieces)
        if t in seen:
            continue
        seen.add(t)
        b = t.encode("utf-8")
        cases.append({
            "text": t,
            "ids": llm.tokenize(b, add_bos=False, special=False),
            "ids_special": llm.tokenize(b, add_bos=False, special=True),
        })
    doc = {
        "model": model.rsplit("/", 1)[-1],
        "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
        "command": f"gen_llama_cpp_tokenize.py MODEL OUT {n} {seed}" + (f" {extra}" if extra else ""),
        "cases": cases,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
