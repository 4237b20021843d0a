"""The same measurements as engine_bench.rs, on llama.cpp (llama-cpp-python), same GGUF,
same thread count. Prints one JSON object."""
import json, resource, sys, time

from llama_cpp import Llama

model_path, prompt_file = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
llm = Llama(model_path=model_path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
            n_batch=512, verbose=False, seed=0)
text = open(prompt_file, encoding="utf-8").read()
ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:512]
assert len(ids) == 512, len(ids)

def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)]

def first_token(prompt):
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    llm.sample(temp=0.0)
    return time.perf_counter() - t

first_token(ids[:64])
ttft = [first_token(ids) * 1e3 for _ in range(runs)]

def decode(prompt, n):
    llm.reset()
    llm.eval(prompt)
    tok = llm.sample(temp=0.0)
    t = time.perf_counter()
    for _ in range(n - 1):
        llm.eval([tok])
        tok = llm.sample(temp=0.0)
    return (n - 1) / (time.perf_counter() - t)

rates = [decode(ids[:128], 128) for _ in range(min(runs, 3))]
# llama-cpp-python runs one sequence at a time: 8 requests are served back to back.
t = time.perf_counter()
for i in range(8):
    llm.reset()
    llm.eval(ids[i * 16:i * 16 + 128])
    tok = llm.sample(temp=0.0)
    for _ in range(127):
        llm.eval([tok])
        tok = llm.sample(temp=0.0)
aggregate = 8 * 128 / (time.perf_counter() - t)
p50 = pct(ttft, 0.5)
print(json.dumps({
    "engine": "llama.cpp",
    "threads": threads,
    "prompt_tokens": 512,
    "ttft_ms_p50": p50,
    "ttft_ms_p99": pct(ttft, 0.99),
    "prefill_tok_s": 512 / (p50 / 1e3),
    "decode_tok_s_batch1": pct(rates, 0.5),
    "aggregate_tok_s_8_concurrent": aggregate,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
