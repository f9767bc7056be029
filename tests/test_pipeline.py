"""End to end on the real embedded SmolLM2: a run, a killed run that resumes, determinism, bad input."""
import json
from pathlib import Path

import pytest
from conftest import TINY, cli, kill_when

from synth.__main__ import main


def manifest(d):
    return json.loads((Path(d) / "manifest.json").read_text())


def records(d):
    from synth.store import DatasetDir

    return DatasetDir(d).records()


@pytest.fixture(scope="module")
def full_run(tiny_run):
    return tiny_run


@pytest.mark.slow
def test_run_writes_pairs(full_run):
    m_ins, m_res = manifest(full_run / "instructions"), manifest(full_run / "responses")
    assert m_ins["status"] == m_res["status"] == "complete"
    assert m_ins["counts"]["sampled"] == 32
    assert m_ins["counts"]["kept"] + sum(m_ins["counts"]["dropped"].values()) == 32
    assert m_ins["template"]["pre_query_template"].endswith("<|im_start|>user\n")
    assert "\n" in m_ins["stop"]
    pairs = records(full_run / "responses")
    assert len(pairs) == m_res["counts"]["pairs"] >= 16
    for r in pairs:
        assert r["instruction"].strip() and r["response"].strip()
        assert "\n" not in r["instruction"]
        assert r["messages"] == [{"role": "user", "content": r["instruction"]},
                                 {"role": "assistant", "content": r["response"]}]
        assert r["gen_input_configs"]["input_generator"] == "embedded:smollm2-135m-instruct"
        assert r["gen_response_configs"]["temperature"] == 0.0
    assert len({r["id"] for r in pairs}) == len(pairs)
    # Any dataset directory opens with datasets' Parquet loader.
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(full_run / "responses" / "data"), split="train")
    assert ds.num_rows == len(pairs) and "messages" in ds.column_names
    # W&B offline runs, one per stage.
    assert len(list((full_run / "wandb").glob("offline-run-*"))) == 2


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_duplicates(full_run, tmp_path):
    """Kill the CLI mid-instructions, then mid-responses; restart; the result equals the uninterrupted run."""
    out = tmp_path / "killed"
    for shard in (out / "instructions" / "data" / "part-00001.parquet",
                  out / "responses" / "data" / "part-00001.parquet"):
        reached = kill_when("synth", cli(out, "--report_to", "none"), shard)
        assert reached, f"the run ended before {shard.name} appeared"
        stage_dir = shard.parent.parent
        assert manifest(stage_dir)["status"] == "running"  # a partial output is never marked complete
    assert main(cli(out, "--report_to", "none")) == 0
    for stage in ("instructions", "responses"):
        assert manifest(out / stage)["status"] == "complete"
        got, want = records(out / stage), records(full_run / stage)
        assert [r["id"] for r in got] == [r["id"] for r in want]  # nothing lost, nothing twice
        assert got == want  # same seed on CPU: the same records


@pytest.mark.slow
def test_complete_run_is_reused(full_run, capsys):
    before = (full_run / "responses" / "manifest.json").read_text()
    assert main(cli(full_run, "--report_to", "none")) == 0
    assert json.loads((full_run / "responses" / "manifest.json").read_text())["counts"] == json.loads(before)["counts"]


def _error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ")
    return err[-1]


def test_bad_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n  n: 3\n")
    msg = _error(capsys, ["instructions", "--config", str(bad), "--output_dir", str(tmp_path / "o")])
    assert "bad.yaml" in msg and "YAML" in msg
    assert not (tmp_path / "o").exists()


def test_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(Path(TINY).read_text() + "temprature: 0.7\n")
    msg = _error(capsys, ["instructions", "--config", str(cfg), "--output_dir", str(tmp_path / "o")])
    assert "temprature" in msg and "typo.yaml" in msg


@pytest.mark.parametrize("key,value", [("total_prompts", "0"), ("n", "-4"), ("response_batch_size", "0")])
def test_zero_or_negative_count(tmp_path, capsys, key, value):
    msg = _error(capsys, cli(tmp_path / "o", f"--{key}", value))
    assert key in msg and "positive" in msg
    assert not (tmp_path / "o").exists()


def test_missing_model(tmp_path, capsys):
    msg = _error(capsys, cli(tmp_path / "o", "--model", str(tmp_path / "no-such-model")))
    assert "no-such-model" in msg
    assert not (tmp_path / "o" / "instructions" / "manifest.json").exists()


def test_unknown_engine_and_embedded_name(tmp_path, capsys):
    assert "unknown engine" in _error(capsys, cli(tmp_path / "o", "--engine", "tgi"))
    assert "unknown embedded model" in _error(capsys, cli(tmp_path / "o", "--model", "embedded:gpt-5"))


def test_output_dir_of_another_config(tmp_path, capsys):
    out = tmp_path / "o"
    fast = ["--total_prompts", "4", "--n", "4", "--max_tokens", "8", "--report_to", "none"]
    assert main(cli(out, *fast, verb="instructions")) == 0
    msg = _error(capsys, cli(out, *fast, "--seed", "1", verb="instructions"))
    assert "another config" in msg and "seed" in msg
    assert manifest(out / "instructions")["config"]["seed"] == 0  # the first run is untouched


def test_responses_need_complete_instructions(tmp_path, capsys):
    msg = _error(capsys, cli(tmp_path / "o", verb="responses"))
    assert "not a complete dataset directory" in msg
