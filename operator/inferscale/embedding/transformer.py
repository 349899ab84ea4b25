"""The BERT encoder of all-MiniLM-L6-v2 in numpy: weights in, one vector per text out.

Pure: numpy only, no files, no torch. The weights arrive as the ``name -> array`` mapping that a
safetensors file holds (Hugging Face's ``BertModel`` names); :func:`encoder_weights` checks them
against the configuration once so the forward pass never meets a missing or misshapen tensor.

The forward pass is the standard post-layer-norm BERT with the sentence-transformers pooling of
this model: the mean of the last layer over the real tokens, then L2 normalisation. Texts of one
batch are padded to the longest and masked, so a batch gives the same vectors as one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferscale.errors import InferscaleError

Array = npt.NDArray[np.float32]
MODEL_NAME = "all-MiniLM-L6-v2"

# Abramowitz and Stegun 7.1.26: erf to within 1.5e-7, enough for float32 activations. The exact
# erf GELU is what BERT was trained with; the tanh approximation differs by up to 1e-3 and,
# worse, its x**3 makes subnormal floats that slow numpy down tenfold on this model.
_ERF_P = np.float32(0.3275911)
_ERF_A = (
    np.float32(0.254829592),
    np.float32(-0.284496736),
    np.float32(1.421413741),
    np.float32(-1.453152027),
    np.float32(1.061405429),
)
_SQRT_HALF = np.float32(0.7071067811865476)
_ERF_SATURATES = np.float32(6.0)  # erf(6) = 1 - 2e-17: clipping keeps exp() off subnormals


_QKV = ("query", "key", "value")


class EmbeddingUnavailable(InferscaleError):
    """The embedding model is missing, corrupt or does not match its configuration."""


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    """The shape of a BERT encoder, as its ``config.json`` gives it."""

    vocab_size: int = 30522
    hidden_size: int = 384
    layers: int = 6
    heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, config: Mapping[str, object]) -> EncoderConfig:
        """Read the fields this encoder needs from a Hugging Face ``config.json``."""
        try:
            made = cls(
                vocab_size=_positive(config, "vocab_size"),
                hidden_size=_positive(config, "hidden_size"),
                layers=_positive(config, "num_hidden_layers"),
                heads=_positive(config, "num_attention_heads"),
                intermediate_size=_positive(config, "intermediate_size"),
                max_positions=_positive(config, "max_position_embeddings"),
                layer_norm_eps=float(str(config.get("layer_norm_eps", 1e-12))),
            )
        except ValueError as err:
            raise EmbeddingUnavailable(f"the model's config.json is not usable: {err}") from err
        if made.hidden_size % made.heads:
            raise EmbeddingUnavailable("config.json: hidden_size is not a multiple of the heads")
        if config.get("hidden_act", "gelu") != "gelu":
            raise EmbeddingUnavailable(f"config.json: hidden_act {config.get('hidden_act')!r}")
        return made


def _positive(config: Mapping[str, object], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class LayerWeights:
    """One transformer layer, with Q, K and V fused into one matrix for one matmul."""

    qkv: Array  # (hidden, 3 * hidden), input on the left
    qkv_bias: Array
    attention_out: Array
    attention_out_bias: Array
    attention_norm: tuple[Array, Array]
    intermediate: Array
    intermediate_bias: Array
    output: Array
    output_bias: Array
    output_norm: tuple[Array, Array]


@dataclass(frozen=True, slots=True)
class EncoderWeights:
    """Every tensor of the encoder, checked and laid out for the forward pass."""

    config: EncoderConfig
    word: Array
    position: Array
    token_type: Array
    embedding_norm: tuple[Array, Array]
    layers: tuple[LayerWeights, ...]


def encoder_weights(tensors: Mapping[str, np.ndarray], config: EncoderConfig) -> EncoderWeights:
    """Check a safetensors mapping against ``config`` and lay it out for :func:`encode_batch`.

    Raises:
        EmbeddingUnavailable: a tensor is missing or has the wrong shape.
    """
    h, inner = config.hidden_size, config.intermediate_size
    take = _Taker(tensors)
    layers = []
    for i in range(config.layers):
        p = f"encoder.layer.{i}."
        q, k, v = (take(f"{p}attention.self.{n}.weight", (h, h)) for n in _QKV)
        qb, kb, vb = (take(f"{p}attention.self.{n}.bias", (h,)) for n in _QKV)
        layers.append(
            LayerWeights(
                qkv=np.ascontiguousarray(np.concatenate([q, k, v]).T),
                qkv_bias=np.concatenate([qb, kb, vb]),
                attention_out=np.ascontiguousarray(
                    take(f"{p}attention.output.dense.weight", (h, h)).T
                ),
                attention_out_bias=take(f"{p}attention.output.dense.bias", (h,)),
                attention_norm=take.norm(f"{p}attention.output.LayerNorm", h),
                intermediate=np.ascontiguousarray(
                    take(f"{p}intermediate.dense.weight", (inner, h)).T
                ),
                intermediate_bias=take(f"{p}intermediate.dense.bias", (inner,)),
                output=take.transposed(f"{p}output.dense.weight", (h, inner)),
                output_bias=take(f"{p}output.dense.bias", (h,)),
                output_norm=take.norm(f"{p}output.LayerNorm", h),
            )
        )
    return EncoderWeights(
        config=config,
        word=take("embeddings.word_embeddings.weight", (config.vocab_size, h)),
        position=take("embeddings.position_embeddings.weight", (config.max_positions, h)),
        token_type=take("embeddings.token_type_embeddings.weight", (None, h)),
        embedding_norm=take.norm("embeddings.LayerNorm", h),
        layers=tuple(layers),
    )


class _Taker:
    """Fetches tensors by name, as float32, refusing missing or misshapen ones."""

    def __init__(self, tensors: Mapping[str, np.ndarray]) -> None:
        self._tensors = tensors

    def __call__(self, name: str, shape: tuple[int | None, ...]) -> Array:
        tensor = self._tensors.get(name)
        if tensor is None:
            raise EmbeddingUnavailable(f"the model has no tensor {name}")
        if len(tensor.shape) != len(shape) or any(
            want is not None and got != want for got, want in zip(tensor.shape, shape, strict=True)
        ):
            raise EmbeddingUnavailable(f"tensor {name} has shape {tensor.shape}, expected {shape}")
        return np.asarray(tensor, dtype=np.float32)

    def transposed(self, name: str, shape: tuple[int, int]) -> Array:
        """A dense layer's (out, in) weight as (in, out), contiguous: activations @ weight."""
        return np.ascontiguousarray(self(name, shape).T)

    def norm(self, prefix: str, size: int) -> tuple[Array, Array]:
        return self(f"{prefix}.weight", (size,)), self(f"{prefix}.bias", (size,))


def encode_batch(weights: EncoderWeights, token_ids: Sequence[Sequence[int]]) -> Array:
    """Mean-pooled, L2-normalised sentence vectors of already tokenised texts.

    Each entry of ``token_ids`` is one text with its special tokens ([CLS] ... [SEP]), at most
    ``max_positions`` long; the batch is padded to its longest entry and the padding masked out.
    """
    config = weights.config
    if not token_ids:
        return np.zeros((0, config.hidden_size), dtype=np.float32)
    lengths = np.array([len(ids) for ids in token_ids])
    if lengths.min() < 1 or lengths.max() > config.max_positions:
        raise ValueError(f"every text needs 1 to {config.max_positions} tokens")
    batch, width = len(token_ids), int(lengths.max())
    ids = np.zeros((batch, width), dtype=np.int64)
    for row, text_ids in enumerate(token_ids):
        ids[row, : len(text_ids)] = text_ids
    if ids.max() >= config.vocab_size or ids.min() < 0:
        raise ValueError("a token id is outside the vocabulary")
    mask = np.arange(width)[None, :] < lengths[:, None]  # (batch, width)
    x = weights.word[ids] + weights.position[:width][None] + weights.token_type[0]
    x = _layer_norm(x, weights.embedding_norm, config.layer_norm_eps).reshape(batch * width, -1)
    # Padding keys get -inf-like scores so they take no attention; a large finite value keeps
    # exp() exact zeros rather than NaNs.
    key_bias = np.where(mask, np.float32(0), np.float32(-1e9))[:, None, None, :]
    for layer in weights.layers:
        x = _layer(x, layer, key_bias, config)
    hidden = x.reshape(batch, width, -1)
    pooled = (hidden * mask[..., None]).sum(axis=1) / lengths[:, None].astype(np.float32)
    return _normalise_rows(pooled.astype(np.float32))


def _layer(x: Array, layer: LayerWeights, key_bias: Array, config: EncoderConfig) -> Array:
    """One post-norm transformer layer over ``x`` (batch * width, hidden).

    The dense parts run on the flattened 2-D activations (one BLAS call each, whatever the
    batch); only attention needs the (batch, heads, width, head size) view.
    """
    batch = key_bias.shape[0]
    tokens, hidden = x.shape
    width, heads = tokens // batch, config.heads
    head_size = hidden // heads
    qkv = (x @ layer.qkv + layer.qkv_bias).reshape(batch, width, 3, heads, head_size)
    qkv = qkv.transpose(2, 0, 3, 1, 4)
    query, key, value = qkv[0], qkv[1], qkv[2]  # (batch, heads, width, head_size)
    scores = query @ key.transpose(0, 1, 3, 2) * np.float32(1.0 / np.sqrt(head_size)) + key_bias
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    context = (weights @ value).transpose(0, 2, 1, 3).reshape(tokens, hidden)
    eps = config.layer_norm_eps
    attended = context @ layer.attention_out + layer.attention_out_bias + x
    x = _layer_norm(attended, layer.attention_norm, eps)
    inner = _gelu(x @ layer.intermediate + layer.intermediate_bias)
    return _layer_norm(inner @ layer.output + layer.output_bias + x, layer.output_norm, eps)


def _layer_norm(x: Array, scale_shift: tuple[Array, Array], eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    scale, shift = scale_shift
    normed: Array = centred / np.sqrt(variance + np.float32(eps)) * scale + shift
    return normed


def _gelu(x: Array) -> Array:
    """The exact (erf) GELU, with erf from a polynomial that stays in normal floats."""
    z = np.clip(x * _SQRT_HALF, -_ERF_SATURATES, _ERF_SATURATES)
    t = np.float32(1) / (np.float32(1) + _ERF_P * np.abs(z))
    a1, a2, a3, a4, a5 = _ERF_A
    poly = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t
    erf = np.float32(1) - poly * np.exp(-z * z)
    out: Array = np.float32(0.5) * x * (np.float32(1) + np.copysign(erf, z))
    return out


def _normalise_rows(vectors: Array) -> Array:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: Array = vectors / np.maximum(norms, np.float32(1e-12))
    return out
