"""Preference data and DPO, for real on the embedded model: `python -m synth preferences` on the session's tiny run
(k=5 samples at T=0.8, the log-prob stand-in scores them), a killed run resumed, real DPOTrainer steps that move
the policy towards the chosen answers, the model the engines load, the paper table's +DPO row, and bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY, kill_when

pytestmark = pytest.mark.slow

# 8 instructions in 2 shards of 4, 5 samples each of at most 32 tokens: 40 answers per run.
PREF = ["--pref_size", "8", "--pref_k", "5", "--pref_max_tokens", "32", "--pref_batch_size", "4", "--hf_batch_size", "20"]
DPO_TINY = str(ROOT / "recipes/configs/dpo/tiny.yaml")


def synth(*argv) -> subprocess.CompletedProcess:
    """`python -m synth ...` in a process of its own (as the resumed run is), so both use the same torch threads."""
    return subprocess.run([sys.executable, "-m", "synth", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def preference_argv(root: Path, *extra) -> list[str]:
    return ["preferences", "--config", TINY, "--output_dir", str(root), *PREF, *extra]


def make_tagged(tiny_run: Path, root: Path) -> Path:
    """root/tagged: the session run's real instructions and answers with task categories cycled over four labels
    (the judge tagger is tested on its own; here the categories only steer the balanced pick)."""
    from core import store
    from core.schema import TASK_CATEGORIES

    src, out = store.DatasetDir(tiny_run / "responses"), store.DatasetDir(root / "tagged")
    records = [{**r, "task_category": TASK_CATEGORIES[i % 4]} for i, r in enumerate(src.records())]
    out.begin("tag", {"input_id": src.identity(), "categories": "cycled"}, input=str(src.path))
    out.write_shard(0, records)
    out.finish({"records": len(records)})
    return root


@pytest.fixture(scope="module")
def tagged(tiny_run, tmp_path_factory) -> Path:
    return make_tagged(tiny_run, tmp_path_factory.mktemp("tagged"))


@pytest.fixture(scope="module")
def preference_run(tagged, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prefs")
    shutil.copytree(tagged / "tagged", root / "tagged")
    proc = synth(*preference_argv(root, "--report_to", "wandb"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[preference_pairs]" in proc.stdout
    return root


def test_preference_records(preference_run):
    import datasets

    from core import store

    scored = store.DatasetDir(preference_run / "preferences/scored").records()
    assert len(scored) == 8
    counts = store.DatasetDir(preference_run / "preferences/scored").manifest()["counts"]
    assert counts["ok"] + counts["tie"] + counts["unscored"] == 8 and counts["ok"] > 0
    for r in scored:
        assert len(r["responses"]) == 5 and len(r["scores"]) == 5
        if r["status"] == "ok":
            valid = [s for s in r["scores"] if s is not None]
            assert r["score_chosen"] == max(valid) > r["score_rejected"] == min(valid)
            assert r["chosen"] == r["responses"][r["chosen_index"]] != r["rejected"]
    # Balanced pick: the four cycled categories get 2 instructions each.
    picked = store.DatasetDir(preference_run / "preferences/prompts").records()
    assert sorted(__import__("collections").Counter(r["task_category"] for r in picked).values()) == [2, 2, 2, 2]
    # TRL's conversational preference format, the usable pairs only.
    export = preference_run / "preferences/export"
    ds = datasets.load_dataset("parquet", data_dir=str(export / "data"), split="train")
    assert len(ds) == counts["ok"]
    row = ds[0]
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
    assert row["score_chosen"] > row["score_rejected"]
    card = (export / "README.md").read_text()
    assert "mean log-prob" in card and "Stand-ins" in card and f"| ok (kept) | {counts['ok']} |" in card
    assert (export / "margins.png").read_bytes()[:4] == b"\x89PNG"
    # W&B: the stage's score histograms and its plot, in the offline run of the preference_pairs job.
    run = next(r for r in preference_run.glob("wandb/offline-run-*") if (r / "files/media/images/preference_pairs").is_dir())
    assert wandb_keys(run) >= {"preference_pairs/score_chosen", "preference_pairs/score_rejected",
                               "preference_pairs/margin"}


def wandb_keys(run: Path) -> set[str]:
    """Which of the metric names we look for an offline W&B run's records hold. wandb-core writes no summary file
    offline and its record reader is not Python, so this reads the names in the run's own .wandb file."""
    data = next(run.glob("run-*.wandb")).read_bytes()
    names = ("preference_pairs/score_chosen", "preference_pairs/score_rejected", "preference_pairs/margin",
             "train/rewards/margins", "train/rewards/accuracies", "train/loss")
    return {n for n in names if n.encode() in data}


def test_killed_preference_stage_resumes_exactly(preference_run, tagged, tmp_path):
    from core import store

    root = tmp_path / "run"
    shutil.copytree(tagged / "tagged", root / "tagged")
    first = root / "preferences/samples/data/part-00000.parquet"
    assert kill_when("synth", preference_argv(root, "--report_to", "none"), first), kill_when.stderr
    assert not store.DatasetDir(root / "preferences/samples").complete  # a partial output is never complete
    proc = synth(*preference_argv(root, "--report_to", "none"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for part in ("samples", "scored", "export"):
        mine = store.DatasetDir(root / "preferences" / part).records()
        ref = store.DatasetDir(preference_run / "preferences" / part).records()
        assert [r["id"] for r in mine] == [r["id"] for r in ref], part  # nothing lost, nothing twice
        assert mine == ref, part


def policy_margin(model_dir, pairs) -> float:
    """Mean over `pairs` of log p(chosen | prompt) - log p(rejected | prompt) under the model in `model_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.dpo import prompt_ids

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def logp(prompt, completion) -> float:
        head = prompt_ids(tok, prompt)
        full = prompt_ids(tok, prompt + completion, add_generation_prompt=False)
        assert full[:len(head)] == head
        ids = torch.tensor([full])
        with torch.inference_mode():
            lp = model(ids).logits.float().log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0]
        return lp[len(head) - 1:].sum().item()

    return sum(logp(p["prompt"], p["chosen"]) - logp(p["prompt"], p["rejected"]) for p in pairs) / len(pairs)


def test_dpo_steps_move_the_policy(preference_run, trained_sft, tmp_path):
    import datasets

    from core.engines import Sampling, get_engine
    from eval.run import detect_dataset
    from train.dpo import main

    export = preference_run / "preferences/export"
    out = tmp_path / "dpo"
    argv = ["--config", DPO_TINY, "--model_name_or_path", str(trained_sft), "--dataset", str(export),
            "--output_dir", str(out), "--max_steps", "4", "--warmup_steps", "0", "--learning_rate", "5e-4",
            "--report_to", "wandb", "--save_strategy", "no"]
    assert main(argv) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["start_model"] == str(trained_sft / "merged")
    pairs = datasets.load_dataset("parquet", data_dir=str(export / "data"), split="train").to_list()
    before, after = policy_margin(trained_sft / "merged", pairs), policy_margin(out / "merged", pairs)
    assert after > before, (before, after)
    # TRL's DPO metrics reach W&B.
    assert wandb_keys(Path(summary["wandb_run_dir"])) >= {"train/rewards/margins", "train/rewards/accuracies"}
    # The engines load what DPO wrote, and it ends its turn where SFT taught it to.
    engine = get_engine("hf", model=str(out / "merged"), batch_size=2)
    try:
        (c,), = engine.chat([[{"role": "user", "content": "Name a colour."}]], Sampling(temperature=0, max_tokens=48))
        assert c.text.strip()
    finally:
        engine.close()
    assert detect_dataset(str(out)) == "magpie-air-dpo"  # eval puts it on the paper's +DPO row


def test_table_shows_the_dpo_rows(tmp_path):
    from eval.table import build, markdown

    results = [{"model_name": "magpie_air-dpo", "dataset": "magpie-air-dpo", "benchmarks": {
                "alpaca_eval": {"length_controlled_winrate": 40.0, "win_rate": 41.0}}},
               {"model_name": "magpie_pro-dpo", "row": "magpie-pro-dpo", "benchmarks": {}}]
    lines = build(results, only_measured=True)
    assert [ln["id"] for ln in lines] == ["magpie-air-dpo", "magpie-pro-dpo"]
    assert lines[0]["paper_lc"] == 45.48 and lines[0]["delta_lc"] == pytest.approx(40.0 - 45.48)
    text = markdown(lines)
    assert "+ DPO (Magpie-Air-DPO)" in text and "+ DPO (Magpie-Pro-DPO)" in text


# -- bad input: one line naming it, exit 2 -------------------------------------------------------------
def test_no_usable_pairs(tagged, tmp_path):
    """Greedy sampling gives five equal answers: every instruction is a tie, none is fatal on its own, and a set
    with no usable pair stops the stage with a line that says what was dropped."""
    from core import store

    root = tmp_path / "run"
    shutil.copytree(tagged / "tagged", root / "tagged")
    proc = synth(*preference_argv(root, "--pref_temperature", "0", "--pref_size", "4", "--report_to", "none"))
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "no usable preference pair" in line and "4 ties" in line
    assert store.DatasetDir(root / "preferences/scored").manifest()["counts"]["tie"] == 4


def test_dpo_refuses_a_set_without_usable_pairs(trained_sft, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from train.dpo import main

    same = [{"role": "assistant", "content": "The same answer."}]
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": same, "rejected": same}
            for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ties.parquet")
    err = _main_error(main, ["--config", DPO_TINY, "--model_name_or_path", str(trained_sft), "--dataset",
                             str(tmp_path / "ties.parquet"), "--output_dir", str(tmp_path / "out"), "--report_to", "none"])
    assert "ties.parquet has no usable preference pairs (dropped: tie 3)" in err


def test_reward_model_must_be_a_sequence_classifier(tagged, tmp_path):
    from core import models

    causal_lm = models.resolve("embedded:smollm2-135m-instruct")  # a checkpoint with a language-model head
    root = tmp_path / "run"
    shutil.copytree(tagged / "tagged", root / "tagged")
    proc = synth(*preference_argv(root, "--pref_reward_model", causal_lm, "--report_to", "none"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: pref_reward_model {causal_lm} is not a sequence classifier (its config names LlamaForCausalLM); give "
        "a reward model (paper: sfairXC/FsfairX-LLaMA3-RM-v0.1, or ArmoRM-Llama3-8B-v0.1) or "
        "embedded:smollm2-135m-instruct for the log-prob stand-in"]
    assert not (root / "preferences").exists()  # refused before anything was written


def test_dpo_start_model_missing(tmp_path):
    from train.dpo import main

    err = _main_error(main, ["--config", DPO_TINY, "--model_name_or_path", str(tmp_path / "runs/x/sft"),
                             "--output_dir", str(tmp_path / "out"), "--report_to", "none"])
    assert err.startswith(f"error: DPO start model {tmp_path / 'runs/x/sft'} does not exist")


def _main_error(main, argv) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert main(argv) == 2
    lines = [ln for ln in buf.getvalue().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, buf.getvalue()
    return lines[0]
