#!/usr/bin/env python3
"""Build engine/tests/fixtures/corpus/: verbatim excerpts of real, permissively
licensed source files found on the dev machine, plus one hand-written file of
tokenizer edge cases.  Also writes corpus/SOURCES.md.

The committed corpus is the source of truth; this script documents (and can
redo) how it was made.  Source locations are machine specific:

  * Python stdlib      : $PY_STDLIB (default /root/.pyenv/versions/3.11.7/lib/python3.11)
  * crates             : $CARGO_SRC (default ~/.cargo/registry/src/index.crates.io-*)
  * npm                : /usr/lib/node_modules/npm
  * pyenv              : /root/.pyenv
  * git contrib (Go)   : /usr/share/doc/git/contrib
  * llama.cpp sources  : --llama-src DIR (the vendor/llama.cpp dir of the
                         llama-cpp-python sdist); if omitted the sdist is
                         fetched with `pip download` and unpacked in a temp dir.

Excerpts are whole lines: starting at a given 1-based line, lines are taken
while the excerpt stays <= max_bytes.  Bytes are copied unchanged (no newline
normalisation), so tabs / trailing spaces in the originals survive.

Usage: python make_corpus.py [--out DIR] [--llama-src DIR]
"""
import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_OUT = os.path.join(ROOT, "engine", "tests", "fixtures", "corpus")
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

PY = os.environ.get("PY_STDLIB", "/root/.pyenv/versions/3.11.7/lib/python3.11")


def cargo_src():
    env = os.environ.get("CARGO_SRC")
    if env:
        return env
    hits = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/index.crates.io-*")))
    return hits[0] if hits else os.path.expanduser("~/.cargo/registry/src/index.crates.io")


# (output name, source kind, relative path, start line, max bytes, license, origin, copyright)
# kind selects the base directory (see bases() below).
EXCERPTS = [
    ("python_textwrap.py", "py", "textwrap.py", 143, 3400,
     "PSF-2.0", "CPython 3.11.7 standard library (pyenv install)",
     "Copyright (c) 2001-2023 Python Software Foundation"),
    ("python_heapq.py", "py", "heapq.py", 132, 3000,
     "PSF-2.0", "CPython 3.11.7 standard library (pyenv install)",
     "Copyright (c) 2001-2023 Python Software Foundation"),
    ("rust_hex.rs", "cargo", "hex-0.4.3/src/lib.rs", 73, 3400,
     "MIT OR Apache-2.0", "crate hex 0.4.3 (crates.io)",
     "Copyright (c) 2013-2014 The Rust Project Developers; (c) 2015-2020 The rust-hex Developers"),
    ("rust_either.rs", "cargo", "either-1.19.0/src/lib.rs", 463, 3400,
     "MIT OR Apache-2.0", "crate either 1.19.0 (crates.io)",
     "Copyright (c) 2015 the either authors (bluss et al.)"),
    ("c_ggml_quants.c", "llama", "ggml/src/ggml-quants.c", 112, 3400,
     "MIT", "llama.cpp as vendored in the llama-cpp-python %s sdist (PyPI)" % LLAMA_CPP_PYTHON_VERSION,
     "Copyright (c) 2023-2026 The ggml authors"),
    ("cpp_sais.hxx", "cargo", "esaxx-rs-0.1.10/src/sais.hxx", 30, 3400,
     "MIT (sais-lite, Yuta Mori; shipped in crate esaxx-rs 0.1.10, Apache-2.0)",
     "crate esaxx-rs 0.1.10 (crates.io)",
     "Copyright (c) 2008-2009 Yuta Mori"),
    ("js_semver_comparator.js", "npm", "node_modules/semver/classes/comparator.js", 1, 3700,
     "ISC", "npm package semver, bundled with the system npm (/usr/lib/node_modules/npm)",
     "Copyright (c) Isaac Z. Schlueter and Contributors"),
    ("ts_compute_line_diff.ts", "llama", "tools/ui/src/lib/utils/compute-line-diff.ts", 1, 3400,
     "MIT", "llama.cpp web UI, vendored in the llama-cpp-python %s sdist (PyPI)" % LLAMA_CPP_PYTHON_VERSION,
     "Copyright (c) 2023-2026 The ggml authors"),
    ("go_proxy.go", "git", "persistent-https/proxy.go", 15, 3400,
     "Apache-2.0", "git contrib/persistent-https (Google), Debian package git",
     "Copyright 2012 Google Inc."),
    ("sh_pyenv_which.sh", "pyenv", "libexec/pyenv-which", 1, 3400,
     "MIT", "pyenv (/root/.pyenv)",
     "Copyright (c) 2013 Yamashita, Yuu; (c) 2013 Sam Stephenson"),
]


def fetch_llama_src(tmp):
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                           "--no-binary", "llama-cpp-python", "-d", tmp,
                           "llama-cpp-python==%s" % LLAMA_CPP_PYTHON_VERSION])
    sdist = glob.glob(os.path.join(tmp, "llama_cpp_python-*.tar.gz"))[0]
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp, filter="data")
    return glob.glob(os.path.join(tmp, "llama_cpp_python-*", "vendor", "llama.cpp"))[0]


def excerpt(data, start_line, max_bytes):
    lines = data.splitlines(keepends=True)
    out = b""
    n = 0
    for line in lines[start_line - 1:]:
        if len(out) + len(line) > max_bytes:
            break
        out += line
        n += 1
    return out, start_line, start_line + n - 1


EDGE_CASES = (
    # Plain code with a trailing space and trailing tab at end of line.
    "def f(x):  \n"
    "\treturn x\t\n"
    # CRLF line endings (Windows), and a lone CR.
    "if (a) {\r\n    b();\r\n}\r\n"
    "lone\rcarriage return\n"
    # Runs of whitespace, blank lines, mixed tabs/spaces, form feed, vertical tab.
    "\n\n\n    \n  \t  \t\n"
    "page\x0cbreak and\x0bvtab\n"
    # Long digit runs and numbers (the smollm pre-tokenizer splits digits individually).
    "x = 123456789012345678901234567890\n"
    "pi = 3.14159265358979323846; hex = 0xDEADBEEF; big = 1_000_000; exp = 6.02e23\n"
    # Unicode numbers that are \p{N} but not ASCII digits.
    "arabic-indic: \u0663\u0664\u0665; fullwidth: \uff11\uff12\uff13; roman: \u216b; half: \u00bd; sup: x\u00b2\n"
    # Strings that look like special tokens (must be tokenized as plain text).
    'tpl = "<|im_start|>user\\nhi<|im_end|>"  # <|endoftext|> <s> </s> <unk>\n'
    "<fim_prefix>a<fim_suffix>b<fim_middle> <|fim_prefix|><|fim_middle|><|fim_suffix|>\n"
    # Contractions (gpt2 regex special-cases 's 't 're 've 'm 'll 'd, case sensitively).
    "don't won't I'm we'll they've you're he'd it's DON'T WE'LL It'S\n"
    # Accented Latin, NFC vs NFD (e + combining acute), German sharp s, ligature.
    "caf\u00e9 vs cafe\u0301, na\u00efve, stra\u00dfe, \ufb01le, \u00c5ngstr\u00f6m\n"
    # CJK, Japanese kana, Korean Hangul.
    "# \u4e2d\u6587\u6ce8\u91ca\uff1a\u8ba1\u7b97\u603b\u548c\n"
    "s = '\u3053\u3093\u306b\u3061\u306f\u4e16\u754c'  // \ud55c\uad6d\uc5b4 \ud14c\uc2a4\ud2b8\n"
    # Right-to-left scripts and Devanagari (combining marks are \p{M}).
    "msg = \"\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947\"\n"
    # Cyrillic / Greek.
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0391\u03b8\u03ae\u03bd\u03b1 \u03bb=\u03b1+\u03b2\n"
    # Emoji: simple, skin tone modifier, ZWJ sequence, flag, keycap, variation selector.
    "emoji: \U0001f600 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1ef\U0001f1f5 1\ufe0f\u20e3 \u2764\ufe0f \U0001f980\n"
    # Invisible characters: zero-width space, no-break space, BOM in the middle, soft hyphen.
    "zw\u200bsp nb\u00a0sp bom\ufeffmid soft\u00adhyphen\n"
    # Math and box drawing symbols, arrows, currency.
    "\u2200x\u2208\u211d: x\u00b2 \u2265 0 \u2192 \u221a(x\u00b2) = |x|  \u20ac100 \u00a350 \u00a5500 \u2500\u2500\u2510\n"
    # Long runs of repeated characters.
    "# " + "=" * 60 + "\n"
    + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
    + "/* " + "*" * 40 + " */\n"
    # Punctuation clusters typical in code.
    "a->b; c=>d; e::f; g?.h ?? i; j !== k; l <<= 2; m >>>= 3; #[derive(Debug)] @decorator $var %{x}\n"
    "url = \"https://example.com/path?q=1&r=%20x#frag\"; re = r'^\\s*(\\w+)\\s*=\\s*(.*?)\\s*$'\n"
    # Leading spaces before punctuation / letters, and a final line without newline + trailing spaces.
    "   ...   !!!   ???   \n"
    "end of file without newline   "
)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--llama-src", default=None,
                    help="vendor/llama.cpp dir of the llama-cpp-python sdist")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="corpus-")
    llama_src = args.llama_src or fetch_llama_src(tmp)
    bases = {
        "py": PY,
        "cargo": cargo_src(),
        "npm": "/usr/lib/node_modules/npm",
        "llama": llama_src,
        "git": "/usr/share/doc/git/contrib",
        "pyenv": "/root/.pyenv",
    }

    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, kind, rel, start, max_bytes, lic, origin, copyright_ in EXCERPTS:
        src = os.path.join(bases[kind], rel)
        with open(src, "rb") as f:
            data = f.read()
        text, first, last = excerpt(data, start, max_bytes)
        text.decode("utf-8")  # must be valid UTF-8
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(text)
        rows.append((name, len(text), rel, first, last, lic, origin,
                     hashlib.sha256(data).hexdigest(), copyright_))
        print("%-28s %5d bytes  %s:%d-%d" % (name, len(text), rel, first, last))

    edge = EDGE_CASES.encode("utf-8")
    with open(os.path.join(args.out, "edge_cases.txt"), "wb") as f:
        f.write(edge)
    print("%-28s %5d bytes  (hand-written)" % ("edge_cases.txt", len(edge)))
    shutil.rmtree(tmp, ignore_errors=True)

    with open(os.path.join(args.out, "SOURCES.md"), "w", encoding="utf-8") as f:
        f.write("# Corpus sources\n\n")
        f.write("Verbatim excerpts (whole lines, bytes unchanged) of third-party source files,\n"
                "used only as tokenizer / inference test input. Generated by\n"
                "`scripts/reference/make_corpus.py`. Each excerpt stays under its original license;\n"
                "copyright belongs to the original authors.\n\n")
        f.write("| file | bytes | origin | path in origin | lines | license | copyright | sha256 of full original file |\n")
        f.write("|---|---|---|---|---|---|---|---|\n")
        for name, size, rel, first, last, lic, origin, sha, copyright_ in rows:
            f.write("| `%s` | %d | %s | `%s` | %d-%d | %s | %s | `%s` |\n"
                    % (name, size, origin, rel, first, last, lic, copyright_, sha[:16] + "…"))
        f.write("| `edge_cases.txt` | %d | written for this project | - | - | same as this repository | - | - |\n"
                % len(edge))
        f.write("\nThe full license texts are those shipped with each origin (PSF-2.0: CPython's LICENSE;\n"
                "MIT/Apache-2.0/ISC: the LICENSE files of the crates, npm package, llama.cpp and pyenv;\n"
                "Apache-2.0 for the Go file: git's contrib/persistent-https/LICENSE).\n")
        f.write("\n`edge_cases.txt` exercises tokenizer corner cases: trailing spaces/tabs, CRLF and a lone CR,\n"
                "form feed / vertical tab, long digit runs, non-ASCII \\p{N} digits, strings that look like\n"
                "special tokens (`<|im_start|>`, `<|endoftext|>`, FIM markers; they must be tokenized as plain\n"
                "text), contractions, NFC vs NFD accents, CJK/Hangul/RTL/Devanagari, emoji (skin tones, ZWJ,\n"
                "flags, keycaps), zero-width space, NBSP, an in-text BOM, soft hyphen, long repeated runs,\n"
                "and a last line with no newline that ends in spaces.\n")


if __name__ == "__main__":
    main()
