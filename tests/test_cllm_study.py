"""The CLLM data-scaling run (snapshots equal separate trainings) and the study table, on tiny-random."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from safetensors.torch import load_file

from harness import HarnessError
from harness.cllm.study import StudyConfig, study
from harness.cllm.train import PackedSamples, TrainConfig, snapshot_order, train
from harness.cllm.trajectories import CollectConfig, collect

QUESTIONS = ["Ann has 2 cats and 3 dogs. How many pets?", "What is 6 times 7?", "A train goes 60 km in 1 h. Speed?",
             "Tom reads 5 pages a day. Pages in a week?", "Half of 18 is?", "Is 9 odd?"]
quiet = dict(echo=lambda *a: None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, write_gsm8k):
    return write_gsm8k(tmp_path_factory.mktemp("data"), [{"question": q, "answer": "#### 1"} for q in QUESTIONS])


@pytest.fixture(scope="module")
def trajectories(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("traj") / "t.jsonl"
    collect(CollectConfig(out=str(out), model="tiny-random", data_dir=str(data_dir), block_size=4, max_new_tokens=24,
                          batch_size=3, clean=False), **quiet)
    return out


def test_snapshot_order_puts_each_smaller_run_first_in_its_own_order():
    big = snapshot_order(10, (2, 4, 8), seed=0)
    assert sorted(big) == list(range(8))
    assert sorted(big[:2]) == [0, 1] and sorted(big[2:4]) == [2, 3] and sorted(big[4:]) == list(range(4, 8))
    assert big[:4] == snapshot_order(10, (2, 4), seed=0)  # the run over 4 samples sees them in the same order
    assert snapshot_order(10, (8,), seed=0) != snapshot_order(10, (8,), seed=1)
    with pytest.raises(HarnessError, match="hold 10"):
        snapshot_order(10, (4, 16), seed=0)
    with pytest.raises(HarnessError, match="positive"):
        snapshot_order(10, (0, 4), seed=0)


def test_a_snapshot_equals_a_training_on_that_many_samples_alone(trajectories, tmp_path):
    cfg = dict(data=str(trajectories), lr=3e-3, save_steps=1000, states_per_block=0, horizon=2, lora_rank=4)
    train(TrainConfig(out=str(tmp_path / "big"), snapshots=(3, 6), **cfg), **quiet)
    train(TrainConfig(out=str(tmp_path / "small"), snapshots=(3,), **cfg), **quiet)
    weights = {k: load_file(str(tmp_path / k / "adapter_model.safetensors"))
               for k in ("big/n3", "big/n6", "small/n3", "big")}
    for name, w in weights["small/n3"].items():
        assert weights["big/n3"][name].equal(w), name  # the same steps on the same samples in the same order
    assert any(not weights["big/n6"][k].equal(w) for k, w in weights["big/n3"].items())  # three more steps
    assert all(weights["big"][k].equal(w) for k, w in weights["big/n6"].items())  # the last snapshot is the run
    card = json.loads((tmp_path / "big" / "n3" / "cllm.json").read_text())
    assert card["recipe"]["samples"] == 3 and card["recipe"]["steps"] == 3 and card["recipe"]["snapshots"] == [3, 6]
    assert json.loads((tmp_path / "big" / "n6" / "cllm.json").read_text())["recipe"]["samples"] == 6


def test_a_scaling_run_extends_by_resuming_with_a_larger_snapshot(trajectories, tmp_path, monkeypatch):
    """Collect more, then rerun with one more snapshot size and --resume: the run continues from its last checkpoint
    and ends where a run asked for every size at once ends (the larger point costs only its new samples)."""
    cfg = dict(data=str(trajectories), lr=3e-3, save_steps=1, states_per_block=0, horizon=2, lora_rank=4)
    train(TrainConfig(out=str(tmp_path / "once"), snapshots=(3, 6), **cfg), **quiet)
    train(TrainConfig(out=str(tmp_path / "grown"), snapshots=(3,), **cfg), **quiet)
    small = load_file(str(tmp_path / "grown" / "n3" / "adapter_model.safetensors"))
    small_card = json.loads((tmp_path / "grown" / "cllm.json").read_text())["recipe"]
    assert "resumed_from" not in small_card
    packed = []  # the samples the resumed run trains on: only the three new ones
    pack_one = PackedSamples.__getitem__
    monkeypatch.setattr(PackedSamples, "__getitem__", lambda self, i: packed.append(i) or pack_one(self, i))
    train(TrainConfig(out=str(tmp_path / "grown"), snapshots=(3, 6), resume=True, **cfg), **quiet)
    assert len(packed) == 3
    card = json.loads((tmp_path / "grown" / "cllm.json").read_text())
    assert card["recipe"]["steps"] == 6 and card["recipe"]["samples"] == 6
    # the resumed run's clock continues from the time saved with the checkpoint it resumed from
    clock = json.loads((tmp_path / "grown" / "trainer" / "checkpoint-6" / "train_seconds.json").read_text())
    assert card["recipe"]["resumed_from"] == "checkpoint-3" and card["recipe"]["timed_from_start"] is True
    assert clock["step"] == 6 and card["recipe"]["train_seconds"] >= clock["seconds"] >= small_card["train_seconds"]
    for snap in ("n3", "n6"):
        once = load_file(str(tmp_path / "once" / snap / "adapter_model.safetensors"))
        grown = load_file(str(tmp_path / "grown" / snap / "adapter_model.safetensors"))
        for name, w in once.items():
            assert grown[name].equal(w), (snap, name)
    assert all(w.equal(small[k]) for k, w in load_file(str(tmp_path / "grown" / "n3" / "adapter_model.safetensors")).items())


def test_a_resume_from_a_checkpoint_without_its_clock_reports_no_training_cost(trajectories, tmp_path):
    from harness.cllm.study import describe

    cfg = dict(data=str(trajectories), lr=3e-3, save_steps=1, states_per_block=0, horizon=2, lora_rank=4)
    train(TrainConfig(out=str(tmp_path / "old"), snapshots=(3,), **cfg), **quiet)
    (tmp_path / "old" / "trainer" / "checkpoint-3" / "train_seconds.json").unlink()  # as a checkpoint from before it
    train(TrainConfig(out=str(tmp_path / "old"), snapshots=(3, 6), resume=True, **cfg), **quiet)
    recipe = json.loads((tmp_path / "old" / "n6" / "cllm.json").read_text())["recipe"]
    assert recipe["resumed_from"] == "checkpoint-3" and recipe["timed_from_start"] is False
    assert pd.isna(describe(str(tmp_path / "old" / "n6"), "tiny-random")["train_minutes"])
    assert describe(str(tmp_path / "old" / "n3"), "tiny-random")["train_minutes"] >= 0  # timed whole, before


def test_the_card_says_how_many_epochs_a_step_capped_run_made(trajectories, tmp_path):
    """--max-steps stops a cosine run short of its --epochs: the card and the study give the passes actually made."""
    from harness.cllm.study import describe

    cfg = dict(data=str(trajectories), lr=3e-3, save_steps=1000, states_per_block=0, horizon=2, lora_rank=4)
    train(TrainConfig(out=str(tmp_path / "short"), max_steps=4, **cfg), **quiet)
    card_path = tmp_path / "short" / "cllm.json"
    card = json.loads(card_path.read_text())
    assert card["recipe"]["epochs"] == 1.0 and card["recipe"]["epochs_trained"] == pytest.approx(4 / 6, abs=1e-3)
    assert describe(str(tmp_path / "short"), "tiny-random")["epochs"] == pytest.approx(4 / 6, abs=1e-3)
    del card["recipe"]["epochs_trained"]  # a card from before the field: worked out from its steps and samples
    card_path.write_text(json.dumps(card))
    assert describe(str(tmp_path / "short"), "tiny-random")["epochs"] == pytest.approx(4 / 6, abs=1e-3)


def test_samples_trains_on_the_first_n_of_a_grown_file_as_on_the_file_before_it_grew(trajectories, tmp_path):
    """A recipe with --samples N gives the same weights after a study appends questions to its trajectory file."""
    lines = trajectories.read_text().splitlines()
    first = []  # the first three samples' ids, in the order collected
    for line in lines[1:]:
        sid = json.loads(line)["sample_id"]
        if sid not in first:
            first.append(sid)
    small = tmp_path / "small.jsonl"  # the file as it was when it held three samples
    small.write_text("\n".join([lines[0]] + [x for x in lines[1:] if json.loads(x)["sample_id"] in first[:3]]) + "\n")
    cfg = dict(lr=3e-3, save_steps=1000, states_per_block=0, horizon=2, lora_rank=4, max_steps=3)
    train(TrainConfig(data=str(small), out=str(tmp_path / "before"), **cfg), **quiet)
    train(TrainConfig(data=str(trajectories), out=str(tmp_path / "after"), samples=3, **cfg), **quiet)
    train(TrainConfig(data=str(trajectories), out=str(tmp_path / "all"), **cfg), **quiet)
    w = {k: load_file(str(tmp_path / k / "adapter_model.safetensors")) for k in ("before", "after", "all")}
    assert all(w["after"][k].equal(v) for k, v in w["before"].items())
    assert any(not w["all"][k].equal(v) for k, v in w["before"].items())  # without --samples: another training
    assert json.loads((tmp_path / "after" / "cllm.json").read_text())["recipe"]["samples"] == 3
    with pytest.raises(HarnessError, match="holds 6 samples"):
        train(TrainConfig(data=str(trajectories), out=str(tmp_path / "x"), samples=7, **cfg), **quiet)


def test_snapshot_runs_refuse_what_would_break_the_equality(trajectories, tmp_path):
    with pytest.raises(HarnessError, match="one epoch"):
        train(TrainConfig(data=str(trajectories), out=str(tmp_path / "a"), snapshots=(2,), epochs=2), **quiet)
    with pytest.raises(HarnessError, match="multiple of --grad-accum"):
        train(TrainConfig(data=str(trajectories), out=str(tmp_path / "b"), snapshots=(3,), grad_accum=2), **quiet)
    with pytest.raises(HarnessError, match="holds 6|hold 6"):
        train(TrainConfig(data=str(trajectories), out=str(tmp_path / "c"), snapshots=(64,)), **quiet)


def test_study_measures_each_checkpoint_and_the_base_on_the_same_questions(trajectories, data_dir, tmp_path):
    ck = tmp_path / "ck"
    train(TrainConfig(data=str(trajectories), out=str(ck), snapshots=(2, 4), lr=3e-3, save_steps=1000,
                      states_per_block=0, horizon=2, lora_rank=4), **quiet)
    profile = tmp_path / "profile.csv"
    pd.DataFrame({"engine": ["compiled"] * 3, "width": [1, 4, 8], "break_even_tokens_per_step": [1.0, 1.2, 1.6]}) \
        .to_csv(profile, index=False)
    cfg = StudyConfig(checkpoints=(str(ck / "n2"), str(ck / "n4")), out_dir=str(tmp_path / "study"), base="tiny-random",
                      limit=3, max_new_tokens=12, data_dir=str(data_dir), profile=str(profile))
    table = study(cfg, **quiet)
    assert list(table["samples"]) == [0, 2, 4] and set(table["block_size"]) == {4}
    assert (table["questions"] == 3).all() and (table["tokens_per_step"] >= 1).all()
    assert table["d1"].between(0, 1).all() and (table["states"] > 0).all()
    assert table["break_even"].tolist() == pytest.approx([1.3] * 3)  # t(5)/t(1) between the widths 4 and 8
    assert table["expected_speedup"].tolist() == pytest.approx((table["tokens_per_step"] / 1.3).tolist(), abs=1e-3)
    for name in ("study.csv", "study.md", "study.png"):
        assert (tmp_path / "study" / name).stat().st_size > 0
    measured = sorted(p.name for p in (tmp_path / "study" / "measure").iterdir())
    assert len(measured) == 3
    said = []
    study(cfg, echo=said.append)  # everything measured already: the rows are reused, not decoded again
    assert any("3 of 3" in s for s in said)
    train(TrainConfig(data=str(trajectories), out=str(ck / "n2"), max_steps=2, lr=3e-3, save_steps=1000,
                      states_per_block=0, horizon=2, lora_rank=4, seed=1), **quiet)  # n2 retrained in its folder
    said = []
    study(cfg, echo=said.append)
    assert sum("of 3 decodes already measured" in s for s in said) == 2  # the base and n4; n2 is measured anew
    assert len(list((tmp_path / "study" / "measure").iterdir())) == 4  # the old weights' rows stay on record
    with pytest.raises(HarnessError, match="not a CLLM checkpoint"):
        study(StudyConfig(checkpoints=("tiny-random",), out_dir=str(tmp_path / "x"), base="other"), **quiet)


def test_study_plot_gives_each_checkpoint_off_the_line_its_own_legend_label():
    from harness.cllm.study import plot

    def row(checkpoint, samples, epochs, schedule, tps):
        return {"checkpoint": checkpoint, "block_size": 4, "samples": samples, "epochs": epochs, "schedule": schedule,
                "tokens_per_step": tps, "d1": tps / 4, "break_even": 1.3}
    table = pd.DataFrame([row("base", 0, 0.0, "", 1.1), row("ck/scaling/n128", 128, 1.0, "constant", 1.4),
                          row("ck/b4-cosine-1024", 1090, 0.939, "cosine", 1.95),  # same recipe columns as the next:
                          row("ck/b4-cosine-1024-ar20", 1090, 0.939, "cosine", 1.62),  # only the name tells them apart
                          row("a/n512", 512, 2.0, "cosine", 1.7), row("b/n512", 512, 2.0, "cosine", 1.8)])
    labels = plot(table).axes[0].get_legend_handles_labels()[1]
    assert len(labels) == len(set(labels))
    off_line = [x for x in labels if x.startswith("block 4: ")]
    assert off_line == ["block 4: b4-cosine-1024 (cosine, 0.939 epochs)", "block 4: b4-cosine-1024-ar20 (cosine, 0.939 epochs)",
                        "block 4: a/n512 (cosine, 2 epochs)", "block 4: b/n512 (cosine, 2 epochs)"]
