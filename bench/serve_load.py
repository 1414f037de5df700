#!/usr/bin/env python3
"""Load client for OpenAI-compatible servers (edgellm serve, llama-server): streamed chat
completions from concurrent clients, loopback only.

Measures per request the time to first token (first content delta) and the generated tokens
(the final usage chunk, else the content deltas counted), and in aggregate the generated tokens
per second over the wall time of the whole run. With --check-solo, every request is first sent
alone (one at a time) and each concurrent answer must equal its solo answer byte for byte.

Standard library only. Prints one JSON object.

usage: serve_load.py --url http://127.0.0.1:8080 --clients 4 --requests 5 [--max-tokens 64]
       [--mixed] [--seed-base N] [--temperature T] [--ignore-eos] [--check-solo]
       [--system-tokens N --cached-system | --unique-system] [--warmup N]
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

TOPICS = [
    "the kitchen lights", "a rainy afternoon", "the history of bread", "how bees find flowers",
    "a trip to the mountains", "the thermostat in the hallway", "learning to play the piano",
    "why the sky is blue", "a robot that waters plants", "the first day of school",
    "an old lighthouse", "saving energy at home", "a cat who likes boxes", "the moon landing",
    "a recipe for pancakes", "the garage door", "morning routines", "a quiet library",
    "the northern lights", "a lost umbrella",
]

FILLER = ("The assistant controls lights, heating, blinds, locks, speakers and appliances in a "
          "family home, answers questions about the devices, and keeps answers short and polite. ")


def system_prompt(n_tokens, nonce=None):
    # About 24 tokens per filler sentence for typical BPE vocabularies.
    reps = max(1, round(n_tokens / 24))
    head = f"[session {nonce}] " if nonce is not None else ""
    return head + FILLER * reps


def make_requests(args, n, offset):
    reqs = []
    for i in range(n):
        k = offset + i
        topic = TOPICS[k % len(TOPICS)]
        if args.mixed:
            words = ["Tell me about", "Write two sentences about", "Describe in detail",
                     "Give a short list of facts about"][k % 4]
            max_tokens = [16, 32, 48, 64][(k // 4) % 4] if args.max_tokens >= 64 else args.max_tokens
        else:
            words, max_tokens = "Tell me about", args.max_tokens
        messages = []
        if args.system_tokens:
            nonce = k if args.unique_system else None
            messages.append({"role": "system", "content": system_prompt(args.system_tokens, nonce)})
        messages.append({"role": "user", "content": f"{words} {topic}."})
        body = {"model": "default", "messages": messages, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True},
                "temperature": args.temperature, "seed": args.seed_base + k}
        if args.ignore_eos:
            body["ignore_eos"] = True
        reqs.append(body)
    return reqs


def stream_chat(url, body, timeout=600):
    """One streamed chat request: (text, ttft_s, generated_tokens, total_s)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json", "Authorization": "Bearer none"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    text, ttft, usage, deltas = [], None, None, 0
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        obj = json.loads(data)
        if obj.get("usage"):
            usage = obj["usage"]
        for ch in obj.get("choices") or []:
            piece = (ch.get("delta") or {}).get("content")
            if piece:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text.append(piece)
                deltas += 1
    total = time.perf_counter() - t0
    conn.close()
    n_gen = usage["completion_tokens"] if usage else deltas
    return "".join(text), ttft if ttft is not None else total, n_gen, total


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=5, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--mixed", action="store_true", help="mixed prompt and answer lengths")
    ap.add_argument("--seed-base", type=int, default=1000)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--ignore-eos", action="store_true", help="ask for exactly max_tokens tokens")
    ap.add_argument("--check-solo", action="store_true")
    ap.add_argument("--system-tokens", type=int, default=0)
    ap.add_argument("--unique-system", action="store_true", help="a different system prompt per request")
    ap.add_argument("--warmup", type=int, default=1, help="requests sent first and not measured")
    ap.add_argument("--offset", type=int, default=0, help="first request index (varies the prompts)")
    args = ap.parse_args()

    n = args.clients * args.requests
    reqs = make_requests(args, n, args.offset)
    for w in make_requests(args, args.warmup, 10_000):
        stream_chat(args.url, w)
    if args.system_tokens and not args.unique_system:
        # The shared system prompt is in a slot's cache before the measured requests come.
        stream_chat(args.url, make_requests(args, 1, 20_000)[0])

    solo = None
    if args.check_solo:
        solo = [stream_chat(args.url, r)[0] for r in reqs]

    results = [None] * n
    errors = []

    def client(c):
        for j in range(args.requests):
            i = c * args.requests + j
            try:
                results[i] = stream_chat(args.url, reqs[i])
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                errors.append(f"request {i}: {e}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    done = [r for r in results if r is not None]
    ttft = [r[1] * 1e3 for r in done]
    gen = sum(r[2] for r in done)
    out = {
        "clients": args.clients, "requests": n, "completed": len(done), "errors": errors,
        "generated_tokens": gen, "wall_s": wall, "aggregate_tokens_per_s": gen / wall if wall > 0 else 0,
        "ttft_ms_p50": pct(ttft, 50), "ttft_ms_p99": pct(ttft, 99), "ttft_ms_mean": statistics.fmean(ttft) if ttft else None,
    }
    if solo is not None:
        mismatches = [i for i, r in enumerate(results) if r is None or r[0] != solo[i]]
        out["solo_mismatches"] = mismatches
        out["solo_checked"] = n
    print(json.dumps(out))
    if errors or (solo is not None and out["solo_mismatches"]) or len(done) != n:
        sys.exit(1)


if __name__ == "__main__":
    main()
