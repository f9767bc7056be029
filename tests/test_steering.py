"""Steering step 1 (synth/steering.py): prefill stubs, weighted system prompts, personas, topics and a target
language; each record's `steer`, drawn from the record's own keys, through resume, shard layouts, export and the
report's task-category distribution per steer."""
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from conftest import TINY, TINY_MODEL

from core import store
from core.config import ModelArgs
from core.engines.base import Completion, EngineInfo, per_prompt
from synth import control, stats
from synth.config import InstructionArgs, RunArgs
from synth.instructions import generate_instructions, instructions_config, plan, round_seed
from synth.steering import KEYS, Option, Prompter, Steering, options, system_text

IM_USER = "<|im_end|>\n<|im_start|>user\n"  # SmolLM2's end of the system turn and start of the user's
# Stubs whose continuations are short (a place name, a language), so that 20 tokens finish most of them.
STUBS = ["What is the capital of", "How do you say thank you in"]


class Recording:
    """A real engine that keeps every prompt it is sent."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def complete(self, prompts, sampling):
        self.prompts += list(prompts)
        return self.engine.complete(prompts, sampling)


class Scripted:
    """The model's tokenizer with a fixed continuation: for what step 1 sends and records under a shard layout, not
    for what a model writes (the real engine does that below)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.info, self.calls = tokenizer, EngineInfo("scripted", TINY_MODEL), []

    def complete(self, prompts, sampling):
        per = per_prompt(sampling, len(prompts))
        self.calls.append(list(prompts))
        return [[Completion(" the sky blue at noon?", 6, "stop") for _ in range(s.n)] for s in per]


def margs():
    return ModelArgs(model=TINY_MODEL, engine="hf")


# -- drawing, without generating ----------------------------------------------------------------------------------
def test_weighted_draws_are_per_record_and_follow_the_weights():
    s = Steering(system=(Option("You are a tutor.", 3.0), Option("You are a pirate.", 1.0)), drawn=True)
    draws = [s.draw(seed)["system"] for seed in range(20_000)]
    share = Counter(draws)["You are a tutor."] / len(draws)
    assert abs(share - 0.75) < 0.015, share  # 3:1, within ~4.5 sigma of 20K draws
    assert [s.draw(seed) for seed in range(50)] == [s.draw(seed) for seed in range(50)]  # a redraw: the same steers
    # The keys of a record's draw are its round's seed and its index, as in sample_shard: the same on any layout.
    rnd = plan(InstructionArgs(total_prompts=600, n=200))[2]
    assert round_seed(0, rnd) == round_seed(0, plan(InstructionArgs(total_prompts=800, n=200, rounds_per_shard=1))[2])


def test_options_from_data_files_and_inline_entries():
    code = options("synth/data/prefills.yaml:code", "prefill")
    assert len(code) >= 8 and all(o.weight == 1.0 for o in code) and "Write a Python function that" in {
        o.text for o in code}
    every = options(["prefills.yaml"], "prefill")  # every group, found in synth/data/
    assert set(code) < set(every) and len(every) >= 24
    assert len(options("synth/data/personas.yaml", "personas")) >= 24
    assert len(options("synth/data/topics.yaml", "topics")) >= 24
    weighted = options("synth/data/system_prompts.yaml", "system_prompts")
    assert sum(o.weight for o in weighted) > len(weighted)  # the file weighs its entries
    mixed = options(["Write a haiku about", {"text": "Prove that", "weight": 2}], "prefill")
    assert mixed == (Option("Write a haiku about"), Option("Prove that", 2.0))
    assert options("Summarize the notes in todo.txt", "prefill") == (Option("Summarize the notes in todo.txt"),)


@pytest.mark.parametrize("bad,match", [
    (dict(prefill=["missing.yaml"]), "prefill: no such file missing.yaml"),
    (dict(prefill=["synth/data/prefills.yaml:poetry"]), "no group 'poetry'; its groups: code, math, writing"),
    (dict(system_prompts=[{"text": "Be brief.", "weight": 0}]), "weight 0; give a positive number"),
    (dict(personas=[{"name": "x"}]), "neither a text nor"),
    (dict(system_prompts=["Be brief."], control="math"), "set one of them"),
    (dict(language="German", control="language:French"), "both name the user's language"),
])
def test_bad_steering_is_refused_when_the_config_is_read(bad, match):
    with pytest.raises(ValueError, match=match):
        InstructionArgs(**bad)


def test_the_resume_key_of_a_plain_run_is_unchanged_and_a_steered_one_holds_its_entries():
    plain = instructions_config(margs(), InstructionArgs())
    assert not set(KEYS) & set(plain) and "steering" not in plain
    steered = instructions_config(margs(), InstructionArgs(personas=["synth/data/personas.yaml"]))
    assert steered["personas"] == ["synth/data/personas.yaml"]
    assert len(steered["steering"]["persona"]) >= 24  # the entries read, not the file's name


# -- rendering into the pre-query template -------------------------------------------------------------------------
def test_persona_topic_and_language_go_into_the_system_turn(smol_tokenizer):
    from synth.instructions import resolve_template

    tok = smol_tokenizer
    plain = resolve_template(Scripted(tok), margs(), InstructionArgs())[0]
    p = Prompter(Steering(drawn=True), plain.pre_query_template, tok.chat_template, tok.bos_token, tok.eos_token)
    steer = {"prefill": "Write a Python function that", "persona": "a retired nurse", "topic": "gardening",
             "language": "French"}
    pre_query, prompt = p.prompt(steer)
    assert pre_query.startswith("<|im_start|>system\nYou are a helpful AI assistant. You are talking with a retired "
                                "nurse. The conversation is about gardening. The user speaks French")
    assert pre_query.endswith(IM_USER) and prompt == pre_query + "Write a Python function that"
    # A system prompt drawn from the list leads the turn; the persona follows it.
    assert system_text({"system": "You are a tutor.", "persona": "a child"}) == \
        "You are a tutor. You are talking with a child."
    # `language` alone is section 5's language control, to the character.
    control_fr = resolve_template(Scripted(tok), margs(), InstructionArgs(control="language:French"))[0]
    assert p.pre_query({"language": "French"}) == control_fr.pre_query_template
    # A prefill alone keeps the plain template (SmolLM2's own default system turn), the stub after it.
    assert p.prompt({"prefill": "Prove that"}) == (plain.pre_query_template, plain.pre_query_template + "Prove that")
    with pytest.raises(ValueError, match="needs the model's chat template"):
        Prompter(Steering(persona=(Option("a child"),), drawn=True), "User: ")


# -- records: what was sent, under any shard layout and for control runs --------------------------------------------
def test_each_record_keeps_its_steer_under_any_shard_layout(smol_tokenizer, tmp_path):
    kw = dict(total_prompts=12, n=4, max_tokens=16, mix="single", prefill=STUBS, personas=["synth/data/personas.yaml"],
              system_prompts=[{"text": "You are a tutor.", "weight": 3}, "You are a pirate."], topics=["cooking"])
    out = {}
    for per_shard in (1, 2):
        engine = Scripted(smol_tokenizer)
        generate_instructions(engine, margs(), InstructionArgs(rounds_per_shard=per_shard, **kw), RunArgs(),
                              tmp_path / str(per_shard))
        recs = store.DatasetDir(tmp_path / str(per_shard)).records()
        assert len(recs) == 12 and sum(len(c) for c in engine.calls) == 12  # a prompt per record
        out[per_shard] = {r["id"]: (r["steer"], r["pre_query_template"], r["gen_input_configs"]["seed"]) for r in recs}
        for r, prompt in zip(recs, [p for c in engine.calls for p in c]):
            assert prompt == r["pre_query_template"] + r["steer"]["prefill"]
            assert r["instruction"] == r["steer"]["prefill"] + " the sky blue at noon?"
            assert f"You are talking with {r['steer']['persona']}." in r["pre_query_template"]
            assert r["pre_query_template"].startswith(f"<|im_start|>system\n{r['steer']['system']}")
            assert set(r["steer"]) == {"prefill", "system", "persona", "topic"}  # the kinds this run steers
    assert out[1] == out[2]
    assert len({s["persona"] for s, *_ in out[1].values()}) > 1  # drawn per record, not per round
    m = store.DatasetDir(tmp_path / "1").manifest()
    assert m["counts"]["by_steer"]["topic: cooking"] == {"sampled": 12, "kept": 12}


def test_a_control_run_records_its_system_turn_and_a_plain_run_no_steer(smol_tokenizer, tmp_path):
    for name, kw, steer in (("math", dict(control="math"), {"system": control.CONTROL_PROMPTS["math"]}),
                            ("fr", dict(control="language:French"), {"language": "French"}),
                            ("plain", {}, None)):
        engine = Scripted(smol_tokenizer)
        generate_instructions(engine, margs(), InstructionArgs(total_prompts=4, n=2, max_tokens=8, **kw), RunArgs(),
                              tmp_path / name)
        recs = store.DatasetDir(tmp_path / name).records()
        assert sum(len(c) for c in engine.calls) == 2  # one prompt a round, as before steering
        assert [r.get("steer") for r in recs] == [steer] * 4


# -- real generation ----------------------------------------------------------------------------------------------
def test_prefilled_generation_and_resume_draw_the_same_steers(hf_engine, tmp_path):
    """The embedded model continues each stub; a shard written again on resume gets the same steers and text."""
    engine = Recording(hf_engine)
    iargs = InstructionArgs(total_prompts=6, n=3, max_tokens=20, mix="single", rounds_per_shard=1, prefill=STUBS,
                            system_prompts=[{"text": "You are a geography teacher.", "weight": 2},
                                            "You are a language tutor."])
    generate_instructions(engine, margs(), iargs, RunArgs(), tmp_path)
    assert len(engine.prompts) == 6
    assert all(p.endswith(tuple(IM_USER + s for s in STUBS)) for p in engine.prompts)
    ds = store.DatasetDir(tmp_path)
    recs = ds.records()
    assert recs, "no instruction kept: the stubs should finish within 20 tokens"
    for r in recs:
        stub = r["steer"]["prefill"]
        assert r["instruction"].startswith(stub) and len(r["instruction"]) > len(stub)
        assert r["pre_query_template"] + stub in engine.prompts
        assert r["pre_query_template"].startswith(f"<|im_start|>system\n{r['steer']['system']}<|im_end|>")
    # Resume: shard 1 lost; the run again writes it alone, with the same steers and the same text (hf: same seed).
    ds.shard_path(1).unlink()
    engine.prompts.clear()
    generate_instructions(engine, margs(), iargs, RunArgs(), tmp_path)
    assert len(engine.prompts) == 3  # round 1 only
    assert store.DatasetDir(tmp_path).records() == recs


@pytest.mark.slow
def test_steer_flows_to_export_and_the_report(tmp_path):
    """A steered tiny run through responses, the task-category judge and export: the `steer` column survives every
    stage, and the tag manifest, the plots and the report give the task categories per steer."""
    from report.page import gather, write_report
    from synth.__main__ import main

    out = tmp_path / "run"
    argv = ["run", "--config", TINY, "--output_dir", str(out), "--stages", "instructions", "responses", "tag",
            "export", "--mix", "single", "--total_prompts", "6", "--n", "3", "--max_tokens", "20",
            "--response_max_tokens", "16", "--hf_batch_size", "8", "--taggers", "task_category",
            "--tag_batch_size", "8", "--report_to", "none", "--prefill", *STUBS,
            "--personas", "synth/data/personas.yaml"]
    assert main(argv) == 0
    tagged = store.DatasetDir(out / "tagged").records()
    assert tagged and all(set(r["steer"]) == {"prefill", "persona"} for r in tagged)
    exported = pq.read_table(out / "export" / "data").to_pylist()
    assert [r["steer"] for r in exported] == [r["steer"] for r in tagged]
    counts = store.DatasetDir(out / "tagged").manifest()["counts"]["task_category_by_steer"]
    cats = Counter(r["task_category"] or stats.UNTAGGED for r in tagged)
    by_stub = Counter(r["steer"]["prefill"] for r in tagged)
    assert {v: sum(c.values()) for v, c in counts["prefill"].items()} == dict(by_stub)
    assert sum((Counter(c) for c in counts["prefill"].values()), Counter()) == cats
    assert (out / "tagged" / "plots" / "task_category_by_steer.png").stat().st_size > 5_000
    data = gather(out, sample=50, map_sample=0)
    table = data["distributions"]["by_steer"]["prefill"]
    assert sorted(table["values"]) == sorted(by_stub) and sum(table["rows"]) == len(tagged)
    assert sum(map(sum, table["counts"])) == len(tagged)
    assert any(k.startswith("steer.persona") for s in data["samples"] for k in s["tags"])
    write_report(out, sample=50, map_sample=0)
    html = (out / "report" / "index.html").read_text()
    assert 'id="steer-prefill"' in html and 'id="steer-persona"' in html
    assert json.loads((out / "report" / "data.json").read_text())["distributions"]["by_steer"] == \
        data["distributions"]["by_steer"]


def test_task_category_distribution_per_steer(tmp_path):
    """stats.Profile counts (steer value, task category) pairs a table at a time; the plot and the W&B table use
    them."""
    import wandb

    rows = [{"id": i, "instruction": "q", "response": "a",
             "task_category": ["Coding & Debugging", "Math", None][i % 3],
             "steer": {"prefill": STUBS[i % 2], "language": "French"}} for i in range(30)]
    rows.append({"id": 30, "instruction": "q", "response": "a", "task_category": "Math"})  # an unsteered row
    by = stats.Profile.of(rows).by_steer()
    assert list(by) == ["prefill", "language"]
    assert by["prefill"]["categories"] == ["Coding & Debugging", "Math", stats.UNTAGGED]
    assert by["prefill"]["values"] == [*sorted(STUBS), None] and by["prefill"]["rows"] == [15, 15, 1]  # ties by text
    assert by["prefill"]["counts"] == [[5, 5, 5], [5, 5, 5], [0, 1, 0]]
    assert by["language"]["counts"][0] == [10, 10, 10]
    png = stats.plot_task_category_by_steer(stats.Profile.of(rows), tmp_path / "by_steer.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = stats.wandb_tables(rows)["tags/task_category_by_steer"]
    assert isinstance(table, wandb.Table) and ["prefill", STUBS[0], "Math", 5] in table.data
    assert sum(n for kind, _, _, n in table.data if kind == "prefill") == 31
