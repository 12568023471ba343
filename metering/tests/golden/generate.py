"""Writes payloads.jsonl: payloads of every shape Tally meets, for the golden test of the metered
payload size (metering/tests/payload_sizes.rs). Deterministic: the same file every run.

The sizes in the file were computed by Tally when the file was made
(`TALLY_BLESS=1 cargo test --release --workspace --test payload_sizes`) and must never change:
a change would change what customers are billed for the same payload.
"""
import json
import random

rng = random.Random(20261207)
WORDS = ("the customer asks about refund policy model answer context retrieved document tool "
         "search embedding vector prompt system user assistant token latency error retry "
         "Zürich naïve 東京 данные 🙂 \"quoted\" back\\slash tab\t newline\n").split(" ")


def text(n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def noise(n):
    return "".join(rng.choice("0123456789abcdefghijklmnopqrstuvwxyz+/=") for _ in range(n))


def number():
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randrange(-10**6, 10**6)
    if kind == 1:
        return rng.randrange(0, 2**63)
    if kind == 2:
        return rng.uniform(-1e6, 1e6)
    if kind == 3:
        return rng.random() * 10 ** rng.randrange(-30, 30)
    if kind == 4:
        return float(rng.randrange(0, 1000)) / 8
    return 0.1 + 0.2


def value(depth, budget):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return text(rng.randrange(1, max(2, budget // 6)))
    if kind == 1:
        return number()
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return noise(rng.randrange(1, max(2, budget)))
    if kind == 4:
        return ""
    if kind in (5, 6):
        return {f"{rng.choice(WORDS).strip() or 'k'}_{i}": value(depth + 1, budget // 3)
                for i in range(rng.randrange(0, 6))}
    return [value(depth + 1, budget // 3) for _ in range(rng.randrange(0, 6))]


def llm_call(tokens):
    return {
        "model": rng.choice(["gpt-4o", "claude-sonnet", "llama-3-70b"]),
        "messages": [{"role": rng.choice(["system", "user", "assistant"]), "content": text(tokens)}
                     for _ in range(rng.randrange(1, 6))],
        "usage": {"prompt_tokens": rng.randrange(0, 10**5), "completion_tokens": rng.randrange(0, 10**4)},
        "temperature": rng.choice([0, 0.2, 0.7, 1.0]),
    }


payloads = [{}, [], "", 0, None, True, "x", {"a": 1}, [1, 2, 3], {"prompt": "hello " * 100}]
payloads += [llm_call(rng.choice([5, 50, 200, 1000])) for _ in range(40)]
payloads += [{"embedding": [rng.uniform(-1, 1) for _ in range(rng.choice([8, 64, 384]))]} for _ in range(10)]
payloads += [{"document": noise(rng.choice([100, 1000, 5000, 20000]))} for _ in range(8)]
payloads += [value(0, rng.choice([10, 100, 1000, 3000])) for _ in range(60)]

with open("payloads.jsonl", "w", encoding="utf-8") as out:
    for p in payloads:
        out.write(json.dumps({"bytes": None, "payload": p}, ensure_ascii=False) + "\n")
