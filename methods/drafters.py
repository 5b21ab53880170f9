"""Drafters for speculative decoding: each proposes up to k tokens after the committed text.

    -O draft=ngram            prompt lookup: continue the last n-gram's earlier occurrence
    -O draft=layerskip:L      self-speculation: the target's first L layers and its own head
    -O draft=MODEL            any causal LM sharing the target's tokenizer (alias, hub id, dir, .gguf)
Third-party drafters register like methods, in the entry-point group `harness.drafters`, and are used
as `draft=NAME` or `draft=NAME:ARG`.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from methods.acceptance import sample
from methods.batch import chain_layout
from methods.engine import Engine
from methods.registry import Registry, suggestion


class Drafter:
    """propose(committed, k, temperature) -> (tokens, q, forwards): up to k draft tokens, the drafter's
    probabilities for them ((d, V), or None when the draft is deterministic) and draft forwards spent."""

    def __init__(self, target: torch.nn.Module, arg: str | None = None, loader=None):
        self.target = target
        self.arg = arg
        self.loader = loader  # methods.base.ModelLoader, for drafters that load a model

    def reset(self) -> None:
        """Called at the start of every request."""

    def use_engine(self, engine: Engine) -> None:
        """Run this drafter's forwards (if it has any) on an engine of `engine`'s kind."""

    def warm_up(self, progress=None) -> float:
        """Compile the drafter's forwards ahead of the timed requests; seconds spent."""
        return 0.0

    def reserve(self, positions: int, fit: bool = False) -> bool:
        """Make room for a request of `positions` in the drafter's engine, if it has one; True when it changed size."""
        return False

    def engines(self) -> dict[str, Engine]:
        """{role: engine} of the drafter's own forwards (none for a drafter without a model)."""
        return {}

    def propose(self, committed: Sequence[int], k: int, temperature: float):
        raise NotImplementedError

    def reset_batch(self, batch_size: int) -> None:
        """Called at the start of every batch of requests (decode_batch)."""

    def warm_up_batch(self, batch_size: int, progress=None) -> float:
        """Compile the drafter's batched forwards ahead of the timed batches; seconds spent."""
        return 0.0

    def propose_batch(self, committed: Sequence[Sequence[int] | None], ks: Sequence[int], temperature: float):
        """propose() for every row of a batch (None: the row drafts nothing): a list of (tokens, q, forwards).
        This default proposes row by row, which is right for a drafter without state between calls (n-gram
        lookup); a drafter with a cache overrides it (ModelDrafter)."""
        return [self.propose(c, k, temperature) if c is not None and k > 0 else ([], None, 0)
                for c, k in zip(committed, ks)]


DRAFTERS = Registry("drafter", {"ngram": "methods.drafters:NgramDrafter",
                                "layerskip": "methods.drafters:LayerSkipDrafter"},
                    "harness.drafters", Drafter)


def check_draft(spec: str) -> None:
    """A `draft=` spec that names no registered drafter and no model file, directory or hub id (org/name), yet is close
    to a drafter's name, is a typo: a ValueError that suggests the drafter (a model alias goes on to the loader)."""
    from pathlib import Path

    name = spec.partition(":")[0]
    available = DRAFTERS.available()
    if name in available or "/" in spec or spec.endswith(".gguf") or Path(spec).expanduser().exists():
        return
    hint = suggestion(name, available, cutoff=0.7)  # strict: model aliases are not typos
    if hint:
        raise ValueError(f"unknown drafter {name!r}{hint} (drafters: {', '.join(sorted(available))}, "
                         "or a model: alias, hub id, directory or .gguf; see `harness drafters`)")


def make_drafter(spec: str, target: torch.nn.Module, default_args: dict[str, str] | None = None,
                 loader=None, engine: Engine | None = None) -> Drafter:
    """`name[:arg]` of a registered drafter (a missing arg falls back to default_args[name]);
    anything else is a model spec for ModelDrafter, loaded through `loader` (methods.base.ModelLoader).
    A drafter with a model runs it on an engine of `engine`'s kind (eager by default)."""
    name, _, arg = spec.partition(":")
    if name in DRAFTERS.available():
        drafter = DRAFTERS.get(name)(target, arg or (default_args or {}).get(name), loader)
    else:
        drafter = ModelDrafter(target, spec, loader)
    drafter.use_engine(engine if engine is not None else Engine(target))
    return drafter


class NgramDrafter(Drafter):
    """Prompt lookup (Saxena 2023): find the last n tokens (n = ngram .. 1) earlier in the text and
    propose what followed their first occurrence. No model, no forwards."""

    def __init__(self, target, arg=None, loader=None):
        super().__init__(target, arg, loader)
        self.ngram = int(arg) if arg else 2

    def propose(self, committed, k, temperature):
        seq = torch.tensor(committed)
        for n in range(min(self.ngram, len(committed) - 1), 0, -1):
            windows = seq.unfold(0, n, 1)  # (L-n+1, n)
            hits = (windows == seq[-n:]).all(1).nonzero().flatten().tolist()
            for start in hits:
                begin = start + n
                end = min(begin + k, len(committed))
                if begin < end:
                    return committed[begin:end], None, 0
        return [], None, 0


class ModelDrafter(Drafter):
    """A small causal LM drafts k tokens autoregressively with its own KV cache."""

    def __init__(self, target, arg, loader=None):
        super().__init__(target, arg, loader)
        self.model = self._load(arg)
        vd, vt = self.model.config.get_text_config().vocab_size, target.config.get_text_config().vocab_size
        if vd != vt:
            raise ValueError(f"draft model {arg!r} has a vocabulary of {vd} tokens, the target {vt}: "
                             "a draft model must share the target's tokenizer")
        self.cache, self.cached = None, []  # the drafter's KV cache and the tokens it holds
        self.batch_cache, self.batch_cached = None, []  # the same for a batch: methods.batch.BatchCache, per row
        self.engine = Engine(self.model)

    def use_engine(self, engine):
        self.engine = engine.like(self.model)

    def warm_up(self, progress=None):
        return self.engine.warm_up((1, 2), progress=progress)  # a draft feeds 1 token, 2 after a correction

    def reserve(self, positions, fit=False):
        return self.engine.reserve(positions, fit)

    def engines(self):
        return {"draft": self.engine}

    def _load(self, spec):
        if self.loader is None:
            raise ValueError(f"a draft model ({spec!r}) needs a model loader; the harness passes its own")
        return self.loader(spec, self.target)

    def reset(self):
        self.cache, self.cached = self.engine.new_cache(), []

    def _sync_cache(self, committed) -> list[int]:
        """Roll the cache back to its longest prefix shared with `committed`; return what it still lacks."""
        same = 0
        for a, b in zip(self.cached, committed):
            if a != b:
                break
            same += 1
        same = min(same, len(committed) - 1)  # always feed at least the last token
        self.engine.rollback(self.cache, len(self.cached) - same)
        self.cached = list(committed[:same])
        return list(committed[same:])

    def reset_batch(self, batch_size):
        self.batch_cache, self.batch_cached = None, [[] for _ in range(batch_size)]

    def warm_up_batch(self, batch_size, progress=None):
        return self.engine.warm_up_batch(batch_size, (1, 2), progress=progress)

    @torch.inference_mode()
    def propose_batch(self, committed, ks, temperature):
        """Every row's draft in max(ks) forwards of the draft model over the whole batch, with a batch cache of
        its own: each row's cache rolls back to its longest prefix shared with the committed text (per-row
        position bookkeeping), then feeds what it lacks, left-padded so that the last column is every row's
        newest token."""
        B, device = len(committed), next(self.model.parameters()).device
        live = [c is not None and k > 0 for c, k in zip(committed, ks)]
        out = [([], [], k if live[b] else 0) for b, k in enumerate(ks)]
        if not any(live):
            return [(t, None, f) for t, _, f in out]
        if self.batch_cache is None:
            self.batch_cache = self.engine.new_batch(B)
        # 1. Per row: drop cached tokens past the prefix shared with the committed text; feed the rest.
        feeds, lengths = [], []
        for b in range(B):
            cached, c = self.batch_cached[b], committed[b]
            same = 0
            if live[b]:
                for x, y in zip(cached, c):
                    if x != y:
                        break
                    same += 1
                same = min(same, len(c) - 1)  # always feed at least the last token
                self.batch_cached[b] = list(c[:same])
                feeds.append(list(c[same:]))
            else:
                same = len(cached)
                feeds.append(None)
            lengths.append(same)
        self.engine.batch_rollback(self.batch_cache, lengths)
        # 2. Draft: one forward of the batch per draft token; rows already done feed a token they do not keep.
        for i in range(max(ks)):
            going = [live[b] and i < ks[b] for b in range(B)]
            rows = [feeds[b] if going[b] else [0] for b in range(B)]
            ids, positions, allowed, real = chain_layout(rows, self.batch_cache.lengths(), left=True)
            logits = self.engine.batch_forward(self.batch_cache, ids, positions, allowed, keep=1)[:, -1]  # (B, V)
            self.engine.batch_commit(self.batch_cache, real & torch.tensor(going, device=device)[:, None])
            for b in range(B):
                if going[b]:
                    self.batch_cached[b] += feeds[b]
                    tok = sample(logits[b], temperature)
                    if temperature > 0:
                        out[b][1].append(torch.softmax(logits[b].float() / temperature, -1))
                    out[b][0].append(tok)
                    feeds[b] = [tok]
        return [(t, torch.stack(p) if p else None, f) for t, p, f in out]

    @torch.inference_mode()
    def propose(self, committed, k, temperature):
        feed = self._sync_cache(committed)
        device = next(self.model.parameters()).device
        tokens, probs = [], []
        for _ in range(k):
            logits = self.engine.forward(torch.tensor([feed], device=device), self.cache, keep=1)[0, -1]  # (V,)
            self.cached += feed
            tok = sample(logits, temperature)
            if temperature > 0:
                probs.append(torch.softmax(logits.float() / temperature, -1))
            tokens.append(tok)
            feed = [tok]
        q = torch.stack(probs) if probs else None
        return tokens, q, k


def truncated_view(model: torch.nn.Module, n_layers: int) -> torch.nn.Module:
    """The same model, sharing every weight, but running only its first n_layers decoder layers."""
    inner_name = model.base_model_prefix
    inner = getattr(model, inner_name, None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"layerskip needs a decoder with `{inner_name}.layers`; {type(model).__name__} has none")
    total = len(layers)
    if not 1 <= n_layers < total:
        raise ValueError(f"layerskip:L needs 1 <= L < {total} (the target's layer count), got {n_layers}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:n_layers]
    new_inner = copy.copy(inner)
    new_inner._modules = dict(inner._modules)
    new_inner._modules["layers"] = torch.nn.ModuleList(list(layers)[:n_layers])
    new_inner.config = config
    view = copy.copy(model)
    view._modules = dict(model._modules)
    view._modules[inner_name] = new_inner
    view.config = config
    return view


class LayerSkipDrafter(ModelDrafter):
    """Self-speculation: the target's first L layers plus its final norm and head draft for the whole model."""

    def _load(self, spec):
        if not self.arg or not self.arg.isdigit():
            raise ValueError(f"layerskip needs a layer count: draft=layerskip:L, got draft=layerskip:{self.arg or ''}")
        return truncated_view(self.target, int(self.arg))
