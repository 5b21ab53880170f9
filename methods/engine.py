"""The engine: the forward and cache helpers every decoder calls, eager or compiled (the one seam between a
decoding algorithm and how the hardware runs its forwards).

    engine = make_engine("compiled", model)   # or "eager"; decoders get one from the harness
    cache = engine.new_cache()
    logits = engine.forward(x, cache, keep=1)  # (1, keep, V)
    engine.rollback(cache, n)                  # drop the last n positions

`Engine` runs HF eager with a `DynamicCache` (methods/kv.py). `CompiledEngine` keeps one static KV cache per model
(allocated once, reused by every request) whose rollback moves a position counter, and runs every forward after the
prefill through `torch.compile(model.forward, dynamic=False)`, one graph per width (gpt-fast's pattern): a forward
of w tokens is padded to the smallest compiled width >= w, so that a short last block never compiles a new graph.
On CPU inductor freezes the weights and autotunes its C++ GEMM template (max-autotune); on CUDA it captures CUDA
graphs. The prompt's prefill runs eager (prompt lengths differ; one graph per prompt would never pay back).
"""
from __future__ import annotations

import logging
import time

import torch
import torch._inductor.config  # noqa: F401  (inductor's config, patched while a graph compiles)
from transformers.cache_utils import Cache, DynamicLayer, StaticLayer

from methods import batch, kv
from methods.batch import BatchCache

log = logging.getLogger(__name__)
ENGINES = ("eager", "compiled")
CACHE_GRAIN = 64  # a fitted static cache's size is a multiple of this many positions


class Engine:
    """Eager forwards with a DynamicCache: what HF transformers does out of the box."""

    name = "eager"

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def like(self, model: torch.nn.Module) -> Engine:
        """An engine of the same kind for another model (a draft model, a CLLM checkpoint)."""
        return type(self)(model)

    def new_cache(self, record_past: bool = True):
        return kv.new_cache(self.model, record_past)

    def length(self, cache) -> int:
        """Positions the cache holds (the committed context)."""
        return int(cache.get_seq_length())

    def forward(self, input_ids: torch.Tensor, cache, keep: int) -> torch.Tensor:
        """input_ids (1, w) after the cached positions; returns the last `keep` logits (1, keep, V)."""
        return kv.forward(self.model, input_ids, cache, keep)

    def tree_forward(self, input_ids, cache, allowed, positions, keep) -> torch.Tensor:
        """A forward over tokens that are not one causal chain (see kv.tree_forward)."""
        return kv.tree_forward(self.model, input_ids, cache, allowed, positions, keep)

    def rollback(self, cache, n: int) -> None:
        kv.rollback(cache, n)

    def warm_up(self, widths=(), tree: bool = False, progress=None) -> float:
        """Compile what a run will use (nothing to do eagerly); returns the seconds spent."""
        return 0.0

    def reserve(self, positions: int, fit: bool = False) -> bool:
        """Make room for a request of `positions` (prompt, new tokens and the widest forward); True when the
        engine had to rebuild (then warm up again). fit=True sizes the cache to `positions` (rounded up to
        CACHE_GRAIN), smaller or bigger: a run does so once for its longest request. A dynamic cache always has room."""
        return False

    def describe(self) -> dict:
        return {"engine": self.name}

    # Batched decoding (methods/batch.py, docs/batching.md): B rows in one cache, each with its own length.

    def new_batch(self, batch_size: int) -> BatchCache:
        """An empty batch cache: a growing full-length layer for every layer (sliding windows come from the mask)."""
        n = self.model.config.get_text_config().num_hidden_layers
        device = next(self.model.parameters()).device
        return BatchCache(Cache(layers=[DynamicLayer() for _ in range(n)]), batch_size, device)

    def batch_forward(self, bc: BatchCache, input_ids, positions, allowed=None, keep=None) -> torch.Tensor:
        """input_ids and positions (B, w) after bc's slots; allowed (B, w, w): which new tokens each new token sees
        (causal when None). Returns the last `keep` logits of every row, all w when None: (B, keep, V). The w new
        slots are pending until `batch_commit`."""
        w = input_ids.shape[1]
        if batch.needs_compaction(bc, w):
            batch.compact(bc, static=False)
        mask = batch.attention_mask(self.model, bc, positions, allowed, bc.L + w)
        logits = self.model(input_ids=input_ids, **kv.cache_kwargs(self.model, bc.cache), attention_mask=mask,
                            position_ids=positions, logits_to_keep=keep or 0).logits
        bc.pending = positions
        return logits

    def batch_commit(self, bc: BatchCache, kept) -> None:
        """Keep the new slots `kept` ((B, w) bool, or the first kept[b] of each row); the rest are never context."""
        trim = batch.commit(bc, kept)
        if trim:
            bc.cache.crop(-trim)

    def batch_rollback(self, bc: BatchCache, lengths) -> None:
        """Row b keeps its first lengths[b] committed tokens (a per-row rollback: position bookkeeping)."""
        trim = batch.truncate(bc, lengths)
        if trim:
            bc.cache.crop(-trim)

    def warm_up_batch(self, batch_size: int, widths=(), progress=None) -> float:
        """Compile the batched forwards of `batch_size` rows (nothing to do eagerly); seconds spent."""
        return 0.0


class CompiledEngine(Engine):
    """Static KV cache + one compiled graph per forward width. See the module docstring."""

    name = "compiled"

    def __init__(self, model: torch.nn.Module, max_len: int = 1024, autotune: bool = True):
        super().__init__(model)
        self.max_len, self.autotune = max_len, autotune
        self.device = next(model.parameters()).device
        self.widths = {False: set(), True: set()}  # tree? -> widths with a graph: a forward pads up to one
        self._cache: Cache | None = None
        self._graphs = {}  # tree? -> compiled model.forward (dynamo keeps one graph per width under it)
        self.compile_s = 0.0
        self.late_compiles = 0  # widths first met inside a request (compiled there: its timing is spoiled)
        # Every width (plain and tree) is one more graph of the same function: allow them all.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self._batch_caches: dict[int, Cache] = {}  # batch size -> its static cache (batched decoding)
        self.batch_widths: dict[int, set] = {}  # batch size -> widths with a graph (the tree graph at that size)

    def like(self, model):
        return type(self)(model, self.max_len, self.autotune)

    def reserve(self, positions: int, fit: bool = False) -> bool:
        """Make the cache hold `positions`; True when it changed size (graphs then recompile: warm up again).

        Every forward attends over the whole static cache, so its size is paid on every step (SmolLM2-135M on
        the 2-core CPU after 250 cached tokens: 1024 positions cost 1.13-1.19x what 448 do per one-token forward,
        1.15-1.24x per 5-token one; benchmarks/cache_size.py, docs/engine.md). So a run fits the cache to its
        longest request (fit=True: rounded up to CACHE_GRAIN, smaller or bigger), and a request that outgrows it
        grows it (by 256 positions)."""
        size = -(-positions // CACHE_GRAIN) * CACHE_GRAIN
        if (size == self.max_len) if fit else (positions <= self.max_len):
            return False
        self.max_len = size if fit else -(-positions // 256) * 256
        self._cache, self._graphs = None, {}
        torch._dynamo.reset()  # the old graphs are bound to the old cache tensors
        # No width has a graph now: a forward must not pad to a width whose graph is gone (it would compile inside
        # a request, uncounted); warm-up compiles the widths again.
        self.widths, self.batch_widths = {False: set(), True: set()}, {}
        return True

    def new_cache(self, record_past: bool = True) -> Cache:
        """The engine's one static cache, emptied: its position counters go to 0 (stale keys beyond the counter
        are never attended to, since the causal mask only shows positions already rewritten)."""
        if self._cache is None:
            n = self.model.config.get_text_config().num_hidden_layers
            # Full-length static layers everywhere, sliding ones included: sliding windows are applied by the
            # attention mask, and rolling back stays a counter move (a ring buffer could not un-write).
            self._cache = Cache(layers=[StaticLayer(max_cache_len=self.max_len) for _ in range(n)])
        for layer in self._cache.layers:
            layer.cumulative_length.zero_()
        return self._cache

    def rollback(self, cache, n: int) -> None:
        if n > 0:
            cache.crop(-n)

    def _graph(self, tree: bool):
        if tree not in self._graphs:
            if self.device.type == "cuda":  # CUDA graphs take the launch overhead out of small forwards
                mode = "max-autotune" if self.autotune else "reduce-overhead"
            else:  # CPU: GEMMs autotuned among inductor's C++ template and ATen
                mode = "max-autotune" if self.autotune else None
            compiled = torch.compile(self.model.forward, dynamic=False, mode=mode)

            def run(**kwargs):
                # Graphs compile lazily, at the first call of each width: inductor reads `freezing` (weights folded
                # into the graph as constants and prepacked once) from its config then; as a torch.compile option
                # it was not applied (measured: 100 ms instead of 53 ms per one-token forward of SmolLM2-135M).
                with torch._inductor.config.patch(freezing=True):
                    return compiled(**kwargs)

            self._graphs[tree] = run
        return self._graphs[tree]

    def _width(self, w: int, tree: bool) -> int:
        """The graph a forward of w tokens runs on: the narrowest known width >= w, else a new graph of w."""
        W = min((b for b in self.widths[tree] if b >= w), default=None)
        if W is None:
            log.warning("compiled engine: a %sforward of %d tokens has no graph yet; compiling one now",
                        "tree " if tree else "", w)
            self.late_compiles += 1
            self.widths[tree].add(w)
            W = w
        return W

    def _room(self, start: int, W: int):
        if start + W > self.max_len:
            raise kv.CacheRollbackError(f"the compiled engine's cache holds {self.max_len} positions, this forward "
                                        f"needs {start + W}; the harness reserves room per request (reserve())")

    def forward(self, input_ids, cache, keep):
        w, start = input_ids.shape[1], self.length(cache)
        if start == 0:  # the prefill: prompt lengths differ, so eager (into the same static cache)
            self._room(start, w)
            return kv.forward(self.model, input_ids, cache, keep)
        W = self._width(w, False)
        self._room(start, W)
        logits = self._graph(False)(input_ids=pad_right(input_ids, W), **kv.cache_kwargs(self.model, cache),
                                    logits_to_keep=0).logits  # (1, W, V): one graph per width, whatever keep is
        self.rollback(cache, W - w)  # the padding's positions are never committed
        return logits[:, w - keep: w]

    def tree_forward(self, input_ids, cache, allowed, positions, keep):
        q, start = input_ids.shape[1], self.length(cache)
        W = self._width(q, True)
        self._room(start, W)
        pos = torch.cat([positions, positions[-1] + 1 + torch.arange(W - q, device=positions.device)])  # (W,)
        ok = torch.eye(W, dtype=torch.bool, device=allowed.device)  # padding sees itself (and the context)
        ok[:q, :q] = allowed
        mask = static_tree_mask(self.model, start, self.max_len, ok, pos)
        logits = self._graph(True)(input_ids=pad_right(input_ids, W), **kv.cache_kwargs(self.model, cache),
                                   attention_mask=mask, position_ids=pos.unsqueeze(0), logits_to_keep=0).logits
        self.rollback(cache, W - q)
        return logits[:, q - keep: q]

    @torch.inference_mode()
    def warm_up(self, widths=(), tree: bool = False, progress=None) -> float:
        """Compile (or load from inductor's on-disk cache) one graph per width, so that no compilation happens
        inside a timed request; returns the seconds it took."""
        t0 = time.perf_counter()
        self.widths[tree].update(widths)
        for W in sorted(set(widths)):
            t = time.perf_counter()
            for _ in range(2):  # the second call runs the graph the first one built
                cache = self.new_cache()
                self.forward(torch.zeros(1, 8, dtype=torch.long, device=self.device), cache, keep=1)  # eager prefill
                x = torch.zeros(1, W, dtype=torch.long, device=self.device)
                if tree:
                    causal = torch.tril(torch.ones(W, W, dtype=torch.bool, device=self.device))
                    self.tree_forward(x, cache, causal, torch.arange(8, 8 + W, device=self.device), keep=1)
                else:
                    self.forward(x, cache, keep=1)
            if progress:
                progress(f"{'tree ' if tree else ''}width {W}: {time.perf_counter() - t:.1f} s")
        self.new_cache()
        self.compile_s += time.perf_counter() - t0
        return time.perf_counter() - t0

    def describe(self) -> dict:
        return {"engine": self.name, "max_len": self.max_len, "autotune": self.autotune,
                "widths": sorted(self.widths[False]), "tree_widths": sorted(self.widths[True]),
                "compile_s": round(self.compile_s, 1), "late_compiles": self.late_compiles,
                **({"batch_widths": {str(b): sorted(w) for b, w in sorted(self.batch_widths.items())}}
                   if self.batch_widths else {})}

    # Batched decoding: one static cache per batch size, forwards through the tree graph (explicit mask and
    # positions), one graph per (batch size, width); the prefill runs eager. See methods/batch.py.

    def new_batch(self, batch_size: int) -> BatchCache:
        cache = self._batch_caches.get(batch_size)
        if cache is None or cache.layers[0].max_cache_len != self.max_len:  # first use, or the cache grew (reserve)
            n = self.model.config.get_text_config().num_hidden_layers
            cache = self._batch_caches[batch_size] = Cache(layers=[StaticLayer(max_cache_len=self.max_len)
                                                                   for _ in range(n)])
        for layer in cache.layers:
            layer.cumulative_length.zero_()
        return BatchCache(cache, batch_size, self.device, capacity=self.max_len)

    def _batch_width(self, batch_size: int, w: int) -> int:
        known = self.batch_widths.setdefault(batch_size, set())
        W = min((b for b in known if b >= w), default=None)
        if W is None:
            log.warning("compiled engine: a batched forward of %d x %d tokens has no graph yet; compiling one now",
                        batch_size, w)
            self.late_compiles += 1
            known.add(w)
            W = w
        return W

    def batch_forward(self, bc, input_ids, positions, allowed=None, keep=None):
        B, w = input_ids.shape
        if bc.L == 0:  # the prefill: eager, as for one row
            self._room(0, w)
            mask = batch.attention_mask(self.model, bc, positions, allowed, self.max_len)
            logits = self.model(input_ids=input_ids, **kv.cache_kwargs(self.model, bc.cache), attention_mask=mask,
                                position_ids=positions, logits_to_keep=keep or 0).logits
            bc.pending = positions
            return logits
        W = self._batch_width(B, w)
        if batch.needs_compaction(bc, W):
            batch.compact(bc, static=True)
        self._room(bc.L, W)
        # Pad every row to the graph's width W: the padding sees itself and the context, and is rolled back.
        extra = torch.arange(1, W - w + 1, device=positions.device)[None]
        ids = torch.cat([input_ids, input_ids[:, -1:].expand(B, W - w)], dim=1)  # (B, W)
        pos = torch.cat([positions, positions[:, -1:] + extra], dim=1)  # (B, W)
        ok = torch.eye(W, dtype=torch.bool, device=ids.device).repeat(B, 1, 1)  # (B, W, W)
        ok[:, :w, :w] = torch.tril(torch.ones(w, w, dtype=torch.bool, device=ids.device)) if allowed is None else allowed
        mask = batch.attention_mask(self.model, bc, pos, ok, self.max_len)
        logits = self._graph(True)(input_ids=ids, **kv.cache_kwargs(self.model, bc.cache), attention_mask=mask,
                                   position_ids=pos, logits_to_keep=0).logits  # (B, W, V)
        if W > w:
            bc.cache.crop(w - W)
        bc.pending = positions
        return logits[:, w - keep: w] if keep else logits[:, :w]

    @torch.inference_mode()
    def warm_up_batch(self, batch_size: int, widths=(), progress=None) -> float:
        """Compile the graphs of batched forwards of `batch_size` rows, one per width; seconds spent."""
        t0 = time.perf_counter()
        self.batch_widths.setdefault(batch_size, set()).update(widths)
        # every (batch size, width) is one more graph of the tree function: a sweep over 1, 2, 4, 8 needs more
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 128)
        z = lambda w: torch.zeros(batch_size, w, dtype=torch.long, device=self.device)  # noqa: E731
        at = lambda a, w: torch.arange(a, a + w, device=self.device).expand(batch_size, w)  # noqa: E731
        for W in sorted(set(widths)):
            t = time.perf_counter()
            for _ in range(2):  # the second call runs the graph the first one built
                bc = self.new_batch(batch_size)
                self.batch_forward(bc, z(8), at(0, 8), keep=1)  # eager prefill
                self.batch_commit(bc, [8] * batch_size)
                self.batch_forward(bc, z(W), at(8, W), keep=1)
            if progress:
                progress(f"batch {batch_size} x width {W}: {time.perf_counter() - t:.1f} s")
        self.compile_s += time.perf_counter() - t0
        return time.perf_counter() - t0


def pad_right(input_ids: torch.Tensor, width: int) -> torch.Tensor:
    """(1, w) -> (1, width), repeating the last token (the padding is causally after every real token)."""
    w = input_ids.shape[1]
    return input_ids if w == width else torch.cat([input_ids, input_ids[:, -1:].expand(1, width - w)], dim=1)


def static_tree_mask(model, start: int, max_len: int, allowed: torch.Tensor, positions: torch.Tensor):
    """The 4D mask of a tree forward on a static cache: key j < start is committed context (all visible, within
    a sliding window where the layer has one); keys start..start+q-1 are the new tokens (as `allowed` says)."""
    config = model.config.get_text_config()
    window, layer_types = getattr(config, "sliding_window", None), getattr(config, "layer_types", None)
    q = allowed.shape[0]
    ok = torch.zeros(q, max_len, dtype=torch.bool, device=allowed.device)
    ok[:, :start] = True
    ok[:, start: start + q] = allowed
    k_pos = torch.arange(max_len, device=positions.device)
    k_pos[start: start + q] = positions

    def build(sliding: bool):
        return kv.model_mask(model, ok & ((positions[:, None] - k_pos[None, :]) < window) if sliding else ok)

    if layer_types:
        return {kind: build(kind == "sliding_attention" and bool(window)) for kind in set(layer_types)}
    return build(bool(window))


def make_engine(name: str, model: torch.nn.Module, max_len: int = 1024, autotune: bool = True) -> Engine:
    """An engine by name. max_len (static cache positions) and autotune concern the compiled engine only."""
    if name == "eager":
        return Engine(model)
    if name == "compiled":
        return CompiledEngine(model, max_len, autotune)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
