"""LLM judge through any OpenAI-compatible chat-completions endpoint.

One request per (record, response) asks for a strict JSON verdict
``{"correct": bool, "compliant": bool, "score": float in [0, 1], "issues": [str]}`` with a
versioned zh / en prompt (prompts/judge_<version>.yaml). Correctness uses ``score``; risk control
may reuse ``compliant`` (same call, same cache entry).

Robustness, because this runs inside training:

* timeout per request, retries with exponential backoff and jitter on timeouts, connection
  errors, 429, 5xx and malformed verdicts (4xx other than 429 are not retried: a wrong key or
  model name will not fix itself);
* at most ``concurrency`` requests in flight per event loop;
* an on-disk cache (sqlite) keyed by sha256 of (prompt version, model, request fields), written
  only for valid verdicts, so a failure is retried by the next step instead of being frozen;
* failure policy: :class:`JudgeVerdict` with ``failed=True`` and ``score = neutral_score``,
  counted in :attr:`JudgeClient.stats`; no method raises for a transport or model error.

Endpoint, model and key come from :class:`~reward_fns.config.JudgeConfig` or the environment
(``RELATE_JUDGE_BASE_URL``, ``RELATE_JUDGE_MODEL``, ``RELATE_JUDGE_API_KEY`` by default). The base
URL is the part before ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import sqlite3
import threading
import weakref
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from relate_common.ad_format import ParsedAd
from relate_common.records import AdRecord

from reward_fns.config import JudgeConfig

PROMPT_DIR = Path(__file__).parent / "prompts"
VERDICT_KEYS = ("correct", "compliant", "score", "issues")


class VerdictError(ValueError):
    """The judge's message is not a valid verdict (the reason says which rule it broke)."""


@dataclass(frozen=True)
class JudgeRequest:
    """Everything the judge sees about one response (also the cache key's content)."""

    language: str
    query: str
    bidword: str
    selling_points: tuple[str, ...]
    landing_page: str
    title: str
    description: str

    @classmethod
    def from_record(cls, record: AdRecord, parsed: ParsedAd) -> "JudgeRequest":
        return cls(
            language=record.language,
            query=record.query,
            bidword=record.bidword,
            selling_points=tuple(record.selling_points),
            landing_page=record.landing_page,
            title=parsed.title,
            description=parsed.description,
        )


@dataclass
class JudgeVerdict:
    """A verdict, or the neutral stand-in for a failed call (``failed=True``)."""

    score: float
    correct: bool | None = None
    compliant: bool | None = None
    issues: list[str] = field(default_factory=list)
    failed: bool = False
    error: str | None = None  # failure kind: timeout, connect_error, http_5xx, malformed_verdict, ...
    cached: bool = False

    @classmethod
    def neutral(cls, score: float, error: str) -> "JudgeVerdict":
        return cls(score=score, failed=True, error=error)


def parse_verdict(content: str) -> JudgeVerdict:
    """Parse a judge message strictly; raise :class:`VerdictError` on any deviation.

    Accepted: one JSON object, optionally inside a single ```json fence (models add one even when
    told not to; nothing else may surround it). Required: ``correct`` and ``compliant`` real
    booleans, ``score`` a finite number in [0, 1] (not a bool, not a string), ``issues`` a list
    of strings. Extra keys are ignored.
    """
    text = content.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S | re.I)
    if fence:
        text = fence.group(1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise VerdictError(f"not JSON: {e.msg}") from e
    if not isinstance(obj, dict):
        raise VerdictError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in VERDICT_KEYS if k not in obj]
    if missing:
        raise VerdictError(f"missing key(s): {', '.join(missing)}")
    for k in ("correct", "compliant"):
        if not isinstance(obj[k], bool):
            raise VerdictError(f"'{k}' must be true or false, got {obj[k]!r}")
    score = obj["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not (0.0 <= float(score) <= 1.0):
        raise VerdictError(f"'score' must be a number in [0, 1], got {score!r}")
    issues = obj["issues"]
    if not isinstance(issues, list) or not all(isinstance(i, str) for i in issues):
        raise VerdictError("'issues' must be a list of strings")
    return JudgeVerdict(score=float(score), correct=obj["correct"], compliant=obj["compliant"], issues=list(issues))


@lru_cache(maxsize=8)
def load_prompt(version: str) -> dict[str, dict[str, str]]:
    """The zh / en prompt templates of ``version`` (prompts/judge_<version>.yaml)."""
    import yaml

    path = PROMPT_DIR / f"judge_{version}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"judge prompt version '{version}' not found ({path})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for lang in ("zh", "en"):
        if not isinstance(data.get(lang), dict) or not {"system", "user"} <= set(data[lang]):
            raise ValueError(f"{path}: '{lang}' needs 'system' and 'user' templates")
    return {lang: data[lang] for lang in ("zh", "en")}


def build_messages(req: JudgeRequest, version: str) -> list[dict[str, str]]:
    """Chat messages for one request in the request's language (en for anything not zh)."""
    tmpl = load_prompt(version)["zh" if req.language == "zh" else "en"]
    sep = "；" if req.language == "zh" else "; "
    none = "（无）" if req.language == "zh" else "(none)"
    user = tmpl["user"].format(
        query=req.query,
        bidword=req.bidword,
        selling_points=sep.join(req.selling_points) or none,
        landing_page=req.landing_page or none,
        title=req.title or none,
        description=req.description or none,
    )
    return [{"role": "system", "content": tmpl["system"]}, {"role": "user", "content": user}]


def cache_key(req: JudgeRequest, model: str, version: str) -> str:
    """sha256 hex of the prompt version, the model and every request field."""
    payload = json.dumps({"v": version, "model": model, "req": asdict(req)}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8", errors="surrogatepass")).hexdigest()


class VerdictCache:
    """sqlite table key -> verdict JSON. WAL mode: several reward workers may share the file."""

    def __init__(self, cache_dir: str | os.PathLike):
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / "judge_verdicts.sqlite"
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False)
        with self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL)")

    def get(self, key: str) -> JudgeVerdict | None:
        with self._lock:
            row = self._conn.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            v = parse_verdict(row[0])
        except VerdictError:
            return None  # a corrupt row is a miss, and will be overwritten
        v.cached = True
        return v

    def put(self, key: str, verdict: JudgeVerdict) -> None:
        doc = json.dumps(
            {"correct": verdict.correct, "compliant": verdict.compliant, "score": verdict.score, "issues": verdict.issues},
            ensure_ascii=False,
        )
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO verdicts (key, verdict) VALUES (?, ?)", (key, doc))

    def close(self) -> None:
        self._conn.close()


class _Failure(Exception):
    def __init__(self, kind: str, retryable: bool, retry_after: float | None = None):
        super().__init__(kind)
        self.kind, self.retryable, self.retry_after = kind, retryable, retry_after


class JudgeClient:
    """Async-first judge client with a sync wrapper; see the module docstring for the policy."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        cfg: JudgeConfig | None = None,
        cache_dir: str | os.PathLike | None = None,
        seed: int | None = None,
    ):
        self.cfg = cfg or JudgeConfig()
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        load_prompt(self.cfg.prompt_version)  # fail at construction, not at the first sample
        if cache_dir is None:
            cache_dir = self.cfg.cache_dir
        if cache_dir is None:
            from relate_common.assets import cache_root

            cache_dir = cache_root() / "judge"
        self.cache = VerdictCache(cache_dir)
        self._rng = random.Random(seed)
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        # httpx clients and semaphores belong to one event loop each.
        self._loop_state: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_config(cls, cfg: JudgeConfig, **kwargs: Any) -> "JudgeClient | None":
        """A client from explicit config values or the environment; None when no base URL is set."""
        base_url = cfg.base_url or os.environ.get(cfg.base_url_env)
        if not base_url:
            return None
        model = cfg.model or os.environ.get(cfg.model_env) or "default"
        return cls(base_url, model, os.environ.get(cfg.api_key_env), cfg, **kwargs)

    # ---- stats -----------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, cache_hits, http_calls, retries, successes, failures, failure:<kind>."""
        with self._stats_lock:
            return dict(self._stats)

    # ---- async API ---------------------------------------------------------------------------
    def _state(self) -> tuple[Any, asyncio.Semaphore]:
        import httpx

        loop = asyncio.get_running_loop()
        st = self._loop_state.get(loop)
        if st is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            client = httpx.AsyncClient(timeout=httpx.Timeout(self.cfg.timeout_s), headers=headers)
            st = (client, asyncio.Semaphore(self.cfg.concurrency))
            self._loop_state[loop] = st
        return st

    async def aclose(self) -> None:
        """Close this event loop's HTTP client (the next call opens a new one)."""
        loop = asyncio.get_running_loop()
        st = self._loop_state.pop(loop, None)
        if st is not None:
            await st[0].aclose()

    async def _call_once(self, messages: list[dict[str, str]]) -> JudgeVerdict:
        import httpx

        client, _ = self._state()
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        self._count("http_calls")
        try:
            resp = await client.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.TimeoutException as e:
            raise _Failure("timeout", True) from e
        except httpx.TransportError as e:
            raise _Failure("connect_error", True) from e
        if resp.status_code == 429 or resp.status_code >= 500:
            retry_after = None
            try:
                retry_after = float(resp.headers.get("retry-after", ""))
            except ValueError:
                pass
            raise _Failure("http_429" if resp.status_code == 429 else "http_5xx", True, retry_after)
        if resp.status_code >= 400:
            raise _Failure("http_4xx", False)
        try:
            content = resp.json()["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise _Failure("bad_response", True) from e
        try:
            return parse_verdict(content)
        except VerdictError as e:
            raise _Failure("malformed_verdict", True) from e

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        base = self.cfg.backoff_s * (2**attempt)
        delay = base + self._rng.uniform(0.0, 0.25 * base)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.cfg.backoff_max_s)

    async def ajudge(self, req: JudgeRequest) -> JudgeVerdict:
        """Verdict for one request; never raises for endpoint or model errors."""
        self._count("requests")
        key = cache_key(req, self.model, self.cfg.prompt_version)
        cached = self.cache.get(key)
        if cached is not None:
            self._count("cache_hits")
            return cached
        messages = build_messages(req, self.cfg.prompt_version)
        _, sem = self._state()
        kind = "unknown"
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._count("retries")
            try:
                async with sem:  # the limit covers requests in flight, not backoff sleeps
                    verdict = await self._call_once(messages)
            except _Failure as f:
                kind = f.kind
                if not f.retryable or attempt == self.cfg.max_retries:
                    break
                await asyncio.sleep(self._backoff(attempt, f.retry_after))
                continue
            self.cache.put(key, verdict)
            self._count("successes")
            return verdict
        self._count("failures")
        self._count(f"failure:{kind}")
        return JudgeVerdict.neutral(self.cfg.neutral_score, kind)

    async def ajudge_many(self, reqs: list[JudgeRequest]) -> list[JudgeVerdict]:
        """Verdicts in input order; at most ``concurrency`` HTTP requests in flight."""
        return list(await asyncio.gather(*(self.ajudge(r) for r in reqs)))

    # ---- sync API ----------------------------------------------------------------------------
    def judge_many(self, reqs: list[JudgeRequest]) -> list[JudgeVerdict]:
        """Blocking version of :meth:`ajudge_many`, usable inside or outside an event loop."""
        if not reqs:
            return []

        async def run() -> list[JudgeVerdict]:
            try:
                return await self.ajudge_many(reqs)
            finally:
                await self.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run())
        # Called from inside a running loop (e.g. an async reward manager using the sync API):
        # run on a private loop in a helper thread instead of deadlocking this one.
        result: list[list[JudgeVerdict]] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                result.append(asyncio.run(run()))
            except BaseException as e:  # re-raised in the caller's thread
                error.append(e)

        t = threading.Thread(target=target, name="relate-judge", daemon=True)
        t.start()
        t.join()
        if error:
            raise error[0]
        return result[0]

    def judge(self, req: JudgeRequest) -> JudgeVerdict:
        return self.judge_many([req])[0]

    def close(self) -> None:
        self.cache.close()
