"""Write a tiny llama-architecture GGUF model with random weights and a real BPE vocabulary.

No small real model ships in a registry package under a licence that allows it, so the tests
run llama.cpp on this one: real shapes, a real tokenizer (GPT-2's BPE vocabulary, MIT, copied
from the vocabulary-only GGUF that llama.cpp keeps for its tokenizer tests), real attention and
sampling, and text that is noise. The weights come from a fixed seed, so the file is the same
on every machine.

Run by build.sh with the gguf-py package of the same llama.cpp tree on PYTHONPATH:

    python make_model.py --vocab models/ggml-vocab-gpt-2.gguf --out model.gguf
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gguf  # type: ignore[import-not-found]
import numpy as np

ARCH = "llama"
# A chat template for a model that was never trained to chat: plain role-prefixed turns, so
# /v1/chat/completions renders prompts through llama.cpp's Jinja engine like a real model's.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def copy_tokenizer(vocab: Path, writer: gguf.GGUFWriter) -> int:
    """Copy every ``tokenizer.*`` key of ``vocab`` into ``writer``; return the vocabulary size."""
    reader = gguf.GGUFReader(vocab)
    size = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        main = field.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
            if name == "tokenizer.ggml.tokens":
                size = len(value)
        else:
            writer.add_key_value(name, value, main)
    if size == 0:
        raise SystemExit(f"{vocab} holds no tokenizer.ggml.tokens")
    return size


def main() -> None:
    """Parse the options and write the model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, required=True, help="a vocabulary-only GGUF")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--embd", type=int, default=64, help="embedding width")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ff", type=int, default=256, help="feed-forward width")
    parser.add_argument("--context", type=int, default=2048, help="trained context length")
    opts = parser.parse_args()

    rng = np.random.default_rng(opts.seed)
    writer = gguf.GGUFWriter(opts.out, ARCH)
    writer.add_name("inferscale tiny random llama")
    writer.add_context_length(opts.context)
    writer.add_embedding_length(opts.embd)
    writer.add_block_count(opts.layers)
    writer.add_feed_forward_length(opts.ff)
    writer.add_head_count(opts.heads)
    writer.add_head_count_kv(opts.heads)
    writer.add_rope_dimension_count(opts.embd // opts.heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = copy_tokenizer(opts.vocab, writer)
    writer.add_vocab_size(n_vocab)
    writer.add_chat_template(CHAT_TEMPLATE)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # numpy shape (rows, cols) is GGUF's (cols, rows): outputs by inputs, as llama.cpp wants.
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    e, f = opts.embd, opts.ff
    # No output.weight: llama.cpp ties the output projection to the token embeddings.
    writer.add_tensor("token_embd.weight", matrix(n_vocab, e))
    writer.add_tensor("output_norm.weight", ones(e))
    for i in range(opts.layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones(e))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{part}.weight", matrix(e, e))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones(e))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(f, e))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(f, e))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(e, f))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {opts.out} ({opts.out.stat().st_size / 1e6:.1f} MB, {n_vocab} tokens)")


if __name__ == "__main__":
    main()
