"""MT-bench single-answer grading (FastChat's LLM-as-judge) against any OpenAI-compatible endpoint.

    judge = Judge("http://localhost:8000/v1", "gpt-4", load_judge_prompts(".../judge_prompts.jsonl"),
                  api_key=os.environ.get("OPENAI_API_KEY"))
    refs = load_references(".../reference_answer/gpt-4.jsonl")
    judge.grade(question, answers, turn=2, reference=refs.get(question["question_id"]))["score"]
"""
from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from harness import HarnessError
from harness.engine.records import read_jsonl

log = logging.getLogger(__name__)

NEED_REF = {"math", "reasoning", "coding"}
PROMPT_NAMES = {(False, 1): "single-v1", (False, 2): "single-v1-multi-turn",
                (True, 1): "single-math-v1", (True, 2): "single-math-v1-multi-turn"}  # (needs reference, turn)
RETRY_DELAY_S = 1.0  # doubled after each failed attempt
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


class JudgeError(HarnessError):
    """The judge endpoint failed, or a question cannot be graded (missing reference, prompt or answer)."""


def load_judge_prompts(path) -> dict[str, dict]:
    """FastChat's judge_prompts.jsonl, keyed by `name`."""
    prompts: dict[str, dict] = {}
    for lineno, row in read_jsonl(path, ("name", "type", "system_prompt", "prompt_template")):
        if row["name"] in prompts:
            raise HarnessError(f"{path}:{lineno}: duplicate judge prompt {row['name']!r}")
        prompts[row["name"]] = row
    return prompts


def load_references(path) -> dict[int, list[str]]:
    """FastChat's reference_answer/<model>.jsonl: question_id -> reference answer per turn."""
    refs: dict[int, list[str]] = {}
    for lineno, row in read_jsonl(path, ("question_id", "choices")):
        try:
            turns = row["choices"][0]["turns"]
        except (LookupError, TypeError):
            turns = None
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            raise HarnessError(f"{path}:{lineno}: expected choices[0].turns to be a list of strings")
        refs[int(row["question_id"])] = turns
    return refs


def parse_rating(text: str) -> float | None:
    """The first `[[r]]` in the judgment (else the first `[r]`), as FastChat; None if absent or outside 1-10."""
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    if not match:
        return None
    rating = float(match.group(1))
    return rating if 1 <= rating <= 10 else None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Judge:
    url: str  # base URL (http://host:port/v1) or the full .../chat/completions URL
    model: str
    prompts: dict  # from load_judge_prompts
    api_key: str | None = None  # sent as a Bearer token; the caller reads OPENAI_API_KEY
    timeout_s: float = 120.0
    retries: int = 2  # extra attempts after the first

    def __post_init__(self):
        missing = sorted(set(PROMPT_NAMES.values()) - set(self.prompts))
        if missing:
            raise JudgeError(f"judge prompts lack {', '.join(missing)}; load FastChat's judge_prompts.jsonl")

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"

    def _prompt_name(self, question: dict, turn: int) -> str:
        if turn not in (1, 2):
            raise JudgeError(f"question {question.get('question_id')}: turn must be 1 or 2, not {turn!r}")
        return PROMPT_NAMES[(question.get("category") in NEED_REF, turn)]

    def build_messages(self, question: dict, answers: list[str], turn: int,
                       reference: list[str] | None) -> list[dict]:
        """The system + user messages FastChat sends to the judge for this question's `turn`."""
        qid, name = question.get("question_id"), self._prompt_name(question, turn)
        questions = question.get("turns") or []
        if len(questions) < turn or len(answers) < turn:
            raise JudgeError(f"question {qid}: grading turn {turn} needs {turn} question turn(s) and answer(s), "
                             f"got {len(questions)} and {len(answers)}")
        if turn == 1:
            kwargs = {"question": questions[0], "answer": answers[0]}
        else:
            kwargs = {"question_1": questions[0], "question_2": questions[1],
                      "answer_1": answers[0], "answer_2": answers[1]}
        if question.get("category") in NEED_REF:
            if not reference or len(reference) < turn:
                raise JudgeError(f"question {qid} ({question.get('category')}) needs reference answers for "
                                 f"{turn} turn(s); pass load_references(...)[{qid}]")
            kwargs["ref_answer_1"] = reference[0]
            if turn == 2:
                kwargs["ref_answer_2"] = reference[1]
        template = self.prompts[name]
        try:
            user = template["prompt_template"].format(**kwargs)
        except (KeyError, IndexError, ValueError) as e:
            raise JudgeError(f"judge prompt {name!r} has a placeholder this client does not fill: {e}") from None
        return [{"role": "system", "content": template["system_prompt"]}, {"role": "user", "content": user}]

    def _complete(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 2048,
                           "n": 1}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url, attempts, delay, problem = self.endpoint, 1 + max(0, self.retries), RETRY_DELAY_S, ""
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            retryable = True
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    raw = resp.read()
                try:
                    content = json.loads(raw)["choices"][0]["message"]["content"]
                    if isinstance(content, str):
                        return content
                    problem = "reply has no text in choices[0].message.content"
                except (ValueError, LookupError, TypeError):
                    problem = f"reply is not an OpenAI chat completion: {_one_line(raw.decode('utf-8', 'replace'))!r}"
            except urllib.error.HTTPError as e:
                detail = _one_line(e.read().decode("utf-8", "replace"))
                problem = f"HTTP {e.code} {e.reason}" + (f": {detail}" if detail else "")
                retryable = e.code >= 500 or e.code in (408, 429)
            except urllib.error.URLError as e:
                problem = f"cannot connect ({e.reason})"
            except (TimeoutError, OSError) as e:
                problem = f"request failed ({e or type(e).__name__})"
            if not retryable or attempt == attempts:
                break
            log.warning("judge %s attempt %d/%d: %s; retrying in %.1fs", url, attempt, attempts, problem, delay)
            time.sleep(delay)
            delay *= 2
        raise JudgeError(f"judge endpoint {url} (model {self.model!r}): {problem} after {attempt} attempt(s); "
                         "check that the server is up, the URL ends in /v1, and the model name and API key")

    def grade(self, question: dict, answers: list[str], turn: int, reference: list[str] | None = None) -> dict:
        """Ask the judge to rate the answer to `turn` (1 or 2); score is None if the reply has no rating."""
        messages = self.build_messages(question, answers, turn, reference)
        judgment = self._complete(messages)
        score = parse_rating(judgment)
        if score is None:
            log.warning("judge gave no [[rating]] for question %s turn %d", question.get("question_id"), turn)
        return {"score": score, "judgment": judgment, "prompt_name": self._prompt_name(question, turn)}
