#!/usr/bin/env python3
"""Drive a running `edgellm serve` with the official `openai` Python client.

Usage: openai_client.py BASE_URL API_KEY EXPECTED_EMBEDDINGS.json

Checks chat (whole and streamed, equal text), completions, JSON-schema output that parses
and follows its schema, log-probabilities, embeddings (the client's default base64 and
floats) equal to `edgellm embed`'s, and that errors surface as the client's typed
exceptions (400, 401). Prints one line per check; exits non-zero on the first failure.
"""
import json
import struct
import sys

import openai

base_url, api_key, expected_path = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]

whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, temperature=0, seed=1)
text = whole.choices[0].message.content
assert whole.object == "chat.completion", whole
assert whole.choices[0].message.role == "assistant"
assert text, whole
assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0, whole.usage
print("chat ok:", repr(text[:40]))

pieces, usage, finish = [], None, None
for chunk in client.chat.completions.create(
    model="smollm2", messages=messages, max_tokens=24, temperature=0, seed=1, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
assert "".join(pieces) == text, ("".join(pieces), text)
assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage
assert finish == whole.choices[0].finish_reason, finish
print("stream ok:", len(pieces), "chunks")

comp = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0)
assert comp.choices[0].text, comp
print("completion ok:", repr(comp.choices[0].text))

lp = client.chat.completions.create(
    model="smollm2", messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
content = lp.choices[0].logprobs.content
assert len(content) == lp.usage.completion_tokens, content
for t in content:
    assert t.logprob <= 0 and len(t.top_logprobs) == 3, t
    assert t.top_logprobs[0].token == t.token, t
print("logprobs ok")

schema = {
    "type": "object",
    "properties": {
        "device": {"enum": ["light", "thermostat", "lock"]},
        "room": {"type": "string", "maxLength": 16},
        "level": {"type": "integer", "minimum": 0, "maximum": 100},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    },
    "required": ["device", "room", "level", "tags"],
    "additionalProperties": False,
}
for temp in (0, 0.8):
    r = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Dim the bedroom lights to 30 percent. Answer in JSON."}],
        max_tokens=120, temperature=temp, seed=5,
        response_format={"type": "json_schema", "json_schema": {"name": "command", "schema": schema, "strict": True}},
    )
    obj = json.loads(r.choices[0].message.content)
    assert set(obj) == {"device", "room", "level", "tags"}, obj
    assert obj["device"] in ("light", "thermostat", "lock"), obj
    assert isinstance(obj["room"], str) and len(obj["room"]) <= 16, obj
    assert isinstance(obj["level"], int) and 0 <= obj["level"] <= 100, obj
    assert isinstance(obj["tags"], list) and len(obj["tags"]) <= 3, obj
    assert all(isinstance(t, str) and len(t) <= 10 for t in obj["tags"]), obj
    print("json_schema ok:", obj)

expected = json.load(open(expected_path))
texts = expected["texts"]
for fmt in (openai.NOT_GIVEN, "float"):
    e = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format=fmt)
    assert len(e.data) == len(texts)
    for d, want in zip(e.data, expected["embeddings"]):
        assert len(d.embedding) == len(want)
        # `edgellm embed` prints each f32 in its shortest form: round it back to f32.
        want = struct.unpack(f"{len(want)}f", struct.pack(f"{len(want)}f", *want))
        worst = max(abs(a - b) for a, b in zip(d.embedding, want))
        assert worst == 0.0, (fmt, worst)
    print("embeddings ok:", "base64 (default)" if fmt is openai.NOT_GIVEN else fmt)

models = client.models.list()
assert {m.id for m in models.data} >= {"SmolLM2-135M-Instruct.Q4_1", "all-MiniLM-L6-v2"}, models
print("models ok")

try:
    client.chat.completions.create(model="smollm2", messages=messages, max_tokens=0)
    raise AssertionError("max_tokens 0 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.body["param"] == "max_tokens", e.body
try:
    client.chat.completions.create(model="smollm2", messages=messages, max_tokens=10**7)
    raise AssertionError("max_tokens over the context was accepted")
except openai.BadRequestError as e:
    assert e.body["code"] == "context_length_exceeded", e.body
bad = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
try:
    bad.chat.completions.create(model="smollm2", messages=messages, max_tokens=2)
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e
print("errors ok")
print("all ok")
