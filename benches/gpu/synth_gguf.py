#!/usr/bin/env python3
"""Rebuilds a GGUF model of the same shape as a real one from its header alone.

The device machines cannot receive the real weights (the device tool carries at most
64 MiB; the Qwen2.5-Coder GGUFs are 491 MB and 1.1 GB). `scripts/cuda-build.sh --bundle`
keeps each model's header (metadata: architecture, tokenizer; tensor names, shapes,
types and offsets; about 6 MB, gzipped) and this script appends tensor data of the
same types and sizes: random quantised blocks with scales that keep weights in the
usual range (|w| below about 0.05), RMSNorm weights of 1 and zero biases. Speed and
memory traffic equal the real model's; greedy outputs are not meaningful text, so
the device check compares GPU with CPU on the same file rather than with fixtures.

Usage: synth_gguf.py HEADER.gguf.gz OUT.gguf [SEED]
       synth_gguf.py --head MODEL.gguf HEADER.gguf.gz   (keep a model's header)
"""
import gzip
import struct
import sys

# ggml type id -> (values per block, bytes per block)
TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
         8: (32, 34), 12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}
# ggml type id -> [(byte offset in the block, f16 value)] for the scale fields
SCALES = {2: [(0, 0.003)], 3: [(0, 0.003), (2, -0.02)], 6: [(0, 0.003)],
          7: [(0, 0.003), (2, -0.04)], 8: [(0, 0.0003)], 12: [(0, 0.0005), (2, 0.0005)],
          13: [(0, 0.0003), (2, 0.0005)], 14: [(208, 1e-5)]}


def read_header(raw):
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, raw, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string():
        nonlocal pos
        (n,) = take("Q")
        s = raw[pos:pos + n]
        pos += n
        return s

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            at, n = take("IQ")
            return [value(at) for _ in range(n)]
        v = raw[pos:pos + sizes[t]]
        pos += sizes[t]
        return v

    if raw[:4] != b"GGUF":
        sys.exit("not a GGUF header")
    pos = 4
    _version, n_tensors, n_kv = take("IQQ")
    alignment = 32
    for _ in range(n_kv):
        key = string()
        (t,) = take("I")
        v = value(t)
        if key == b"general.alignment":
            alignment = struct.unpack("<I", v)[0]
    tensors = []
    for _ in range(n_tensors):
        name = string().decode()
        (nd,) = take("I")
        dims = take("Q" * nd)
        (ggml_type,) = take("I")
        (offset,) = take("Q")
        tensors.append((name, dims, ggml_type, offset))
    data_start = (pos + alignment - 1) // alignment * alignment
    return tensors, data_start


def tensor_bytes(name, dims, ggml_type, rng):
    import numpy as np

    if ggml_type not in TYPES:
        sys.exit(f"{name}: ggml type {ggml_type} is not supported here")
    count = 1
    for d in dims:
        count *= d
    per, size = TYPES[ggml_type]
    if ggml_type in (0, 1, 30):
        if "norm" in name:
            v = np.ones(count)
        elif name.endswith(".bias"):
            v = np.zeros(count)
        else:
            v = rng.standard_normal(count) * 0.02
        if ggml_type == 0:
            return v.astype(np.float32).tobytes()
        if ggml_type == 1:
            return v.astype(np.float16).tobytes()
        return (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    blocks = rng.integers(0, 256, size=(count // per, size), dtype=np.uint8)
    for at, scale in SCALES[ggml_type]:
        blocks[:, at:at + 2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    return blocks.tobytes()


def keep_header(model, out):
    raw = open(model, "rb").read(64 << 20)
    _, data_start = read_header(raw)
    gzip.open(out, "wb").write(raw[:data_start])
    print(f"{out}: the {data_start}-byte header of {model}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    if sys.argv[1] == "--head":
        return keep_header(sys.argv[2], sys.argv[3])
    import numpy as np
    header = gzip.open(sys.argv[1], "rb").read()
    rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    tensors, data_start = read_header(header)
    with open(sys.argv[2], "wb") as out:
        out.write(header[:data_start].ljust(data_start, b"\0"))
        for name, dims, ggml_type, offset in sorted(tensors, key=lambda t: t[3]):
            here = out.tell() - data_start
            if offset < here:
                sys.exit(f"{name}: overlapping tensor offsets")
            out.write(b"\0" * (offset - here))
            out.write(tensor_bytes(name, dims, ggml_type, rng))
    print(f"{sys.argv[2]}: {len(tensors)} tensors from {sys.argv[1]}")


if __name__ == "__main__":
    main()
