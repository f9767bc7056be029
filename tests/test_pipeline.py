"""End to end on the real embedded SmolLM2: a run, a killed run that resumes, determinism, bad input."""
import json
from pathlib import Path

import pytest
from conftest import TINY, cli, kill_when

from synth.__main__ import main


def manifest(d):
    return json.loads((Path(d) / "manifest.json").read_text())


def records(d):
    from core.store import DatasetDir

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
    # The run report of the resumed run shows the uninterrupted run's data.
    from report import gather

    def shown(run):
        data = gather(run)
        data.pop("generated")
        for key in ("name", "path", "wandb_runs"):  # where it is and its W&B runs (that run logged, this one not)
            data["run"].pop(key)
        for stage in data["stages"].values():
            stage.pop("seconds")
        return data

    assert shown(out) == shown(full_run)


@pytest.mark.slow
def test_complete_run_is_reused_without_loading_a_model(full_run, capsys, monkeypatch):
    import core.engines
    import core.engines.registry

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded for a finished stage")
    monkeypatch.setattr(core.engines, "get_engine", refuse)
    monkeypatch.setattr(core.engines.registry, "get_engine", refuse)
    shards = {p: p.stat().st_mtime_ns for p in full_run.glob("*/data/*")}
    before = manifest(full_run / "responses")
    assert main(cli(full_run, "--report_to", "none")) == 0
    assert manifest(full_run / "responses")["counts"] == before["counts"]
    assert {p: p.stat().st_mtime_ns for p in full_run.glob("*/data/*")} == shards  # nothing rewritten
    assert capsys.readouterr().out.count("already complete") == 2


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
    cfg.write_text(f"include: {TINY}\ntemprature: 0.7\n")
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
    assert "engine must be one of vllm, hf, openai" in _error(capsys, cli(tmp_path / "o", "--engine", "tgi"))
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


@pytest.mark.parametrize("flag,value,named", [
    ("--temperature", "-1", "temperature"), ("--top_p", "2", "top_p"), ("--mix", "foo", "mix"),
    ("--dtype", "foo", "dtype"), ("--n", "abc", "--n"), ("--response_temperature", "-0.5", "response_temperature"),
    ("--filter_expression", "instruct_reward >", "instruct_reward >"),
    ("--filter_expression", "instruct_rewrd > 0", "instruct_rewrd"), ("--filter_preset", "pro-filter-9", "pro-filter-9"),
])
def test_a_typo_is_one_line_before_anything_is_written(tmp_path, capsys, flag, value, named):
    """Checked before a model loads: no output directory, so nothing can refuse the corrected retry."""
    argv = cli(tmp_path / "o", "--stages", "instructions", "responses", "tag", "filter", flag, value)
    msg = _error(capsys, argv)
    assert named in msg and "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_command_line_values_are_blamed_on_the_command_line_and_yaml_keys_on_the_file(tmp_path, capsys):
    assert _error(capsys, cli(tmp_path / "o", "--top_p", "7")).startswith("error: command line: top_p")
    assert _error(capsys, cli(tmp_path / "o", "--n", "x")) == "error: command line --n: invalid int value: 'x'"
    cfg = tmp_path / "hot.yaml"
    cfg.write_text(f"include: {TINY}\ntemperature: -3.0\n")
    msg = _error(capsys, ["instructions", "--config", str(cfg), "--output_dir", str(tmp_path / "o")])
    assert msg.startswith(f"error: config {cfg}: temperature")


def test_output_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("not a folder")
    assert "is a file" in _error(capsys, cli(tmp_path / "f"))


@pytest.mark.slow
def test_resume_with_another_shard_layout_is_refused_and_a_corrupt_shard_is_redone(tmp_path, caplog):
    """rounds_per_shard decides which rounds shard k holds: a resume under another value is refused (it used
    to skip or double rounds and say complete). A truncated shard in a complete set is found and redone."""
    out = tmp_path / "o"
    fast = ["--total_prompts", "6", "--n", "2", "--max_tokens", "32", "--report_to", "none"]
    assert main(cli(out, *fast, "--rounds_per_shard", "1", verb="instructions")) == 0
    ins = out / "instructions"
    want = records(ins)
    from core.store import DatasetDir

    ds = DatasetDir(ins)
    assert ds.shards() == [0, 1, 2]  # one round per shard (a round that kept nothing leaves a .empty marker)
    # What a kill after shard 0 leaves on disk:
    for k in (1, 2):
        ds.shard_path(k).unlink(missing_ok=True)
        ds.empty_marker(k).unlink(missing_ok=True)
    m = manifest(ins)
    (ins / "manifest.json").write_text(json.dumps({**m, "status": "running"}))
    with pytest.raises(SystemExit):
        main(cli(out, *fast, "--rounds_per_shard", "3", verb="instructions"))
    assert manifest(ins)["status"] == "running"
    assert main(cli(out, *fast, "--rounds_per_shard", "1", verb="instructions")) == 0
    assert records(ins) == want
    shard = next(ds.shard_path(k) for k in ds.shards() if ds.shard_path(k).exists())
    shard.write_bytes(shard.read_bytes()[:100])
    assert main(cli(out, *fast, "--rounds_per_shard", "1", verb="instructions")) == 0
    assert str(shard) in caplog.text and manifest(ins)["status"] == "complete"
    assert records(ins) == want  # the same rounds, the same seeds: the same records


def test_an_unwritable_output_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("a file, so nothing can be created below it")
    msg = _error(capsys, cli(tmp_path / "f" / "run", "--stages", "instructions", "--report_to", "none"))
    assert str(tmp_path / "f") in msg and "choose another output_dir" in msg
