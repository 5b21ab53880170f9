"""The paired session: requests as token ids, decoders built from options, and each request run for the
method and its AR baseline back to back (alternating which goes first) with rows appended as they come.

    session = Session(RunConfig(method="jacobi", task="gsm8k"), load_model("smollm2-135m"))
    rows = session.run_pair(prepare(lm, requests, cfg)[0], index=0)   # {"jacobi": row, "ar": row}
    rows = session.run_batch(prepared[:4], [0, 1, 2, 3], batch=0)     # --batch-size 4: [{"jacobi": row, "ar": row}, ...]
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness import BASELINE, HarnessError
from harness.engine.generate import Generation, Stopper, generate, generate_batch, longest_run
from harness.engine.models import LoadedModel, check_device_map, model_loader
from harness.engine.parallel import Process
from harness.engine.records import SAMPLES, SampleWriter, part_files, part_path, read_samples, row_problem
from methods import get_method
from methods.base import Decoder, OptionError
from methods.engine import CACHE_GRAIN, ENGINES, Engine, make_engine

log = logging.getLogger(__name__)
WARMUP_TOKENS = 16
DEFAULT_MAX_NEW = 128  # for a prompts file; lm-eval tasks set their own
DEFAULT_ENGINE = "eager"


@dataclass(frozen=True)
class Request:
    doc_id: str
    prompt: str  # raw text for base models; the user message for chat models
    chat_prompt: str | None = None  # user message to use instead when the model has a chat template
    stop: tuple[str, ...] = ()  # stop strings (raw mode); chat mode stops on the model's EOS
    chat_stop: tuple[str, ...] = ()
    category: str | None = None  # the task's category of the request (Spec-Bench's), recorded on its rows


@dataclass(frozen=True)
class RunConfig:
    method: str
    task: str | None = None
    prompts: str | None = None
    model: str = "smollm2-135m"
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None  # "auto": spread a big model over the GPUs, CPU and disk (accelerate)
    limit: int | None = None
    max_new_tokens: int | None = None  # None: the task's default (128 for a prompts file)
    seed: int = 0
    options: dict = field(default_factory=dict)  # the method's -O key=value strings
    output_dir: str = "results/runs"
    chat_template: bool = True  # apply the model's chat template when it has one
    data_dir: str | None = None  # benchmark data laid out as ../shared/data; None: the hub
    num_fewshot: int | None = None  # None: the task's default
    judge_url: str | None = None  # MT-bench: an OpenAI-compatible endpoint for single-answer grading
    judge_model: str | None = None
    require_sandbox: bool = False  # refuse to run model-written code (HumanEval, Spider) without OS isolation
    engine: str = DEFAULT_ENGINE  # eager (DynamicCache) or compiled (static cache, torch.compile per width)
    batch_size: int = 1  # requests decoded together by every method, AR included (docs/batching.md)
    replicate: int = 1  # which repetition of its cell this run is (`harness bench --repeats`)

    def __post_init__(self):
        check_types(self)
        if not 0 <= self.seed < 2**63:
            raise HarnessError(f"--seed must be between 0 and 2**63 - 1 (got {self.seed})")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise HarnessError(f"--num-fewshot must be 0 or more (got {self.num_fewshot})")
        if self.limit is not None and self.limit < 1:
            raise HarnessError(f"--limit must be at least 1 (got {self.limit}); leave it out to run every prompt")
        if self.engine not in ENGINES:
            raise HarnessError(f"--engine must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        if self.batch_size < 1:
            raise HarnessError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.replicate < 1:
            raise HarnessError(f"the replicate number must be at least 1 (got {self.replicate})")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise HarnessError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens})")
        check_device_map(self.device_map)


def check_types(cfg) -> None:
    """Each field of a config dataclass has its annotated type (a config read back from a damaged
    run.json fails here, as one clear error, rather than deep inside the run)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, kinds = getattr(cfg, f.name), typing.get_args(hints[f.name]) or (hints[f.name],)
        kinds = tuple(typing.get_origin(k) or k for k in kinds)  # dict[str, str] -> dict
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise HarnessError(f"{f.name} must be {names}, not {value!r}")
    options = getattr(cfg, "options", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise HarnessError(f"options must map names to strings, not {options!r}")


@dataclass
class Prepared:
    request: Request
    input_ids: torch.Tensor  # (1, T)
    max_new_tokens: int
    stopper: Stopper


def build_decoder(name: str, options: dict[str, str], model, loaded: list[dict] | None = None,
                  device_map: str | None = None, engine: Engine | None = None) -> tuple[Decoder, dict]:
    """The decoder with validated options, on `engine` (eager by default); second models it loads (spread by
    `device_map` when given) are described in `loaded`."""
    cls = get_method(name)
    try:
        opts = cls.parse_options(options)
        decoder = cls(model, opts, loader=model_loader(loaded, device_map), engine=engine)
        return decoder, dataclasses.asdict(decoder.options)  # as resolved (e.g. CLLM's block size)
    except (OptionError, ValueError) as e:  # bad options, or ones the decoder rejects when it sets up
        raise HarnessError(f"method {name}: {e}") from None


def eos_ids(lm: LoadedModel) -> frozenset[int]:
    ids = set()
    for src in (lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(src)
    return frozenset(ids)


def encode(lm: LoadedModel, messages: list[dict], chat: bool) -> list[int]:
    """Token ids for a conversation ending in a user turn: the chat template, or plain text for base models.

    A single user message in raw mode is the completion prompt itself; more turns become
    "User: ...\nAssistant: ..." lines ending in "Assistant:".
    """
    if chat:
        text = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(messages) == 1:
        return lm.tokenizer(messages[0]["content"])["input_ids"]
    lines = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages]
    return lm.tokenizer("\n".join(lines) + "\nAssistant:")["input_ids"]


def check_room(lm: LoadedModel, ids: list[int], doc_id: str) -> int:
    """Tokens left for generation; a clear error when the prompt does not fit the context."""
    if not ids:
        raise HarnessError(f"request {doc_id}: the prompt is empty")
    room = lm.context_length - len(ids)
    if room < 1:
        raise HarnessError(f"request {doc_id}: the prompt has {len(ids)} tokens but the model's context "
                           f"is {lm.context_length}; shorten the prompt or use a model with a longer context")
    return room


def prepare(lm: LoadedModel, requests: list[Request], cfg: RunConfig) -> list[Prepared]:
    """Tokenize every prompt up front, so that a prompt too long for the model fails before any work."""
    chat = lm.chat and cfg.chat_template
    eos = eos_ids(lm)
    out = []
    for req in requests:
        ids = encode(lm, [{"role": "user", "content": (req.chat_prompt or req.prompt) if chat else req.prompt}], chat)
        room = check_room(lm, ids, req.doc_id)
        stopper = Stopper(eos, req.chat_stop if chat else req.stop, lm.tokenizer)
        input_ids = torch.tensor([ids], device=lm.device)
        out.append(Prepared(req, input_ids, min(cfg.max_new_tokens or DEFAULT_MAX_NEW, room), stopper))
    return out


def blank_row(name: str, p: Prepared, cfg: RunConfig, seed: int, order: int, turn: int = 1) -> dict:
    return {"method": name, "task": cfg.task or cfg.prompts, "doc_id": p.request.doc_id, "turn": turn, "order": order,
            "prompt_tokens": int(p.input_ids.shape[1]), "max_new_tokens": p.max_new_tokens, "seed": seed,
            "new_tokens": None, "steps": None, "tokens_per_step": None, "wall_time_s": None, "tokens_per_s": None,
            "ttft_s": None, "stop_reason": None, "drafted_tokens": None, "accepted_tokens": None,
            "draft_forwards": None, "step_tokens": None, "step_drafted": None, "step_accepted": None,
            "step_draft_forwards": None, "stationary_tokens": None, "step_stationary": None,
            "max_repeat_run": None, "output_sha1": None, "output": None, "error": None,
            **({"category": p.request.category} if p.request.category is not None else {})}


def run_one(decoder: Decoder, name: str, p: Prepared, cfg: RunConfig, seed: int, order: int, turn: int = 1) -> dict:
    row = blank_row(name, p, cfg, seed, order, turn)
    torch.manual_seed(seed)
    try:
        g = generate(decoder, p.input_ids, p.max_new_tokens, p.stopper)
    except Exception as e:  # one request failing must not end the run: the row records it
        log.warning("%s on %s failed: %s: %s", name, p.request.doc_id, type(e).__name__, e)
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    return fill_row(row, g, p, g.wall_time_s)


def run_batch_rows(decoder: Decoder, name: str, ps: list[Prepared], cfg: RunConfig, seed: int, order: int,
                   batch: int, turn: int = 1) -> list[dict]:
    """One batch of requests decoded together (generate_batch): a row per request with the batch's fields.
    Each row's wall_time_s is its share of the batch's wall time (batch_wall_time_s / batch_size), so that sums
    over rows are sums over batches: throughput = tokens / batch time (docs/batching.md)."""
    rows = [{**blank_row(name, p, cfg, seed, order, turn), "batch": batch, "batch_size": len(ps),
             "batch_wall_time_s": None} for p in ps]
    torch.manual_seed(seed)
    try:
        gens, wall = generate_batch(decoder, [p.input_ids for p in ps], [p.max_new_tokens for p in ps],
                                    [p.stopper for p in ps])
    except Exception as e:  # one batch failing must not end the run: its rows record it
        log.warning("%s on batch %d failed: %s: %s", name, batch, type(e).__name__, e)
        return [{**row, "error": f"{type(e).__name__}: {e}"} for row in rows]
    return [fill_row({**row, "batch_wall_time_s": wall}, g, p, wall / len(ps)) for row, g, p in zip(rows, gens, ps)]


def fill_row(row: dict, g: Generation, p: Prepared, wall_time_s: float) -> dict:
    """A row's figures from its generation; wall_time_s: the request's time (its share of a batch's)."""
    new = len(g.tokens)
    row.update(new_tokens=new, steps=len(g.step_tokens), tokens_per_step=new / len(g.step_tokens) if g.step_tokens else None,
               wall_time_s=wall_time_s, tokens_per_s=new / wall_time_s, ttft_s=g.ttft_s,
               stop_reason=g.stop_reason, drafted_tokens=g.drafted, accepted_tokens=g.accepted,
               draft_forwards=g.draft_forwards, step_tokens=g.step_tokens, step_drafted=g.step_drafted,
               step_accepted=g.step_accepted, step_draft_forwards=g.step_draft_forwards,
               stationary_tokens=g.stationary, step_stationary=g.step_stationary, max_repeat_run=longest_run(g.tokens),
               output_sha1=hashlib.sha1(",".join(map(str, g.tokens)).encode()).hexdigest(),
               output=p.stopper.text(g.tokens))
    return row


def _widest(decoders: dict) -> int:
    """The widest forward any of {name: (decoder, options)} runs (1 when none says)."""
    return max((w for d, _ in decoders.values() for w in d.widths()), default=1)


class Session:
    """The method and its AR baseline on one loaded model: runs each request for both, alternating which
    goes first, skipping what an interrupted run already finished, and appending rows as they come.

        rows = session.run_pair(prepared, index=0)   # {"jacobi": row, "ar": row}
    With paired=False the method runs alone (lm-eval's own front ends); rows are written only after `open`.
    In a data-parallel run (`proc` from harness.engine.parallel) the tasks run only the requests this
    process `owns`, and its rows go to its own part file (merged by rank 0 at the end).
    """

    def __init__(self, cfg: RunConfig, lm: LoadedModel, paired: bool = True, proc: Process | None = None):
        self.cfg, self.lm, self.paired = cfg, lm, paired
        self.proc = proc or Process()
        self.chat = lm.chat and cfg.chat_template
        self.eos = eos_ids(lm)
        self._decoders: dict[float | None, dict] = {}
        self.loaded: list[dict] = []  # second models the decoders loaded (CLLM checkpoint, draft model)
        if cfg.engine not in lm.engines:  # one per loaded model: a sweep compiles its graphs once
            lm.engines[cfg.engine] = make_engine(cfg.engine, lm.model)
        self.engine = lm.engines[cfg.engine]
        self.warmup_s = 0.0  # compiling the engine's graphs and the untimed warm-up request
        self.names = list(self.decoders(None))  # bad options fail now, before any work
        if cfg.batch_size > 1:
            plain = [n for n, (d, _) in self.decoders(None).items() if not d.batched()]
            if plain:
                raise HarnessError(f"method {plain[0]} has no batched decoding (decode_batch); run it with --batch-size 1")
        self.done: dict[tuple, dict] = {}
        self.writer = None
        self.live = {n: [0, 0.0] for n in self.names}  # this session's paired [tokens, seconds], for the live speedup
        self.warmed: set = set()  # the temperatures whose decoders have been warmed up

    def engines(self) -> dict[str, dict]:
        """{method: {role: engine description}}: every engine the decoders built so far ran on (run.json)."""
        out = {}
        for decoders in self._decoders.values():
            for name, (decoder, _) in decoders.items():
                out.setdefault(name, {}).update({role: e.describe() for role, e in decoder.engines().items()})
        return out

    def decoders(self, temperature: float | None) -> dict:
        """{name: (decoder, options)}; a task asking for sampling gets decoders at its temperature
        (an explicit -O temperature wins)."""
        if temperature not in self._decoders:
            cfg = self.cfg
            opts = dict(cfg.options)
            if temperature is not None and "temperature" not in opts:
                if "temperature" not in {f.name for f in dataclasses.fields(get_method(cfg.method).Options)}:
                    raise HarnessError(f"the task samples at temperature {temperature}, but method {cfg.method} "
                                       "decodes greedily only")
                opts["temperature"] = str(temperature)
            out = {cfg.method: build_decoder(cfg.method, opts, self.lm.model, self.loaded, cfg.device_map, self.engine)}
            if self.paired and cfg.method != BASELINE:
                # a sampling method is paired with AR sampling at the same temperature
                base = {"temperature": opts["temperature"]} if "temperature" in opts else {}
                out[BASELINE] = build_decoder(BASELINE, base, self.lm.model, engine=self.engine)
            self._decoders[temperature] = out
        return self._decoders[temperature]

    def owns(self, index: int) -> bool:
        """Whether this process runs the request at `index` (its place in the task; always, single-process)."""
        return self.proc.owns(index)

    def is_done(self, doc_id: str, turn: int = 1) -> bool:
        return all((n, doc_id, turn) in self.done for n in self.names)

    def fit_cache(self, prepared: list[Prepared], later: list[int] | None = None) -> None:
        """Size every engine's static cache once, for this run's longest request, before any warm-up: a forward
        attends over the whole cache, so one bigger than the run needs slows every step (Engine.reserve).
        `later[i]`: the positions request i's later turns may add (a conversation); a request that still
        outgrows the cache grows it (run_pair). A batched run only grows the cache: its rows leave holes that
        the slack beyond the longest request absorbs until a compaction (docs/batching.md), and a fitted cache
        would compact every few steps (not measured, so not done)."""
        if not prepared:
            return
        decoders = self.decoders(None)
        widest = _widest(decoders)
        batched = self.cfg.batch_size > 1
        later = later or [0] * len(prepared)
        room = max(p.input_ids.shape[1] + p.max_new_tokens + extra for p, extra in zip(prepared, later))
        # At least CACHE_GRAIN for the widest forward: every method of a sweep (widest forward 2 to 33 tokens) then
        # fits a task's cache to the same size, and the shared engine does not recompile between them.
        slack = 2 * widest if batched else max(widest, CACHE_GRAIN)
        if any([d.reserve(room + slack, fit=not batched) for d, _ in decoders.values()]):
            self.warmed = set()

    def run_pair(self, p: Prepared, index: int, turn: int = 1, temperature: float | None = None,
                 bar=None, first: int | None = None) -> dict[str, dict]:
        """Run (or take from an interrupted run) one request for every method. `index` is the request's
        place in the task (each turn of a conversation its own), never a count of what this process ran:
        the seed (cfg.seed + index) follows from it, and who goes first from `first` (default `index`; even: the
        method), which a conversation sets to its own place so that one side goes first on all its turns. So a
        resumed run gives every request what an uninterrupted one would."""
        decoders = self.decoders(temperature)
        widest = _widest(decoders)
        room = p.input_ids.shape[1] + p.max_new_tokens + widest
        if any([d.reserve(room) for d, _ in decoders.values()]):  # a bigger static cache (every engine: drafts too)
            self.warmed = set()
        if temperature not in self.warmed:  # untimed, unrecorded: compiling, first-call allocations, kernel choice
            t = time.perf_counter()
            say = bar.write if bar is not None else log.info
            for name, (decoder, _) in decoders.items():
                decoder.warm_up(progress=lambda msg, name=name: say(f"compiling the {self.engine.name} engine "
                                                                    f"for {name}: {msg}"))
                generate(decoder, p.input_ids, min(WARMUP_TOKENS, p.max_new_tokens), p.stopper)
            self.warmup_s += time.perf_counter() - t
            self.warmed.add(temperature)
        order = self.names if (index if first is None else first) % 2 == 0 else self.names[::-1]
        rows = {}
        for position, name in enumerate(order):
            key = (name, p.request.doc_id, turn)
            if key in self.done:
                rows[name] = self.done[key]
                continue
            rows[name] = run_one(decoders[name][0], name, p, self.cfg, self.cfg.seed + index, position, turn)
            if self.proc.distributed:
                rows[name]["rank"] = self.proc.rank
            if self.writer:  # a recorded run; lm-eval's front ends (no run folder) keep nothing
                self.writer.write(rows[name])
                self.done[key] = rows[name]
        if bar is not None and len(self.names) > 1 and all(rows[n]["new_tokens"] for n in self.names):
            for n in self.names:
                self.live[n][0] += rows[n]["new_tokens"]
                self.live[n][1] += rows[n]["wall_time_s"]
            (m_tok, m_s), (a_tok, a_s) = self.live[self.cfg.method], self.live[BASELINE]
            bar.set_postfix(speedup=f"{(m_tok / m_s) / (a_tok / a_s):.2f}")  # the ratio of throughputs
        return rows

    def run_batch(self, ps: list[Prepared], indices: list[int], batch: int, turn: int = 1,
                  temperature: float | None = None, bar=None) -> list[dict[str, dict]]:
        """Run (or take from an interrupted run) one batch of requests for every method, each method decoding them
        together (decode_batch) and timed as a whole: the method and batched AR at the same batch size, back to
        back. `indices` are the requests' places in the task and `batch` the batch's: the seed (cfg.seed + the first
        index) and who goes first (even batch: the method) follow from them. A method whose rows of this batch
        were all written is not rerun; one cut short is rerun whole and its missing rows written."""
        decoders = self.decoders(temperature)
        widest = _widest(decoders)
        room = max(p.input_ids.shape[1] for p in ps) + max(p.max_new_tokens for p in ps) + 2 * widest
        if any([d.reserve(room) for d, _ in decoders.values()]):  # a bigger static cache (rows' holes need slack)
            self.warmed = set()
        warm = (temperature, len(ps))  # a last, smaller batch compiles its own graphs, untimed too
        if warm not in self.warmed:
            t = time.perf_counter()
            say = bar.write if bar is not None else log.info
            for name, (decoder, _) in decoders.items():
                decoder.warm_up_batch(len(ps), progress=lambda msg, name=name: say(
                    f"compiling the {self.engine.name} engine for {name}: {msg}"))
                generate_batch(decoder, [p.input_ids for p in ps], [min(WARMUP_TOKENS, p.max_new_tokens) for p in ps],
                               [p.stopper for p in ps])
            self.warmup_s += time.perf_counter() - t
            self.warmed.add(warm)
        order = self.names if batch % 2 == 0 else self.names[::-1]
        out: list[dict[str, dict]] = [{} for _ in ps]
        for position, name in enumerate(order):
            keys = [(name, p.request.doc_id, turn) for p in ps]
            if all(k in self.done for k in keys):
                for row, k in zip(out, keys):
                    row[name] = self.done[k]
                continue
            rows = run_batch_rows(decoders[name][0], name, ps, self.cfg, self.cfg.seed + indices[0], position, batch, turn)
            for row, new, k in zip(out, rows, keys):
                if k in self.done:  # written before the interruption: kept, not written twice
                    row[name] = self.done[k]
                    continue
                row[name] = new
                if self.writer:
                    self.writer.write(new)
                    self.done[k] = new
        if bar is not None and len(self.names) > 1:
            for rows in out:
                if all(rows[n]["new_tokens"] for n in self.names):
                    for n in self.names:
                        self.live[n][0] += rows[n]["new_tokens"]
                        self.live[n][1] += rows[n]["wall_time_s"]
            (m_tok, m_s), (a_tok, a_s) = self.live[self.cfg.method], self.live[BASELINE]
            if m_s and a_s:
                bar.set_postfix(speedup=f"{(m_tok / m_s) / (a_tok / a_s):.2f}")
        return out

    def open(self, run_dir: Path) -> None:
        """Start appending to run_dir's samples (in a data-parallel run: this rank's part file); rows already
        in samples.jsonl or in any rank's part file (an interrupted run) are not redone."""
        own = part_path(run_dir, self.proc.rank) if self.proc.distributed else run_dir / SAMPLES
        files = [run_dir / SAMPLES, *part_files(run_dir)]
        self.done = {}
        for path in dict.fromkeys([own, *files]):  # only this process's own file is repaired (rewritten)
            for r in read_samples(path, repair=path == own, check=row_problem):
                self.done.setdefault((r["method"], r["doc_id"], r.get("turn") or 1), r)
        self.writer = SampleWriter(own)

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None
