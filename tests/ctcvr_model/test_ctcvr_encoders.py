"""ctcvr_model.encoders: the TextEncoder contract, load_encoder's per-process cache, CachedEncoder."""

from __future__ import annotations

import os
import sqlite3
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from ctcvr_model.encoders import DEFAULT_ENCODER, CachedEncoder, TextEncoder, load_encoder, text_key


class CountingEncoder:
    """A deterministic TextEncoder that records how many texts it was asked to embed."""

    name, dim = "counting-8", 8

    def __init__(self):
        self.calls, self.texts = 0, 0

    def encode(self, texts, batch_size=64):
        self.calls += 1
        self.texts += len(texts)
        out = np.array([[hash((t, i)) % 1000 + 1 for i in range(self.dim)] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True) if len(texts) else out.reshape(0, self.dim)


def _unit_rows(x: np.ndarray) -> bool:
    return np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_default_encoder_is_multilingual_and_cached_per_process():
    assert DEFAULT_ENCODER == "use-multilingual"
    enc = load_encoder()
    assert load_encoder(DEFAULT_ENCODER) is enc
    assert isinstance(enc, TextEncoder) and enc.name == "use-multilingual" and enc.dim == 512
    x = enc.encode(["减肥最快的方法", "cheap flights", "", "😀🎉"], batch_size=2)
    assert x.shape == (4, 512) and x.dtype == np.float32 and _unit_rows(x)
    assert enc.encode([]).shape == (0, 512)
    # Chinese paraphrases sit closer together than unrelated Chinese text.
    a, b, c = enc.encode(["快速减肥方法", "怎样快速减肥", "汽车保险报价"])
    assert a @ b > a @ c


def test_minilm_encoder_is_bundled_and_normalised():
    enc = load_encoder("minilm")
    assert enc.name == "minilm" and enc.dim == 384 and load_encoder("minilm") is enc
    x = enc.encode(["book a dentist", "dental appointment", "car insurance"])
    assert x.dtype == np.float32 and x.shape == (3, 384) and _unit_rows(x)
    assert x[0] @ x[1] > x[0] @ x[2]


def test_cache_hits_on_second_call_and_across_instances(tmp_path):
    inner = CountingEncoder()
    cached = CachedEncoder(inner, tmp_path / "cache")
    texts = ["a", "b", "a", "中文", ""]
    first = cached.encode(texts)
    assert inner.texts == 4  # duplicates are encoded once
    second = cached.encode(texts)
    assert inner.texts == 4 and cached.hits == 5 and cached.misses == 5
    np.testing.assert_array_equal(first, second)
    # A new process (new instance, cold memory) reads the same sqlite file.
    inner2 = CountingEncoder()
    again = CachedEncoder(inner2, tmp_path / "cache").encode(["b", "a", "new"])
    assert inner2.texts == 1
    np.testing.assert_array_equal(again[:2], first[[1, 0]])
    assert cached.name == inner.name and cached.dim == inner.dim and isinstance(cached, TextEncoder)


def test_cache_keys_depend_on_encoder_name(tmp_path):
    assert text_key("a", "x") != text_key("b", "x")
    one, other = CountingEncoder(), CountingEncoder()
    other.name = "another-encoder"
    CachedEncoder(one, tmp_path).encode(["same text"])
    CachedEncoder(other, tmp_path).encode(["same text"])
    assert other.texts == 1  # no cross-encoder hits


def test_cache_ignores_rows_of_the_wrong_size(tmp_path):
    inner = CountingEncoder()
    cached = CachedEncoder(inner, tmp_path)
    with sqlite3.connect(cached.path) as conn:  # e.g. left behind by another version of the encoder
        conn.execute("INSERT INTO emb (key, dim, vec) VALUES (?, ?, ?)", (text_key(inner.name, "t"), 4, b"\x00" * 16))
    out = cached.encode(["t"])
    assert inner.texts == 1 and _unit_rows(out)


def test_cache_is_thread_safe(tmp_path):
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    errors = []

    def work(k):
        try:
            for i in range(20):
                cached.encode([f"text {i}", f"thread {k} {i}"])
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cached.encode([f"text {i}" for i in range(20)]).shape == (20, 8)


def test_unknown_encoder_spec_raises():
    with pytest.raises(Exception):
        load_encoder("/definitely/not/a/model/folder")
