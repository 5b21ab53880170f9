"""harness.evaluation.judge against a loopback fake of an OpenAI chat-completions server (no real network)."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import HarnessError
from harness.evaluation import judge as judge_mod
from harness.evaluation.judge import Judge, JudgeError, load_judge_prompts, load_references, parse_rating

# Tiny stand-ins for FastChat's four single-answer prompts, with the real files' placeholder names.
PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "SYS general",
     "prompt_template": "[Question]\n{question}\n\n[Answer]\n{answer}", "category": "general",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "SYS math",
     "prompt_template": "[Question]\n{question}\n[Reference]\n{ref_answer_1}\n[Answer]\n{answer}",
     "category": "math", "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "SYS general multi",
     "prompt_template": "### User:\n{question_1}\n### A:\n{answer_1}\n### User:\n{question_2}\n### A:\n{answer_2}",
     "category": "general", "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "SYS math multi",
     "prompt_template": "### User:\n{question_1}\n### Ref:\n{ref_answer_1}\n### User:\n{question_2}\n"
                        "### Ref:\n{ref_answer_2}\n### A:\n{answer_1}\n### A:\n{answer_2}",
     "category": "math", "output_format": "[[rating]]"},
]
WRITING = {"question_id": 81, "category": "writing", "turns": ["Write a poem about {braces}.", "Now shorter."]}
MATH = {"question_id": 111, "category": "math", "turns": ["What is 2+2?", "And 3+3?"]}
REPLY = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Fine work. Rating: [[7]]"}}]}


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(judge_mod, "RETRY_DELAY_S", 0.0)


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "judge_prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return load_judge_prompts(path)


@pytest.fixture
def server():
    """A fake endpoint: records (path, headers, body) per request; `state["mode"]` picks the reply."""
    state = {"requests": [], "mode": "ok"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["requests"].append((self.path, dict(self.headers), json.loads(body)))
            status, payload = {"ok": (200, json.dumps(REPLY)), "500": (500, "boom"),
                               "garbage": (200, "<html>not json</html>"), "401": (401, "bad key")}[state["mode"]]
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_grade_turn1_general(server, prompts):
    judge = Judge(server["url"], "judge-model", prompts)
    out = judge.grade(WRITING, ["Roses are red.", "Red."], turn=1)
    assert out == {"score": 7.0, "judgment": "Fine work. Rating: [[7]]", "prompt_name": "single-v1"}
    (path, headers, body), = server["requests"]
    assert path == "/v1/chat/completions"
    assert body["model"] == "judge-model" and body["temperature"] == 0 and body["max_tokens"] == 2048
    system, user = body["messages"]
    assert system == {"role": "system", "content": "SYS general"}
    assert user["role"] == "user"
    assert "Write a poem about {braces}." in user["content"] and "Roses are red." in user["content"]
    assert "Now shorter." not in user["content"]
    assert "Authorization" not in headers


def test_grade_turn2_uses_multi_turn_template(server, prompts):
    out = Judge(server["url"], "m", prompts).grade(WRITING, ["Roses are red.", "Red."], turn=2)
    assert out["prompt_name"] == "single-v1-multi-turn" and out["score"] == 7.0
    system, user = server["requests"][0][2]["messages"]
    assert system["content"] == "SYS general multi"
    for text in ("Write a poem about {braces}.", "Now shorter.", "Roses are red.", "### A:\nRed."):
        assert text in user["content"]


@pytest.mark.parametrize("turn", [1, 2])
def test_math_uses_reference(server, prompts, turn):
    out = Judge(server["url"] + "/chat/completions", "m", prompts).grade(
        MATH, ["4", "6"], turn=turn, reference=["REF-FOUR", "REF-SIX"])
    assert out["prompt_name"] == ("single-math-v1" if turn == 1 else "single-math-v1-multi-turn")
    assert server["requests"][0][0] == "/v1/chat/completions"  # a full URL is used as given
    system, user = server["requests"][0][2]["messages"]
    assert system["content"] == ("SYS math" if turn == 1 else "SYS math multi")
    assert "REF-FOUR" in user["content"] and ("REF-SIX" in user["content"]) == (turn == 2)


def test_missing_reference_raises(prompts):
    judge = Judge("http://127.0.0.1:9/v1", "m", prompts)
    with pytest.raises(JudgeError, match="question 111 .*reference"):
        judge.build_messages(MATH, ["4", "6"], 1, None)
    with pytest.raises(JudgeError, match="reference"):
        judge.build_messages(MATH, ["4", "6"], 2, ["only one"])
    with pytest.raises(JudgeError, match="turn"):
        judge.build_messages(WRITING, ["a", "b"], 3, None)
    with pytest.raises(JudgeError, match="answer"):
        judge.build_messages(WRITING, ["a"], 2, None)


def test_missing_prompt_names_raise(prompts):
    with pytest.raises(JudgeError, match="single-math-v1-multi-turn"):
        Judge("http://x/v1", "m", {k: v for k, v in prompts.items() if k != "single-math-v1-multi-turn"})


def test_bearer_header_sent(server, prompts):
    Judge(server["url"], "m", prompts, api_key="sk-test").grade(WRITING, ["a", "b"], 1)
    assert server["requests"][0][1]["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("text, rating", [("Rating: [[8.5]]", 8.5), ("Rating: [5]", 5.0), ("[[10]] then [3]", 10.0),
                                          ("no rating here", None), ("Rating: [[0]]", None), ("", None)])
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("mode, message", [("500", "HTTP 500"), ("garbage", "not an OpenAI chat completion")])
def test_bad_endpoint_retries_then_raises(server, prompts, mode, message):
    server["mode"] = mode
    judge = Judge(server["url"], "m", prompts, retries=1, timeout_s=2)
    with pytest.raises(JudgeError, match=message) as e:
        judge.grade(WRITING, ["a", "b"], 1)
    assert server["url"] in str(e.value) and "\n" not in str(e.value)
    assert len(server["requests"]) == 2


def test_client_error_not_retried(server, prompts):
    server["mode"] = "401"
    with pytest.raises(JudgeError, match="HTTP 401"):
        Judge(server["url"], "m", prompts, retries=2, timeout_s=2).grade(WRITING, ["a", "b"], 1)
    assert len(server["requests"]) == 1


def test_closed_port_raises(prompts):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(JudgeError, match="cannot connect") as e:
        Judge(url, "m", prompts, retries=1, timeout_s=2).grade(WRITING, ["a", "b"], 1)
    assert url in str(e.value) and "2 attempt" in str(e.value)


def test_malformed_judge_prompts_names_file_and_line(tmp_path):
    path = tmp_path / "judge_prompts.jsonl"
    path.write_text(json.dumps(PROMPTS[0]) + "\n\n{not json\n")
    with pytest.raises(HarnessError, match=r"judge_prompts\.jsonl:3: not valid JSON"):
        load_judge_prompts(path)
    path.write_text(json.dumps(PROMPTS[0]) + "\n" + json.dumps({"name": "x", "type": "single"}) + "\n")
    with pytest.raises(HarnessError, match=r"judge_prompts\.jsonl:2: missing key\(s\) system_prompt, prompt_template"):
        load_judge_prompts(path)
    with pytest.raises(HarnessError, match="cannot read"):
        load_judge_prompts(tmp_path / "absent.jsonl")


def test_load_references(tmp_path):
    path = tmp_path / "gpt-4.jsonl"
    path.write_text(json.dumps({"question_id": 101, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["a", "b"]}]})
                    + "\n" + json.dumps({"question_id": 102, "choices": []}) + "\n")
    with pytest.raises(HarnessError, match=r"gpt-4\.jsonl:2: expected choices\[0\]\.turns"):
        load_references(path)
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert load_references(path) == {101: ["a", "b"]}
