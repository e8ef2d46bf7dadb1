"""The Python API the rewards use: batch scoring and an asyncio micro-batcher.

    scorer = CTCVRScorer.load("models/ctcvr")              # CUDA when present, else CPU
    p_ctr, p_ctcvr = scorer.score(items)                    # items: Sequence[Mapping], see ITEM_FIELDS
    p_ctr, p_ctcvr = await scorer.score_one_async(item)     # coalesced with concurrent callers

An item is a mapping with ``query``, ``bidword``, ``selling_points`` (list of str, or one
'|'-separated string), ``title`` and ``description``, and optionally ``industry`` (the advertiser's
vertical, str). A model trained with the industry feature (the default) uses the industry when it is
given and in the training vocabulary; an absent, None, empty or unseen industry scores with the
"unknown" bucket (what the model learned to predict without an industry). Other keys are ignored.

verl's reward loop calls the reward once per sample, concurrently, from an event loop. Scoring one
sample at a time would run the encoder and the MLP on batches of one; :class:`AsyncCTCVRScorer`
queues those calls and scores them together (up to ``max_batch_size`` items, waiting at most
``max_wait_ms`` for a batch to fill), in a worker thread so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ctcvr_model.checkpoint import SavedModel, load_model, read_config
from ctcvr_model.device import default_device
from ctcvr_model.encoders import TextEncoder, load_encoder, maybe_cached
from ctcvr_model.features import check_item, encode_items, gather_batch
from ctcvr_model.model import MODEL_NAMES, CTCVRNet
from ctcvr_model.schema import ModelDirError


class CTCVRScorer:
    """A loaded model plus its encoder: items in, probabilities out. Thread-safe."""

    _shared: dict[tuple[str, str, str], "CTCVRScorer"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, net: CTCVRNet, saved: SavedModel, encoder: TextEncoder, device: torch.device,
                 model: str | None = None, encode_batch_size: int = 64):
        self.net = net.to(device).eval()
        self.saved = saved
        self.encoder = encoder
        self.device = device
        self.model = model or saved.default_model
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model '{self.model}'; choose one of {MODEL_NAMES}")
        self.encode_batch_size = encode_batch_size
        self.forward_calls = 0  # batched predictions run so far (the micro-batcher test counts these)
        self._lock = threading.Lock()
        self._batcher: AsyncCTCVRScorer | None = None

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device | None = None, model: str | None = None,
             encoder: TextEncoder | str | None = None, cache_dir: str | Path | None = None,
             encode_batch_size: int = 64) -> "CTCVRScorer":
        """Load a directory written by ``ctcvr_model.train``.

        device: None -> CUDA when available, else CPU. model: "esmm" (default), "naive" or "logreg".
        encoder: override the encoder named in config.json (an object or a spec); its dimension must
        match the trained one. cache_dir: cache embeddings on disk (see CachedEncoder).
        Raises ModelDirError saying what is wrong with the directory and what to do.
        """
        dev = default_device(device)
        cfg = read_config(model_dir)  # fail on a bad directory before spending seconds on the encoder
        if encoder is None or isinstance(encoder, str):
            spec = encoder or cfg["encoder"]["name"]
            try:
                encoder = load_encoder(spec, device=str(dev))  # the net's device, CPU included
            except Exception as e:  # sentence-transformers raises OSError/ValueError/HF errors alike
                raise ModelDirError(
                    model_dir, f"cannot load the encoder '{spec}' named in config.json ({type(e).__name__}: {e})",
                    "Make the encoder available offline (a local sentence-transformers folder) and pass it as encoder=...",
                ) from None
        encoder = maybe_cached(encoder, cache_dir)
        net, saved = load_model(model_dir, encoder_dim=encoder.dim)
        return cls(net, saved, encoder, dev, model=model, encode_batch_size=encode_batch_size)

    @classmethod
    def shared(cls, model_dir: str | Path, device: str | torch.device | None = None, model: str | None = None) -> "CTCVRScorer":
        """One scorer per (directory, device, model) per process: reward code calls this per sample."""
        key = (str(Path(model_dir).resolve()), str(default_device(device)), model or "")
        with cls._shared_lock:
            scorer = cls._shared.get(key)
            if scorer is None:
                scorer = cls._shared[key] = cls.load(model_dir, device=device, model=model)
            return scorer

    @torch.no_grad()
    def predict(self, items: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """p_ctr, p_cvr, p_ctcvr, each (N,) float64, for N items (validated; ItemError names the bad one).

        Items may carry ``industry``; without it (or with one not seen in training) the unknown bucket is used.
        """
        for i, item in enumerate(items):
            check_item(item, i, source="items")
        if len(items) == 0:
            return {k: np.zeros(0) for k in ("p_ctr", "p_cvr", "p_ctcvr")}
        with self._lock:
            rows = encode_items(items, self.encoder, self.saved.features, batch_size=self.encode_batch_size)
            emb = torch.from_numpy(rows.emb).to(self.device)
            x_slots, extra = gather_batch(rows, emb, np.arange(len(rows)))
            out = self.net(x_slots, extra, model=self.model)
            self.forward_calls += 1
            return {k: out[k].double().cpu().numpy() for k in ("p_ctr", "p_cvr", "p_ctcvr")}

    def score(self, items: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(p_ctr, p_ctcvr), each (N,) float64 in (0, 1), for N items."""
        pred = self.predict(items)
        return pred["p_ctr"], pred["p_ctcvr"]

    def score_one(self, item: Mapping[str, Any]) -> tuple[float, float]:
        """(p_ctr, p_ctcvr) of one item, synchronously."""
        p_ctr, p_ctcvr = self.score([item])
        return float(p_ctr[0]), float(p_ctcvr[0])

    def batcher(self, max_batch_size: int = 64, max_wait_ms: float = 5.0) -> "AsyncCTCVRScorer":
        """The scorer's default micro-batcher (created on first use with these settings)."""
        if self._batcher is None:
            self._batcher = AsyncCTCVRScorer(self, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
        return self._batcher

    async def score_one_async(self, item: Mapping[str, Any]) -> tuple[float, float]:
        """(p_ctr, p_ctcvr) of one item, batched with concurrent callers (see AsyncCTCVRScorer)."""
        return await self.batcher().score_one(item)


@dataclass
class _LoopState:
    queue: asyncio.Queue
    task: asyncio.Task


class AsyncCTCVRScorer:
    """Coalesce concurrent single-item calls into batched ``scorer.predict`` calls.

    One worker task per event loop takes the first waiting item, then gathers more until
    ``max_batch_size`` items are queued or ``max_wait_ms`` has passed since the first, and scores them
    in one call on a dedicated thread. A malformed item fails only its own caller (it is checked
    before it is queued); an error inside a batch is raised to every caller of that batch.
    """

    def __init__(self, scorer: CTCVRScorer, max_batch_size: int = 64, max_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.scorer = scorer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self.batches = 0
        self.items = 0
        self.batch_sizes: list[int] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctcvr-scorer")
        self._states: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]" = weakref.WeakKeyDictionary()

    def _state(self) -> _LoopState:
        # Queues and tasks belong to one event loop; a reward worker may run several loops over its life.
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None or state.task.done():
            queue: asyncio.Queue = asyncio.Queue()
            state = _LoopState(queue, loop.create_task(self._worker(queue)))
            self._states[loop] = state
        return state

    async def score_one(self, item: Mapping[str, Any]) -> tuple[float, float]:
        """(p_ctr, p_ctcvr) of one item."""
        pred = await self.predict_one(item)
        return pred["p_ctr"], pred["p_ctcvr"]

    async def predict_one(self, item: Mapping[str, Any]) -> dict[str, float]:
        """{"p_ctr", "p_cvr", "p_ctcvr"} of one item."""
        check_item(item, 0, source="item")
        state = self._state()
        fut = asyncio.get_running_loop().create_future()
        await state.queue.put((item, fut))
        return await fut

    async def score_many(self, items: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
        """Convenience: score_one for every item, concurrently."""
        return list(await asyncio.gather(*(self.score_one(it) for it in items)))

    async def _collect(self, queue: asyncio.Queue) -> list[tuple[Mapping[str, Any], asyncio.Future]]:
        """Wait for one item, then gather up to max_batch_size within max_wait_s."""
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _worker(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            live = [(item, fut) for item, fut in batch if not fut.done()]  # skip cancelled callers
            if not live:
                continue
            try:
                pred = await loop.run_in_executor(self._executor, self.scorer.predict, [item for item, _ in live])
            except Exception as e:  # noqa: BLE001 - delivered to the callers, who can handle it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.items += len(live)
            self.batch_sizes.append(len(live))
            for i, (_, fut) in enumerate(live):
                if not fut.done():
                    fut.set_result({k: float(v[i]) for k, v in pred.items()})

    async def aclose(self) -> None:
        """Stop this loop's worker (pending callers get CancelledError)."""
        loop = asyncio.get_running_loop()
        state = self._states.pop(loop, None)
        if state is not None:
            state.task.cancel()
            try:
                await state.task
            except asyncio.CancelledError:
                pass
