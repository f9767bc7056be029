"""Every sample its own random stream (issue 19): at the paper's shape (n larger than the engine's batch, several
rounds per shard, a Table 7 mix) no two samples share a stream on either engine. The old scheme (seed + round,
+ prompt index, + vLLM's child index; hf: + batch number) gave 54-68% exact duplicates at that shape.
The vllm engine's run of the same check is tests/test_vllm.py::test_paper_shape_streams_are_independent."""
from conftest import ROOT, assert_independent_streams

from core.engines import Sampling, sample_seed, stream_seed
from core.engines.base import per_prompt
from synth.config import InstructionArgs
from synth.instructions import plan, round_seed

AIR = str(ROOT / "recipes/configs/synth/air.yaml")
# The paper config at a scale this CPU runs: the model, lengths and counts change; n is above the hf batch (8 > 4)
# and a shard holds several rounds of a Table 7 mix (pro-1m: 3 rounds of 8 in each of three cells, 1 in the last).
SHAPE = ["--model", "embedded:smollm2-135m-instruct", "--dtype", "auto", "--total_prompts", "80", "--n", "8",
         "--mix", "pro-1m", "--rounds_per_shard", "4", "--max_tokens", "48", "--report_to", "none"]


def test_every_sample_of_the_air_3m_plan_has_its_own_seed():
    """The whole Air-3M plan (3M samples in 15,000 rounds of 200): 3M distinct per-sample seeds."""
    rounds = plan(InstructionArgs(total_prompts=3_000_000, n=200, mix="air-3m"))
    seeds = {sample_seed(round_seed(0, r), j) for r in rounds for j in range(r.count)}
    assert len(seeds) == 3_000_000


def test_one_sampling_for_many_prompts_seeds_each_prompt():
    s = Sampling(temperature=1.0, n=3, seed=7)
    per = per_prompt(s, 4)
    assert len({p.seed for p in per}) == 4 and per[0].seed == stream_seed(7, 0)
    assert per_prompt(s.replace(seed=None), 2) == [s.replace(seed=None)] * 2


def test_hf_rows_draw_their_own_streams(hf_engine):
    """A row's sample depends on its seed, not on its batch or its place in it: the same seed alone or after other
    rows (sampled and greedy, another temperature) gives the same text."""
    pq = "<|im_start|>user\n"
    alone = hf_engine.complete([pq], [Sampling(temperature=1.0, max_tokens=6, n=2, seed=11)])[0]
    mixed = hf_engine.complete([pq, pq, pq], [Sampling(temperature=1.2, max_tokens=6, n=3, seed=5),
                                                     Sampling(temperature=0.0, max_tokens=6),
                                                     Sampling(temperature=1.0, max_tokens=6, n=2, seed=11)])[2]
    assert [c.text for c in alone] == [c.text for c in mixed]


def test_paper_shape_streams_are_independent_on_hf(hf_engine, tmp_path, monkeypatch):
    """air.yaml's step 1 at the shape above on the hf engine, batches of 4 rows: the old scheme gave batch b of
    round r and batch b-1 of round r+1 one stream (33.8% duplicates at this shape)."""
    from core import store
    from synth.config import parse
    from synth.instructions import generate_instructions

    monkeypatch.setattr(hf_engine, "batch_size", 4)
    margs, iargs, *_, run = parse(["--config", AIR, "--engine", "hf", *SHAPE])
    generate_instructions(hf_engine, margs, iargs, run, tmp_path)
    ds = store.DatasetDir(tmp_path)
    assert len(ds.shards()) == 3  # 10 rounds, 4 to a shard
    c = assert_independent_streams(ds.records(), iargs.n)
    print(f"hf at the paper's shape: {c}")


def test_seeded_picks_draw_from_the_distribution_and_repeat_with_the_seed():
    """base.seeded_picks, how both local engines sample a seeded row: the frequencies of 20,000 draws match the
    probabilities (tokens of probability 0, as outside top_p, are never drawn), and a generator seeded alike draws
    alike."""
    import torch

    from core.engines.base import seeded_picks

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.15, 0.05, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(11)
    draws = torch.stack([seeded_picks(probs, [g, None]) for _ in range(20_000)])
    assert (draws[:, 1] == 5).all()  # the only token of positive probability
    freq = torch.bincount(draws[:, 0], minlength=6).float() / len(draws)
    assert freq[1] == freq[5] == 0
    assert torch.allclose(freq, probs[0], atol=0.015), freq
    again = torch.Generator().manual_seed(11)
    assert torch.equal(torch.stack([seeded_picks(probs[:1], [again]) for _ in range(200)]), draws[:200, :1])
