"""reward_fns.judge against a real chat-completions HTTP server on 127.0.0.1.

The server answers by rule, keyed on a marker in the ad title it receives:
  [[ok]] / none  -> a valid verdict (compliant unless the title says "best")
  [[slow]]       -> the valid verdict after 0.3 s
  [[timeout]]    -> sleeps 2 s (longer than the client's timeout)
  [[500]]        -> always HTTP 500
  [[500-once]]   -> HTTP 500 on the first request for this title, then a valid verdict
  [[429-once]]   -> HTTP 429 with Retry-After: 0, then a valid verdict
  [[400]]        -> HTTP 400 (not retried)
  [[malformed]]  -> a 200 whose message content is not JSON
  [[badbody]]    -> a 200 whose body is not JSON at all
  [[wrongtype]]  -> a verdict with score "high" (a string)
  [[fenced]]     -> a valid verdict wrapped in a ```json fence
Every request is bounded (sleeps <= 2 s) and the server stops at the end of the module.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reward_fns.config import JudgeConfig
from reward_fns.judge import (
    JudgeClient,
    JudgeRequest,
    VerdictError,
    build_messages,
    cache_key,
    load_prompt,
    parse_verdict,
)


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.seen: dict[str, int] = {}
        self.inflight = 0
        self.max_inflight = 0


def _verdict(title: str) -> dict:
    bad = "best" in title.lower() or "最" in title
    return {"correct": not bad, "compliant": not bad, "score": 0.2 if bad else 0.9, "issues": ["superlative"] if bad else []}


def _make_handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes, headers: dict | None = None):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(length))
            user = req["messages"][-1]["content"]
            m = re.search(r"(?:\[Ad title\]|【广告标题】)\s*(.*)", user)
            title = m.group(1).strip() if m else ""
            marker = re.search(r"\[\[([a-z0-9-]+)\]\]", title)
            marker = marker.group(1) if marker else "ok"
            with state.lock:
                state.requests.append(req)
                state.headers.append(dict(self.headers))
                state.seen[title] = state.seen.get(title, 0) + 1
                nth = state.seen[title]
                if marker == "slow":  # requests left hanging by the timeout test must not count
                    state.inflight += 1
                    state.max_inflight = max(state.max_inflight, state.inflight)
            try:
                self._answer(marker, title, nth)
            finally:
                if marker == "slow":
                    with state.lock:
                        state.inflight -= 1

        def _answer(self, marker: str, title: str, nth: int):
            def chat(content: str) -> bytes:
                return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()

            if marker == "slow":
                time.sleep(0.3)
            if marker == "timeout":
                time.sleep(2.0)
            if marker == "500" or (marker == "500-once" and nth == 1):
                return self._send(500, b'{"error": "boom"}')
            if marker == "429-once" and nth == 1:
                return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0"})
            if marker == "400":
                return self._send(400, b'{"error": "bad model"}')
            if marker == "malformed":
                return self._send(200, chat("Sure! The ad looks fine to me."))
            if marker == "badbody":
                return self._send(200, b"<html>gateway</html>")
            if marker == "wrongtype":
                return self._send(200, chat(json.dumps({"correct": True, "compliant": True, "score": "high", "issues": []})))
            content = json.dumps(_verdict(title), ensure_ascii=False)
            if marker == "fenced":
                content = f"```json\n{content}\n```"
            return self._send(200, chat(content))

    return Handler


@pytest.fixture(scope="module")
def server():
    state = _State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    httpd.shutdown()
    httpd.server_close()


def req(title: str, language: str = "en") -> JudgeRequest:
    return JudgeRequest(language=language, query="q", bidword="b", selling_points=("sp1", "sp2"), landing_page="",
                        title=title, description="desc")


def client(server_url, tmp_path, **overrides) -> JudgeClient:
    cfg = JudgeConfig(timeout_s=0.5, max_retries=2, backoff_s=0.01, backoff_max_s=0.05, concurrency=4)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return JudgeClient(server_url, "judge-model", api_key="sk-test", cfg=cfg, cache_dir=tmp_path, seed=0)


# ---- protocol and parsing ----------------------------------------------------------------------------


def test_valid_verdict_and_request_format(server, tmp_path):
    url, state = server
    c = client(url, tmp_path)
    v = c.judge(req("Dental cleaning [[ok]]"))
    assert not v.failed and v.correct is True and v.compliant is True and v.score == 0.9
    sent = state.requests[-1]
    assert sent["model"] == "judge-model" and sent["temperature"] == 0.0
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert "Dental cleaning" in sent["messages"][1]["content"] and "sp1; sp2" in sent["messages"][1]["content"]
    assert state.headers[-1].get("Authorization") == "Bearer sk-test"
    bad = c.judge(req("The best dentist"))
    assert bad.compliant is False and bad.score == 0.2 and bad.issues == ["superlative"]


def test_chinese_prompt_is_used_for_zh(server, tmp_path):
    url, state = server
    v = client(url, tmp_path).judge(req("最好的牙科", language="zh"))
    assert v.compliant is False
    assert "【广告标题】最好的牙科" in state.requests[-1]["messages"][1]["content"]


def test_cache_hit_skips_http(server, tmp_path):
    url, state = server
    c = client(url, tmp_path)
    before = len(state.requests)
    v1 = c.judge(req("Cached ad [[ok]]"))
    v2 = c.judge(req("Cached ad [[ok]]"))
    assert len(state.requests) == before + 1
    assert not v1.cached and v2.cached and v2.score == v1.score
    # A new client on the same folder (another worker, a restart) reads the same cache.
    c2 = client(url, tmp_path)
    assert c2.judge(req("Cached ad [[ok]]")).cached
    assert len(state.requests) == before + 1
    assert c.stats["cache_hits"] == 1 and c2.stats["cache_hits"] == 1


def test_fenced_json_is_accepted(server, tmp_path):
    url, _ = server
    v = client(url, tmp_path).judge(req("Fenced [[fenced]]"))
    assert not v.failed and v.score == 0.9


# ---- failure policy -----------------------------------------------------------------------------------


def test_timeout_gives_neutral_score_and_counts(server, tmp_path):
    url, _ = server
    c = client(url, tmp_path, max_retries=1)
    t = time.perf_counter()
    v = c.judge(req("Hang [[timeout]]"))
    assert time.perf_counter() - t < 3.0  # 2 tries x 0.5 s timeout + backoff, not 2 x 2 s
    assert v.failed and v.error == "timeout" and v.score == 0.5 and v.correct is None
    assert c.stats["failures"] == 1 and c.stats["failure:timeout"] == 1 and c.stats["retries"] == 1


def test_5xx_is_retried_then_succeeds(server, tmp_path):
    url, state = server
    c = client(url, tmp_path)
    v = c.judge(req("Flaky [[500-once]]"))
    assert not v.failed and v.score == 0.9
    assert state.seen["Flaky [[500-once]]"] == 2 and c.stats["retries"] == 1 and c.stats.get("failures", 0) == 0


def test_429_is_retried(server, tmp_path):
    url, state = server
    v = client(url, tmp_path).judge(req("Busy [[429-once]]"))
    assert not v.failed and state.seen["Busy [[429-once]]"] == 2


def test_persistent_5xx_fails_after_retries_and_is_not_cached(server, tmp_path):
    url, state = server
    c = client(url, tmp_path, max_retries=2)
    v = c.judge(req("Down [[500]]"))
    assert v.failed and v.error == "http_5xx" and v.score == 0.5
    assert state.seen["Down [[500]]"] == 3
    c.judge(req("Down [[500]]"))
    assert state.seen["Down [[500]]"] == 6  # a failure is retried by the next call, not frozen in the cache


def test_4xx_is_not_retried(server, tmp_path):
    url, state = server
    v = client(url, tmp_path).judge(req("Wrong [[400]]"))
    assert v.failed and v.error == "http_4xx" and state.seen["Wrong [[400]]"] == 1


@pytest.mark.parametrize("marker, kind", [("malformed", "malformed_verdict"), ("badbody", "bad_response"),
                                          ("wrongtype", "malformed_verdict")])
def test_malformed_answers_are_retried_then_neutral(server, tmp_path, marker, kind):
    url, state = server
    title = f"Odd [[{marker}]]"
    c = client(url, tmp_path, max_retries=1, neutral_score=0.4)
    v = c.judge(req(title))
    assert v.failed and v.error == kind and v.score == 0.4
    assert state.seen[title] == 2


def test_unreachable_endpoint_is_a_counted_failure(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=1)
    v = c.judge(req("Nobody home"))
    assert v.failed and v.error == "connect_error" and c.stats["failures"] == 1


def test_slow_responses_within_timeout_succeed_and_concurrency_is_limited(server, tmp_path):
    url, state = server
    c = client(url, tmp_path, timeout_s=2.0, concurrency=3)
    state.max_inflight = 0
    reqs = [req(f"Slow {i} [[slow]]") for i in range(9)]
    t = time.perf_counter()
    out = c.judge_many(reqs)
    elapsed = time.perf_counter() - t
    assert all(not v.failed for v in out)
    assert state.max_inflight <= 3
    assert elapsed >= 0.85  # 9 requests x 0.3 s / 3 in flight
    assert elapsed < 3.0


def test_judge_many_inside_a_running_event_loop(server, tmp_path):
    url, _ = server
    c = client(url, tmp_path)

    async def caller():
        return c.judge_many([req("From a loop [[ok]]")]), await c.ajudge(req("Async [[ok]]"))

    sync_result, async_result = asyncio.run(caller())
    assert not sync_result[0].failed and not async_result.failed


def test_from_config_reads_the_environment(monkeypatch, server, tmp_path):
    url, _ = server
    cfg = JudgeConfig(cache_dir=str(tmp_path))
    monkeypatch.delenv(cfg.base_url_env, raising=False)
    assert JudgeClient.from_config(cfg) is None
    monkeypatch.setenv(cfg.base_url_env, url)
    monkeypatch.setenv(cfg.model_env, "m-env")
    monkeypatch.setenv(cfg.api_key_env, "k-env")
    c = JudgeClient.from_config(cfg)
    assert c.base_url == url and c.model == "m-env" and c.api_key == "k-env"


# ---- pure functions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        '{"correct": true, "compliant": true, "score": 0.5}',
        '{"correct": "yes", "compliant": true, "score": 0.5, "issues": []}',
        '{"correct": true, "compliant": true, "score": 1.5, "issues": []}',
        '{"correct": true, "compliant": true, "score": true, "issues": []}',
        '{"correct": true, "compliant": true, "score": NaN, "issues": []}',
        '{"correct": true, "compliant": true, "score": 0.5, "issues": "none"}',
        'Verdict: {"correct": true, "compliant": true, "score": 0.5, "issues": []}',
    ],
)
def test_parse_verdict_is_strict(content):
    with pytest.raises(VerdictError):
        parse_verdict(content)


def test_parse_verdict_accepts_valid_and_ignores_extra_keys():
    v = parse_verdict('{"correct": false, "compliant": true, "score": 0, "issues": ["x"], "reason": "y"}')
    assert v.correct is False and v.compliant is True and v.score == 0.0 and v.issues == ["x"]


def test_prompts_are_versioned_and_cache_keys_depend_on_inputs():
    assert set(load_prompt("v1")) == {"zh", "en"}
    with pytest.raises(FileNotFoundError):
        load_prompt("v999")
    r = req("A")
    assert cache_key(r, "m", "v1") == cache_key(req("A"), "m", "v1")
    assert len({cache_key(r, "m", "v1"), cache_key(req("B"), "m", "v1"), cache_key(r, "m2", "v1"),
                cache_key(r, "m", "v2")}) == 4
    msgs = build_messages(req("标题", language="zh"), "v1")
    assert "只输出" in msgs[1]["content"] and "【购买关键词】b" in msgs[1]["content"]
