"""A tiny but valid llama GGUF model for tests: llama-server loads it and completes (garbage) text.

    from lab.tiny_model import write_tiny_model
    path = write_tiny_model(tmp_path / "tiny.gguf")      # about 2 MB, the same bytes every time
    # llama-server -m tiny.gguf --rpc w1:50052,w2:50052 -ngl all   -> layers spread over the workers

Llama architecture with LAYERS blocks (enough to spread over three RPC devices and the head), random
f16 weights from a fixed seed (so the file and its sha256 never change), and a SentencePiece ("llama")
vocabulary: <unk> <s> </s>, the 256 byte-fallback tokens <0x00>..<0xFF>, then "▁" and printable
ASCII characters, so any text tokenizes.

    python -m lab.tiny_model /tmp/tiny.gguf
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

NAME = "halo-tiny-llama"
LAYERS = 6
EMBED = 128
HEADS = 4
KV_HEADS = 2
FEED_FORWARD = 256
CONTEXT = 2048
SEED = 1151


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types of a byte-fallback SentencePiece vocabulary."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    words = ["▁"] + [chr(c) for c in range(33, 127)] + ["▁" + chr(c) for c in range(97, 123)]
    tokens += words
    types += [TokenType.NORMAL] * len(words)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(words))]
    return tokens, scores, [int(t) for t in types]


def write_tiny_model(path: str | Path) -> Path:
    """Write the tiny model to `path` (parents created) and return the path.

    The file appears whole or not at all (written aside, then renamed): a server may be serving it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write(GGUFWriter(partial, "llama"))
    os.replace(partial, path)
    return path


def write_tiny_split(directory: str | Path, parts: int = 3) -> list[Path]:
    """The same model split into `parts` files tiny-0000i-of-0000N.gguf (by the gguf package's writer,
    as llama.cpp's gguf-split names and links them: split.no / split.count / split.tensors.count)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = 1 + 9 * LAYERS + 2  # token_embd, 9 per block, output_norm and output
    per_part = -(-tensors // parts)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        _write(GGUFWriter(Path(tmp) / "tiny.gguf", "llama", split_max_tensors=per_part))
        written = sorted(Path(tmp).glob("tiny-*-of-*.gguf"))
        assert len(written) == parts, written
        for shard in written:
            os.replace(shard, directory / shard.name)
    return [directory / shard.name for shard in written]


def _write(writer: GGUFWriter) -> None:
    """The tiny model's metadata and tensors, written and closed."""
    tokens, scores, types = vocabulary()
    rng = np.random.default_rng(SEED)

    def weights(*shape: int) -> np.ndarray:  # numpy shape is the reverse of ggml's ne
        return (rng.standard_normal(shape) * 0.05).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    head_dim = EMBED // HEADS
    writer.add_name(NAME)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)

    writer.add_tensor("token_embd.weight", weights(len(tokens), EMBED))
    for i in range(LAYERS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones(EMBED))
        writer.add_tensor(f"{block}.attn_q.weight", weights(HEADS * head_dim, EMBED))
        writer.add_tensor(f"{block}.attn_k.weight", weights(KV_HEADS * head_dim, EMBED))
        writer.add_tensor(f"{block}.attn_v.weight", weights(KV_HEADS * head_dim, EMBED))
        writer.add_tensor(f"{block}.attn_output.weight", weights(EMBED, HEADS * head_dim))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones(EMBED))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(EMBED, FEED_FORWARD))
    writer.add_tensor("output_norm.weight", ones(EMBED))
    writer.add_tensor("output.weight", weights(len(tokens), EMBED))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    print(write_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))
