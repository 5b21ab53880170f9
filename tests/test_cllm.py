"""CLLM: trajectory collection against a straightforward reference, the packed training sequence, training,
checkpoint round trips, bad trajectory files, and the cllm decoder, all on tiny-random (no downloads)."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
from click.testing import CliRunner

import harness.cllm.trajectories as traj
from harness import HarnessError
from harness.cli import main
from harness.cllm.train import TrainConfig, cllm_losses, group_samples, pack, save, train
from harness.cllm.trajectories import CollectConfig, collect, read_trajectories
from harness.engine.generate import Stopper, generate, generate_batch
from harness.engine.models import load_model, model_loader
from harness.engine.provenance import content_hash
from harness.engine.session import build_decoder, encode, eos_ids
from methods.cllm import CLLM, CLLMOptions

QUESTIONS = ["Ann has 2 cats and 3 dogs. How many pets?", "What is 6 times 7?", "A train goes 60 km in 1 h. Speed?",
             "Tom reads 5 pages a day. Pages in a week?", "Half of 18 is?"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, write_gsm8k):
    return write_gsm8k(tmp_path_factory.mktemp("data"), [{"question": q, "answer": "#### 1"} for q in QUESTIONS])


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random", seed=0)


def collect_cfg(data_dir, out, **kw):
    return CollectConfig(out=str(out), model="tiny-random", data_dir=str(data_dir), block_size=kw.pop("block_size", 8),
                         max_new_tokens=kw.pop("max_new_tokens", 40), batch_size=kw.pop("batch_size", 2), **kw)


@pytest.fixture(scope="module")
def trajectories(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("traj") / "t.jsonl"
    collect(collect_cfg(data_dir, out, clean=False), echo=lambda *a: None)
    return out


def reference_blocks(model, prompt, answer, n, rng):
    """Block after block, no cache: each Jacobi iteration is a plain forward over prefix + state."""
    starts = list(range(0, len(answer), n))
    states = {j: [prompt[rng.randrange(len(prompt))] for _ in range(min(n, len(answer) - s))] for j, s in enumerate(starts)}
    out = []
    for j, s in enumerate(starts):
        prefix, y, history = prompt + answer[:s], states[j], [states[j]]
        while True:
            with torch.no_grad():
                logits = model(torch.tensor([prefix + y])).logits[0]
            new = logits[len(prefix) - 1: len(prefix) - 1 + len(y)].argmax(-1).tolist()
            if new == y:
                break
            y = new
            history.append(new)
        out.append({"states": history[:-1], "fixed_point": y})
    return out


def test_collection_equals_a_straightforward_reference(tiny, trajectories):
    header, records, dropped = read_trajectories(trajectories)
    assert header["block_size"] == 8 and header["vocab_size"] == tiny.model.config.vocab_size and not dropped
    samples = group_samples(records)
    assert len(samples) == len(QUESTIONS)
    ar, _ = build_decoder("ar", {}, tiny.model)
    eos = eos_ids(tiny)
    for s in samples:
        # the answer is AR's greedy output (one request at a time), cut after EOS
        ref = generate(ar, torch.tensor([s["prompt"]]), 40, Stopper(eos)).tokens
        assert s["answer"] == ref
        rng = random.Random(f"0/{s['sample_id']}")
        expected = reference_blocks(tiny.model, s["prompt"], s["answer"], 8, rng)
        assert [(b["states"], b["fixed_point"]) for b in s["blocks"]] == [(e["states"], e["fixed_point"]) for e in expected]
        assert all(b["n_jacobi"] == len(b["states"]) for b in s["blocks"])


def test_collection_resumes_without_redoing_samples(data_dir, tmp_path, monkeypatch, trajectories):
    out = tmp_path / "t.jsonl"
    real, calls = traj.jacobi_blocks, {"n": 0}

    def interrupt_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(traj, "jacobi_blocks", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        collect(collect_cfg(data_dir, out, clean=False), echo=lambda *a: None)
    assert len({r["sample_id"] for r in read_trajectories(out)[1]}) == 2
    with open(out, "a") as f:
        f.write('{"sample_id": "gsm8k/train/2", "blo')  # torn by the interruption
    monkeypatch.setattr(traj, "jacobi_blocks", real)
    messages = []
    collect(collect_cfg(data_dir, out, clean=False), echo=messages.append)
    assert "2 of 5 samples already collected" in messages[0]
    assert read_trajectories(out)[1] == read_trajectories(trajectories)[1]  # same as one uninterrupted run


def test_collection_refuses_other_settings_and_cleans(data_dir, tmp_path, trajectories):
    with pytest.raises(HarnessError, match="other settings"):
        collect(collect_cfg(data_dir, trajectories, block_size=4, clean=False), echo=lambda *a: None)
    assert traj.longest_run([1, 2, 2, 2, 3]) == 3 and traj.longest_run([5] * 10) == 10
    aug = traj.augment([[1, 9, 9, 9]], [1, 2, 3, 4], 3, random.Random(0))
    assert len(aug) == 3 and all(a[0] == 1 and 0 < sum(x != y for x, y in zip(a, [1, 2, 3, 4])) < 3 for a in aug)


def test_packed_sequence_masks_positions_and_targets():
    sample = {"sample_id": "s", "prompt": [10, 11, 12], "answer": [1, 2, 3, 4, 5],
              "blocks": [{"block": 0, "prefix_ids": [], "states": [[7, 8, 9]], "fixed_point": [1, 2, 3]},
                         {"block": 1, "prefix_ids": [1, 2, 3], "states": [[4, 9]], "fixed_point": [4, 5]}]}
    b = pack(sample, "global", random.Random(0))
    # prompt + answer, then block 0's state [7, 8] at positions 3, 4 and block 1's [4] at position 6
    assert b["input_ids"].tolist() == [10, 11, 12, 1, 2, 3, 4, 5, 7, 8, 4]
    assert b["position_ids"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 3, 4, 6]
    m = b["mask"]
    assert m[8].tolist() == [True] * 3 + [False] * 5 + [True, False, False]  # prompt + itself
    assert m[9].tolist() == [True] * 3 + [False] * 5 + [True, True, False]
    assert m[10].tolist() == [True] * 6 + [False] * 4 + [True]  # prompt + answer[:3] + itself
    assert b["ar_index"].tolist() == [2, 3, 4, 5, 6] and b["ar_target"].tolist() == [1, 2, 3, 4, 5]
    # block 0: both state tokens are wrong -> two positions, taught by answer positions 3, 4;
    # block 1: its one state token (4) is right -> same context as the teacher, no position
    assert b["student_index"].tolist() == [8, 9] and b["teacher_index"].tolist() == [3, 4]
    local = pack({**sample, "blocks": [{**sample["blocks"][0], "states": [[7, 8, 9], [1, 8, 3]], "n_jacobi": 2}]},
                 "local", random.Random(1))
    assert local["input_ids"].tolist()[8:] in ([7, 8, 1, 8], [1, 8, 1, 2])  # state k, then state k+1 (or y*)


def test_several_states_per_block_are_packed_as_separate_groups():
    sample = {"sample_id": "s", "prompt": [10, 11, 12], "answer": [1, 2, 3],
              "blocks": [{"block": 0, "prefix_ids": [], "states": [[7, 8, 9], [1, 8, 9], [1, 2, 9]],
                          "fixed_point": [1, 2, 3]}]}
    b = pack(sample, "global", random.Random(0), states_per_block=2)
    # two of the three states, in trajectory order, each [y0, y1] at positions 3, 4
    groups = [b["input_ids"].tolist()[6:8], b["input_ids"].tolist()[8:10]]
    assert groups in ([[7, 8], [1, 8]], [[7, 8], [1, 2]], [[1, 8], [1, 2]])
    assert b["position_ids"].tolist()[6:] == [3, 4, 3, 4]
    m = b["mask"]
    assert m[9].tolist() == [True] * 3 + [False] * 5 + [True, True]  # the second group does not see the first
    # student positions: those after the first wrong token; all are taught by answer positions 3, 4
    want = [(6 + 2 * g + i, 3 + i) for g, y in enumerate(groups) for i in range(2) if y[: i + 1] != [1, 2][: i + 1]]
    assert list(zip(b["student_index"].tolist(), b["teacher_index"].tolist())) == want
    every = pack(sample, "global", random.Random(0), states_per_block=5)  # more than there are: all three
    assert every["input_ids"].tolist()[6:] == [7, 8, 1, 8, 1, 2]
    assert pack(sample, "global", random.Random(0), states_per_block=0)["input_ids"].tolist()[6:] == [7, 8, 1, 8, 1, 2]


def test_horizon_packs_only_the_tokens_past_the_verified_prefix():
    sample = {"sample_id": "s", "prompt": [10, 11, 12], "answer": [1, 2, 3, 4, 5],
              "blocks": [{"block": 0, "prefix_ids": [], "states": [[1, 8, 9, 7, 6], [1, 2, 3, 4, 6]],
                          "fixed_point": [1, 2, 3, 4, 5]}]}
    b = pack(sample, "global", random.Random(0), states_per_block=2, horizon=2)
    # state 0: verified prefix [1], then [8, 9] at positions 4, 5, seeing prompt + answer[:1];
    # state 1: its inputs (the first m - 1 = 4 tokens) are all right: nothing to pack
    assert b["input_ids"].tolist()[8:] == [8, 9] and b["position_ids"].tolist()[8:] == [4, 5]
    assert b["mask"][9].tolist() == [True] * 4 + [False] * 4 + [True, True]
    assert b["student_index"].tolist() == [8, 9] and b["teacher_index"].tolist() == [4, 5]


@pytest.mark.parametrize("loss,horizon", [("global", 0), ("global", 3), ("local", 0), ("local", 3)])
def test_packed_logits_equal_plain_forwards_of_each_state(tiny, trajectories, loss, horizon):
    """Every student position must see exactly what decoding would: prompt, answer before the block and
    the state up to itself; its teacher the same with the fixed point (global) or the next state (local)."""
    _, records, _ = read_trajectories(trajectories)
    sample = group_samples(records)[1]
    b = pack(sample, loss, random.Random(0), states_per_block=3, horizon=horizon)
    assert b["student_index"].numel() > 0
    # what decoding shows the model at state token i: prompt + answer before the block + y[:i + 1]
    contexts = {tuple(sample["prompt"] + blk["prefix_ids"] + y[: i + 1])
                for blk in sample["blocks"] for y in blk["states"] + [blk["fixed_point"]] for i in range(len(y))}
    tokens = b["input_ids"].tolist()
    with torch.no_grad():
        packed = tiny.model(input_ids=b["input_ids"][None], position_ids=b["position_ids"][None],
                            attention_mask=b["mask"][None, None]).logits[0]
        for st, te in zip(b["student_index"].tolist(), b["teacher_index"].tolist()):
            seen = {i: [tokens[k] for k in range(len(tokens)) if b["mask"][i, k]] for i in (st, te)}  # packed order
            for i in (st, te):
                assert tuple(seen[i]) in contexts and b["position_ids"][i] == len(seen[i]) - 1
                plain = tiny.model(torch.tensor([seen[i]])).logits[0, -1]
                torch.testing.assert_close(packed[i], plain, rtol=1e-4, atol=1e-4)
            assert len(seen[te]) == len(seen[st])  # teacher and student predict the same answer token
            if loss == "global":  # the teacher is the answer itself
                assert seen[te] == (sample["prompt"] + sample["answer"])[: len(seen[te])]


def test_training_reduces_the_loss_and_changes_the_weights(tiny, trajectories, tmp_path):
    header, records, _ = read_trajectories(trajectories)
    samples = group_samples(records)
    batches = [pack(s, "global", random.Random(i)) for i, s in enumerate(samples)]

    def loss_of(model):
        with torch.no_grad():
            return sum(cllm_losses(model, b, 10.0)[0].item() for b in batches)

    before = loss_of(tiny.model)
    out = train(TrainConfig(data=str(trajectories), out=str(tmp_path / "ck"), max_steps=25, lr=3e-3, save_steps=1000),
                echo=lambda *a: None)
    trained = load_model(str(out))
    assert loss_of(trained.model) < 0.9 * before
    base_w = tiny.model.model.layers[0].mlp.down_proj.weight
    assert not torch.allclose(trained.model.model.layers[0].mlp.down_proj.weight, base_w)
    card = json.loads((out / "cllm.json").read_text())
    assert card["base_model"] == "tiny-random" and card["kind"] == "lora" and card["recipe"]["steps"] == 25
    assert card["recipe"]["trajectories"]["block_size"] == 8


def test_lora_checkpoint_round_trip(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model("tiny-random", seed=0)
    peft = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = peft(x).logits
    header = {"model": "tiny-random", "block_size": 8}
    save(peft, base, tmp_path / "ck", TrainConfig(data="d", out=str(tmp_path / "ck")), header, [], 0, [], 0.0)
    loaded = load_model(str(tmp_path / "ck"))
    with torch.no_grad():
        got = loaded.model(x).logits
        plain = tiny.model(x).logits
    assert torch.allclose(got, want, atol=2e-2) and not torch.allclose(got, plain, atol=2e-2)  # bf16 adapter
    assert loaded.source == "cllm" and loaded.tokenizer.eos_token_id == tiny.tokenizer.eos_token_id


def test_full_fine_tuning_writes_a_plain_model_directory(trajectories, tmp_path):
    out = train(TrainConfig(data=str(trajectories), out=str(tmp_path / "full"), lora=False, max_steps=2, lr=1e-3,
                            save_steps=1000), echo=lambda *a: None)
    loaded = load_model(str(out))
    assert loaded.source == "dir" and json.loads((out / "cllm.json").read_text())["kind"] == "full"


def test_cllm_decoder_is_jacobi_on_the_checkpoint_and_reports_its_counts(tiny, trajectories, tmp_path):
    out = train(TrainConfig(data=str(trajectories), out=str(tmp_path / "ck"), max_steps=5, lr=3e-3, save_steps=1000),
                echo=lambda *a: None)
    decoder = CLLM(tiny.model, CLLMOptions(checkpoint=str(out), block_size=6), loader=model_loader())
    ckpt = load_model(str(out))
    ar, _ = build_decoder("ar", {}, ckpt.model)
    prompts, refs = [], []
    for text in ("Question: what is 2+2?", "def add(a, b):"):
        ids = torch.tensor([encode(tiny, [{"role": "user", "content": text}], False)])
        g = generate(decoder, ids, 40, Stopper(frozenset()))
        assert g.tokens == generate(ar, ids, 40, Stopper(frozenset())).tokens  # greedy Jacobi == AR on the checkpoint
        assert sum(g.step_tokens) == 40 and len(g.step_stationary) == len(g.step_tokens)
        assert all(0 <= s <= 6 for s in g.step_stationary)
        prompts.append(ids)
        refs.append(g.tokens)
    gens, _ = generate_batch(decoder, prompts, [40, 40], [Stopper(frozenset())] * 2)  # batched: the same outputs
    assert [g.tokens for g in gens] == refs


def bad_file(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


HEADER = {"format": traj.FORMAT, "version": 1, "model": "tiny-random", "vocab_size": 259, "block_size": 4}
GOOD = {"sample_id": "a", "block": 0, "n_blocks": 1, "prompt_ids": [1, 2], "prefix_ids": [], "states": [[3, 3]],
        "fixed_point": [4, 5]}


@pytest.mark.parametrize("lines,message", [
    ([HEADER, "{not json"], "t.jsonl:2: not valid JSON"),
    ([{"hello": 1}, GOOD], "t.jsonl:1: not a CLLM trajectory file"),
    ([{**HEADER, "version": 9}, GOOD], "format version 9"),
    ([HEADER, {**GOOD, "fixed_point": [4, 999]}], "t.jsonl:2: token ids must be integers below the vocabulary size 259"),
    ([HEADER, {**GOOD, "states": [[3]]}], "t.jsonl:2: every state must have as many tokens"),
    ([HEADER, {k: v for k, v in GOOD.items() if k != "states"}], "t.jsonl:2: missing field 'states'"),
    ([HEADER, {**GOOD, "block": 1, "prefix_ids": [9]}], "does not continue the blocks before it"),
    ([{**HEADER, "vocab_size": 1000}, GOOD], "vocabulary of 1000 tokens but model tiny-random has 259"),
    ([HEADER], "holds no trajectories"),
])
def test_corrupt_or_mismatched_trajectory_files_are_one_clear_line(tmp_path, lines, message):
    path = bad_file(tmp_path / "t.jsonl", lines)
    result = CliRunner().invoke(main, ["cllm", "train", "--data", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cllm_run_pairs_the_checkpoint_with_ar_on_the_base(tiny, trajectories, tmp_path):
    out = train(TrainConfig(data=str(trajectories), out=str(tmp_path / "ck"), max_steps=3, save_steps=1000),
                echo=lambda *a: None)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Question: 1+1?"}\n{"id": "b", "prompt": "def f(x):"}\n')
    result = CliRunner().invoke(main, ["run", "--method", "cllm", "-O", f"checkpoint={out}", "-O", "block_size=8",
                                       "--model", "tiny-random", "--prompts", str(prompts), "--max-new-tokens", "16",
                                       "--runs-dir", str(tmp_path / "runs")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    s = json.loads((run_dir / "summary.json").read_text())["methods"]
    assert s["cllm"]["n_paired"] == 2 and s["cllm"]["fast_forwarded_per_step"] is not None
    assert s["cllm"]["stationary_per_step"] is not None and 0 <= s["cllm"]["lossless_rate"] <= 1
    info = json.loads((run_dir / "run.json").read_text())
    assert info["method"]["options"]["checkpoint"] == str(out) and info["model"]["name"] == "tiny-random"
    # the checkpoint is recorded by content, not only by name: the adapter's files and its base model
    [ckpt] = info["method"]["models"]
    assert ckpt["sha256"] == content_hash(out)["sha256"] and "adapter_model.safetensors" in ckpt["files"]
    assert ckpt["path"] == str(out) and ckpt["base"]["name"] == "tiny-random"


def test_cllm_decodes_at_the_trained_block_size_and_auto_picks_from_costs(tiny, trajectories, tmp_path):
    out = train(TrainConfig(data=str(trajectories), out=str(tmp_path / "ck"), max_steps=1, save_steps=1000),
                echo=lambda *a: None)
    card = json.loads((out / "cllm.json").read_text())
    decoder = CLLM(tiny.model, CLLMOptions(checkpoint=str(out)), loader=model_loader())
    assert decoder.options.block_size == card["block_size"] and decoder.widths() == (card["block_size"] + 1,)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Question: 1+1?"}\n')
    args = ["run", "--method", "cllm", "-O", f"checkpoint={out}", "-O", "block_size=auto", "--model", "tiny-random",
            "--prompts", str(prompts), "--max-new-tokens", "8", "--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, args)  # no tokens/step per block recorded yet: one clear line
    assert result.exit_code == 2 and "harness cllm measure" in result.output, result.output
    card["tokens_per_step"] = {"2": 1.5, "3": 9.0}  # block 3 commits so much more that it wins at any cost curve here
    (out / "cllm.json").write_text(json.dumps(card))
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    auto = info["auto"]
    assert auto["block_size"] == 3 and set(auto["cost_vs_width_1"]) == {"1", "3", "4"}  # JSON keys are strings
    assert info["config"]["options"]["block_size"] == "3" and auto["chosen"] == {"block_size": "3"}
    assert auto["expected_speedup"]["3"] == pytest.approx(9.0 / auto["cost_vs_width_1"]["4"], rel=1e-2)


def test_autoblock_choice_divides_tokens_per_step_by_forward_cost():
    from methods.cllm import choose_block as choose

    n, expected = choose({4: 1.5, 8: 2.0, 16: 2.2}, {5: 1.3, 9: 1.9, 17: 2.9})
    assert n == 4 and expected[4] == pytest.approx(1.5 / 1.3) and expected[16] == pytest.approx(2.2 / 2.9)


def test_cllm_measure_resumes_refuses_other_settings_and_writes_the_card(tiny, trajectories, data_dir, tmp_path):
    from harness.cllm.measure import MeasureConfig, measure

    ck = train(TrainConfig(data=str(trajectories), out=str(tmp_path / "ck"), max_steps=1, save_steps=1000),
               echo=lambda *a: None)
    rows = tmp_path / "m.jsonl"
    cfg = MeasureConfig(out=str(rows), checkpoint=str(ck), model="tiny-random", block_sizes=(2, 3), limit=2,
                        max_new_tokens=8, data_dir=str(data_dir), split="train", write_card=True)
    first = measure(cfg, echo=lambda *a: None)
    assert list(first["block_size"]) == [2, 3] and list(first["n"]) == [2, 2]
    lines = rows.read_text().splitlines()
    assert len(lines) == 4
    said = []
    again = measure(cfg, echo=said.append)  # everything measured: nothing is decoded again
    assert rows.read_text().splitlines() == lines and "4 of 4" in said[0]
    assert again["tokens_per_step"].tolist() == first["tokens_per_step"].tolist()
    card = json.loads((ck / "cllm.json").read_text())
    assert set(card["tokens_per_step"]) == {"2", "3"} and card["tokens_per_step_on"]["limit"] == 2
    with pytest.raises(HarnessError, match="other settings"):
        measure(dataclasses.replace(cfg, max_new_tokens=16), echo=lambda *a: None)
    train(TrainConfig(data=str(trajectories), out=str(ck), max_steps=2, save_steps=1000, seed=1), echo=lambda *a: None)
    with pytest.raises(HarnessError, match="other weights"):  # retrained into the same folder: the old rows are not its
        measure(cfg, echo=lambda *a: None)
