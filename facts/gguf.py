"""What a GGUF model on the host needs in memory: its files' sizes and the metadata that sizes the KV cache.

Usage::

    from facts.gguf import GgufModel
    model = host.get_fact(GgufModel, path="/var/lib/halo-provision/models/tiny.gguf")
    model["layers"], model["kv_heads"], model["key_length"], sum(f["size"] for f in model["files"])

The header is read on the host by its python3 (one command, the script below; GGUF v2/v3, little
endian): only the key/value metadata, never the tensor data, so a 200 GiB model costs a few MB of
reads (most of it the vocabulary). A split model (`name-00001-of-00003.gguf`) lists every part.
"""

from __future__ import annotations

import re
import shlex
from typing import TypedDict

from pyinfra.api import FactBase

# Runs on the host: python3 - PATH. Prints "key=value" lines; "error=..." when it cannot read the file.
READER = r'''
import os, re, struct, sys
path = sys.argv[1]
def out(k, v): print("%s=%s" % (k, v))
m = re.match(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$", path)
parts = ["%s-%05d-of-%s.gguf" % (m.group(1), i, m.group(3)) for i in range(1, int(m.group(3)) + 1)] if m else [path]
for p in parts:
    out("file", "%s\t%s" % (os.path.getsize(p) if os.path.isfile(p) else "missing", p))
try:
    f = open(path, "rb")
except OSError as e:
    out("error", "cannot open: %s" % e.strerror); sys.exit(0)
def rd(n):
    b = f.read(n)
    if len(b) != n: raise EOFError
    return b
def u(fmt): return struct.unpack("<" + fmt, rd(struct.calcsize(fmt)))[0]
SIZES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
def string(): return rd(u("Q")).decode("utf-8", "replace")
def value(t, keep):
    if t == 8: return string()
    if t == 9:
        it, n = u("I"), u("Q")
        if it in SIZES and not keep:
            f.seek(n * struct.calcsize(SIZES[it]), 1); return "[%d]" % n
        items = [value(it, keep) for _ in range(n)]
        return ",".join(str(i) for i in items) if keep else "[%d]" % n
    if t in SIZES: return u(SIZES[t])
    raise ValueError("unknown value type %d" % t)
WANT = re.compile(r"^(general\.(architecture|name)|split\.(count|no)|[a-z0-9_]+\.(block_count|context_length|embedding_length|vocab_size|attention\.(head_count|head_count_kv|key_length|value_length|kv_lora_rank|sliding_window)))$")
try:
    if rd(4) != b"GGUF": out("error", "not a GGUF file (no GGUF magic)"); sys.exit(0)
    version = u("I")
    if version not in (2, 3): out("error", "GGUF version %d is not supported" % version); sys.exit(0)
    out("version", version); out("tensors", u("Q")); kvs = u("Q")
    for _ in range(kvs):
        key, t = string(), u("I")
        v = value(t, bool(WANT.match(key)))
        if key == "tokenizer.ggml.tokens": out("vocab", v.strip("[]"))
        elif WANT.match(key): out("kv", "%s\t%s" % (key, str(v).replace("\n", " ")))
except (EOFError, struct.error, ValueError) as e:
    out("error", "truncated or damaged GGUF header (%s)" % (str(e) or "ends early"))
'''


class GgufFile(TypedDict):
    path: str
    size: int | None  # None: the part is missing


class GgufInfo(TypedDict):
    architecture: str | None
    name: str | None
    layers: int | None
    context: int | None
    embedding: int | None
    vocab: int | None
    heads: list[int]
    kv_heads: list[int]  # one number for all layers, or one per layer
    key_length: int | None
    value_length: int | None
    kv_lora_rank: int | None
    sliding_window: int | None
    split_count: int | None
    files: list[GgufFile]
    error: str | None


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if re.fullmatch(r"[0-9]+", x.strip())]


def _int(text: str) -> int | None:
    values = _ints(text)
    return values[0] if len(values) == 1 else None


class GgufModel(FactBase[GgufInfo | None]):
    """The sizes of a GGUF model's files and the metadata that sizes its KV cache, read on the host.

    .. code:: python

        {"architecture": "llama", "name": "halo-tiny-llama", "layers": 6, "context": 2048, "embedding": 128,
         "vocab": 383, "heads": [4], "kv_heads": [2], "key_length": None, "value_length": None,
         "kv_lora_rank": None, "sliding_window": None, "split_count": None,
         "files": [{"path": "/var/lib/halo-provision/models/tiny.gguf", "size": 2151456}], "error": None}

    key_length/value_length None: embedding / heads (llama.cpp's own default). `error` says why the
    metadata is missing (not a GGUF file, truncated). Default: None (no python3 on the host).
    """

    @staticmethod
    def default() -> None:
        return None

    def command(self, path: str) -> str:
        return f"command -v python3 >/dev/null && python3 -c {shlex.quote(READER)} {shlex.quote(path)} 2>&1; true"

    def process(self, output: list[str]) -> GgufInfo | None:
        info = GgufInfo(architecture=None, name=None, layers=None, context=None, embedding=None, vocab=None,
                        heads=[], kv_heads=[], key_length=None, value_length=None, kv_lora_rank=None,
                        sliding_window=None, split_count=None, files=[], error=None)
        kv: dict[str, str] = {}
        for line in output:
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "file" and "\t" in value:
                size, _, path = value.partition("\t")
                info["files"].append(GgufFile(path=path, size=int(size) if size.isdigit() else None))
            elif key == "kv" and "\t" in value:
                name, _, text = value.partition("\t")
                kv[name] = text.strip()
            elif key == "vocab":
                info["vocab"] = _int(value)
            elif key == "error":
                info["error"] = value.strip() or "unreadable"
        if not info["files"] and info["error"] is None:
            return None  # neither our reader's lines nor its error: python3 did not run it
        arch = kv.get("general.architecture")
        info["architecture"], info["name"] = arch, kv.get("general.name")
        info["split_count"] = _int(kv.get("split.count", ""))
        if arch:
            prefix = arch + "."
            info["layers"] = _int(kv.get(prefix + "block_count", ""))
            info["context"] = _int(kv.get(prefix + "context_length", ""))
            info["embedding"] = _int(kv.get(prefix + "embedding_length", ""))
            info["vocab"] = _int(kv.get(prefix + "vocab_size", "")) or info["vocab"]
            info["heads"] = _ints(kv.get(prefix + "attention.head_count", ""))
            info["kv_heads"] = _ints(kv.get(prefix + "attention.head_count_kv", "")) or info["heads"]
            for field, key in (("key_length", "key_length"), ("value_length", "value_length"),
                               ("kv_lora_rank", "kv_lora_rank"), ("sliding_window", "sliding_window")):
                info[field] = _int(kv.get(prefix + "attention." + key, ""))
        sized = info["key_length"] or (info["embedding"] and info["heads"])
        if info["error"] is None and (not arch or info["layers"] is None or not info["kv_heads"] or not sized):
            info["error"] = "the GGUF metadata lacks the architecture, block count, attention heads or head size"
        return info
