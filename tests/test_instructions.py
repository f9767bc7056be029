"""Sampling mixes (paper Table 7), the round plan, and the sanitizer."""
import pytest

from synth import sanitize
from synth.config import InstructionArgs
from synth.instructions import MIXES, allocate, mix_cells, plan


def test_air_3m_mix_matches_table_7():
    cells = mix_cells(InstructionArgs(total_prompts=3_000_000, mix="air-3m"))
    by = {(t, p): c for t, p, c in cells}
    for t in (1.0, 1.1, 1.2):
        for p in (1.0, 0.995, 0.99):
            assert by[(t, p)] == 300_000
    for p in (1.0, 0.995, 0.99):
        assert by[(1.25, p)] == 100_000
    assert sum(by.values()) == 3_000_000


def test_pro_1m_mix_matches_table_7():
    cells = mix_cells(InstructionArgs(total_prompts=1_000_000, mix="pro-1m"))
    assert cells == [(1.0, 1.0, 300_000), (1.1, 0.995, 300_000), (1.2, 0.995, 300_000), (1.25, 0.99, 100_000)]


@pytest.mark.parametrize("total", [1, 7, 999, 1001])
def test_allocate_is_exact(total):
    counts = allocate(total, [w for *_, w in MIXES["pro-1m"]])
    assert sum(counts) == total and all(c >= 0 for c in counts)


def test_plan_rounds_cover_total_once():
    rounds = plan(InstructionArgs(total_prompts=1000, n=200, mix="pro-1m"))
    assert sum(r.count for r in rounds) == 1000
    assert [r.index for r in rounds] == list(range(len(rounds)))
    assert all(0 < r.count <= 200 for r in rounds)


def test_unknown_mix_and_bad_counts():
    with pytest.raises(ValueError, match="mix must be one of single, air-3m, pro-1m; got 'air-4m'"):
        InstructionArgs(mix="air-4m")  # refused when the config is read, before a model loads
    for bad in (dict(total_prompts=0), dict(n=-1), dict(max_tokens=0)):
        with pytest.raises(ValueError, match="positive"):
            InstructionArgs(**bad)


@pytest.mark.parametrize("text,finish,reason", [
    ("", "stop", "empty"), ("   ", "stop", "empty"),
    ("Write a haiku about autumn", "length", "truncated"),
    ("Sure! Here is a poem about cats.", "stop", "response_like"),
    ("I'd be happy to help you with that.", "stop", "response_like"),
    ("What is 2+2?<|im_start|>assistant", "stop", "response_like"),
    ("How do I sort a list in Python?", "stop", None),
    ("Can you help me plan a trip to Kyoto?", "stop", None),
])
def test_check_reasons(text, finish, reason):
    assert sanitize.check(text, finish) == reason


@pytest.mark.parametrize("raw,clean", [
    ("Task: Write a poem about cats.\nHere is one", "Write a poem about cats."),
    ("Q1. What is 2+2? Answer: 4", "What is 2+2?"),
    ("What is X?\n## Step 1: think", "What is X?"),
    ("**Question:** How do I bake bread? I want tips", "How do I bake bread?"),
    ("Explain gravity in one paragraph.\nGravity is a force", "Explain gravity in one paragraph."),
    ("Solve x+1=2. Solution: x=1", "Solve x+1=2."),
])
def test_clean_like_reference(raw, clean):
    assert sanitize.clean(raw) == clean
