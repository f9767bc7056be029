"""Arena-Hard v0.1 scoring (eval/arena.py): battles, Bradley-Terry fit, win rate and bootstrap interval."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from eval.arena import (
    BASELINE,
    _quantile,
    arena_hard_score,
    battles_from_judgments,
    bradley_terry,
    format_score,
    win_rate_vs,
)

# The model's outcome written as the judge's label in each game: game 1 shows the baseline as A,
# game 2 shows it as B (Arena-Hard's gen_judgment swaps the answers for the second game).
LABEL = {("strong_win", 1): "B>>A", ("win", 1): "B>A", ("tie", 1): "A=B", ("loss", 1): "A>B",
         ("strong_loss", 1): "A>>B",
         ("strong_win", 2): "A>>B", ("win", 2): "A>B", ("tie", 2): "A=B", ("loss", 2): "B>A",
         ("strong_loss", 2): "B>>A"}


def judgments(model="m", baseline=BASELINE, **counts):
    """Judgment rows with the given number of each outcome (strong_win, win, tie, loss, strong_loss,
    unparsed), spread over both games: row i is question i // 2, game 1 + i % 2."""
    outcomes = [o for o in ("strong_win", "win", "tie", "loss", "strong_loss", "unparsed") for _ in
                range(counts.pop(o, 0))]
    assert not counts, f"unknown outcome(s) {counts}"
    rows = []
    for i, outcome in enumerate(outcomes):
        game = 1 + i % 2
        rows.append({"question_id": f"q{i // 2}", "model": model, "baseline": baseline, "game": game,
                     "verdict": None if outcome == "unparsed" else LABEL[outcome, game]})
    return rows


def mm_bradley_terry(battles, anchor, iters=100_000, tol=1e-14):
    """Hunter's (2004) MM algorithm for Bradley-Terry with a tie as half a win each way, on the Elo scale."""
    models = sorted(set(battles["model_a"]) | set(battles["model_b"]))
    k = {m: i for i, m in enumerate(models)}
    n = np.zeros((len(models), len(models)))
    wins = np.zeros(len(models))
    for a, b, w in zip(battles["model_a"], battles["model_b"], battles["winner"]):
        n[k[a], k[b]] += 1
        n[k[b], k[a]] += 1
        s = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[w]
        wins[k[a]] += s
        wins[k[b]] += 1 - s
    gamma = np.ones(len(models))
    for _ in range(iters):
        new = wins / (n / (gamma[:, None] + gamma[None, :])).sum(axis=1)
        new /= new[k[anchor]]
        if np.max(np.abs(new - gamma)) < tol:
            break
        gamma = new
    return pd.Series(1000 + 400 * np.log10(gamma), index=models)


def battle_rows(a, b, a_wins, b_wins, ties):
    return ([{"model_a": a, "model_b": b, "winner": "model_a"}] * a_wins
            + [{"model_a": a, "model_b": b, "winner": "model_b"}] * b_wins
            + [{"model_a": a, "model_b": b, "winner": "tie"}] * ties)


# ------------------------------------------------------------------------------------------------
# Bradley-Terry fit


def test_two_players_reproduce_the_empirical_win_rate():
    # 30 weak wins, 50 weak losses, 20 ties: win rate (30 + 20 / 2) / 100 = 0.4 exactly.
    battles = battles_from_judgments(judgments(win=30, loss=50, tie=20))
    assert len(battles) == 100
    ratings = bradley_terry(battles)
    assert ratings[BASELINE] == 1000
    assert ratings["m"] == pytest.approx(1000 + 400 * math.log10(0.4 / 0.6), abs=1e-3)  # 929.56
    assert win_rate_vs(ratings)["m"] == pytest.approx(0.4, abs=1e-4)
    assert win_rate_vs(ratings)[BASELINE] == 0.5
    assert arena_hard_score(judgments(win=30, loss=50, tie=20)).loc["m", "score"] == pytest.approx(40.0, abs=1e-2)


def test_three_players_match_an_independent_mm_solver():
    # Every pair plays, in both orientations for one pair, so the comparison graph is strongly connected.
    rows = (battle_rows(BASELINE, "x", 20, 12, 5) + battle_rows("y", BASELINE, 25, 10, 3)
            + battle_rows("x", "y", 7, 15, 4) + battle_rows("y", "x", 3, 9, 2))
    battles = pd.DataFrame(rows)
    got = bradley_terry(battles)
    want = mm_bradley_terry(battles, BASELINE)
    assert list(got.index) == ["y", BASELINE, "x"]  # highest first
    for model in want.index:
        assert got[model] == pytest.approx(want[model], abs=1e-3), model
    # Not a two-player answer in disguise: x's rating is not its raw rate against the baseline alone.
    raw = (12 + 2.5) / 37
    assert abs(win_rate_vs(got)["x"] - raw) > 0.01
    # Any player can be the anchor; only the offset changes.
    shifted = bradley_terry(battles, anchor="x")
    assert shifted["x"] == 1000
    assert (shifted - got[shifted.index]).std() == pytest.approx(0, abs=1e-3)


def test_several_models_against_one_baseline_each_get_their_own_rate():
    # Arena-Hard's leaderboard fits all models at once; each only meets the baseline, so each score is
    # its own (weighted) win rate: m1 (3*4 + 6 + 10/2) / (12 + 6 + 10 + 7) = 23/35, m2 (2 + 1) / 10 = 0.3.
    rows = judgments("m1", strong_win=4, win=6, tie=10, loss=7) + judgments("m2", win=2, tie=2, loss=6)
    table = arena_hard_score(rows, num_rounds=20)
    assert list(table["model"]) == ["m1", "m2"]
    assert table.loc["m1", "score"] == pytest.approx(100 * 23 / 35, abs=1e-2)
    assert table.loc["m2", "score"] == pytest.approx(30.0, abs=1e-2)
    assert table.loc["m1", "n_battles"] == 12 + 6 + 10 + 7
    assert BASELINE not in table.index


# ------------------------------------------------------------------------------------------------
# judgments -> battles


@pytest.mark.parametrize("game,label,winner,count", [
    (1, "A>>B", "model_a", 3), (1, "A>B", "model_a", 1), (1, "A=B", "tie", 1), (1, "B>A", "model_b", 1),
    (1, "B>>A", "model_b", 3),
    (2, "A>>B", "model_b", 3), (2, "A>B", "model_b", 1), (2, "A=B", "tie", 1), (2, "B>A", "model_a", 1),
    (2, "B>>A", "model_a", 3),
])
def test_each_label_in_each_game_gives_its_battles(game, label, winner, count):
    row = {"question_id": 7, "model": "m", "baseline": BASELINE, "game": game, "verdict": label}
    battles = battles_from_judgments([row])
    # model_a is always the baseline, model_b the model: only the winner is read through the swap.
    assert list(battles["model_a"]) == [BASELINE] * count
    assert list(battles["model_b"]) == ["m"] * count
    assert list(battles["winner"]) == [winner] * count


def test_game_orientation_both_wins_for_the_model():
    rows = [{"question_id": 1, "model": "m", "baseline": BASELINE, "game": 1, "verdict": "B>A"},
            {"question_id": 1, "model": "m", "baseline": BASELINE, "game": 2, "verdict": "A>B"},
            {"question_id": 2, "model": "m", "baseline": BASELINE, "game": 1, "verdict": "A>B"},
            {"question_id": 2, "model": "m", "baseline": BASELINE, "game": 2, "verdict": "B>A"}]
    battles = battles_from_judgments(rows)
    assert list(battles["winner"]) == ["model_b", "model_b", "model_a", "model_a"]
    extra = {"question_id": 3, "model": "m", "baseline": BASELINE, "game": 1, "verdict": "B>A"}
    table = arena_hard_score(rows + [extra], num_rounds=10)
    # wins: q1 g1, q1 g2, q3 g1; losses: q2 g1, q2 g2 -> 3 / 5
    assert (table.loc["m", "n_win"], table.loc["m", "n_loss"]) == (3, 2)
    assert table.loc["m", "score"] == pytest.approx(60.0, abs=1e-2)


def test_strong_verdict_counts_three_times():
    strong = battles_from_judgments(judgments(strong_win=1))
    weak = battles_from_judgments(judgments(win=1))
    assert (len(strong), len(weak)) == (3, 1)
    # 10 strong wins + 10 weak losses: 30 battles won of 40 -> 75.0; all weak -> 50.0
    assert arena_hard_score(judgments(strong_win=10, loss=10), num_rounds=10).loc["m", "score"] == \
        pytest.approx(75.0, abs=1e-2)
    assert arena_hard_score(judgments(win=10, loss=10), num_rounds=10).loc["m", "score"] == \
        pytest.approx(50.0, abs=1e-2)
    # ... and 10 strong losses + 10 weak wins: 10 of 40 -> 25.0; weight=1 turns the strong ones weak
    assert arena_hard_score(judgments(strong_loss=10, win=10), num_rounds=10).loc["m", "score"] == \
        pytest.approx(25.0, abs=1e-2)
    assert arena_hard_score(judgments(strong_loss=10, win=10), num_rounds=10, weight=1).loc["m", "score"] == \
        pytest.approx(50.0, abs=1e-2)
    table = arena_hard_score(judgments(strong_win=2, win=3, tie=4, loss=5, strong_loss=6), num_rounds=10)
    assert table.loc["m", ["n_strong_win", "n_win", "n_tie", "n_loss", "n_strong_loss"]].tolist() == [2, 3, 4, 5, 6]
    assert table.loc["m", "n_battles"] == 3 * 2 + 3 + 4 + 5 + 3 * 6


# ------------------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_is_seeded_contains_the_score_and_narrows_with_more_judgments():
    small = judgments(strong_win=5, win=25, tie=20, loss=35, strong_loss=15)  # 100 judgments
    a = arena_hard_score(small, seed=3)
    pd.testing.assert_frame_equal(a, arena_hard_score(pd.DataFrame(small), seed=3))
    assert (a.loc["m", "ci_lower"], a.loc["m", "ci_upper"]) != tuple(arena_hard_score(small, seed=4).loc[
        "m", ["ci_lower", "ci_upper"]])
    for seed in range(3):
        row = arena_hard_score(small, seed=seed).loc["m"]
        assert row["ci_lower"] < row["score"] < row["ci_upper"]
        assert row["ci_minus"] == pytest.approx(row["score"] - row["ci_lower"])
        assert row["ci_plus"] == pytest.approx(row["ci_upper"] - row["score"])
    # Same proportions from 10x the judgments (questions renamed so that none repeats): the interval
    # should shrink by about sqrt(10) ~ 3.2; demand at least a factor 2.
    big = [{**r, "question_id": f"{r['question_id']}-{k}"} for k in range(10) for r in small]
    b = arena_hard_score(big, seed=3)
    assert b.loc["m", "score"] == pytest.approx(a.loc["m", "score"], abs=1e-6)
    width_small = a.loc["m", "ci_upper"] - a.loc["m", "ci_lower"]
    width_big = b.loc["m", "ci_upper"] - b.loc["m", "ci_lower"]
    assert width_big < width_small / 2, (width_small, width_big)
    assert width_small > 5  # about 15 points for 100 judgments, so the comparison means something


def test_interval_is_the_2_5_and_97_5_percentile_of_the_bootstrap_ratings():
    # One model against the baseline: each round's rating is the log-odds of its resampled win rate, so
    # the rounds can be redone here without a regression (draws as documented in arena_hard_score).
    rows = judgments(strong_win=3, win=20, tie=15, loss=30, strong_loss=7)
    battles = battles_from_judgments(rows)
    score = battles["winner"].map({"model_b": 1.0, "model_a": 0.0, "tie": 0.5}).to_numpy()
    rng = np.random.default_rng(11)
    rates = [score[rng.integers(0, len(score), len(score))].mean() for _ in range(100)]
    ratings = [1000 + 400 * math.log10(p / (1 - p)) for p in rates]
    lower, upper = (100 / (1 + 10 ** ((1000 - np.percentile(ratings, q)) / 400)) for q in (2.5, 97.5))
    row = arena_hard_score(rows, seed=11).loc["m"]
    assert row["ci_lower"] == pytest.approx(lower, abs=1e-3)
    assert row["ci_upper"] == pytest.approx(upper, abs=1e-3)
    assert row["score"] == pytest.approx(100 * score.mean(), abs=1e-3)


def test_quantile_is_numpy_percentile_on_finite_values_and_keeps_infinities():
    x = np.random.default_rng(0).normal(1000, 50, 100)
    for q in (0.025, 0.5, 0.975):
        assert _quantile(x, q) == pytest.approx(np.percentile(x, 100 * q))
    with_inf = np.concatenate([np.full(97, 1100.0), np.full(3, np.inf), [np.nan]])
    assert _quantile(with_inf, 0.975) == math.inf
    assert _quantile(with_inf, 0.025) == 1100.0
    assert math.isnan(_quantile(np.array([np.nan]), 0.5))


def test_format_score():
    assert format_score({"score": 15.83, "ci_lower": 14.12, "ci_upper": 17.74}) == "15.8 (-1.7, +1.9)"
    assert format_score(pd.Series({"score": 100.0, "ci_lower": 100.0, "ci_upper": 100.0})) == "100.0 (-0.0, +0.0)"
    assert format_score({"score": float("nan"), "ci_lower": float("nan"), "ci_upper": float("nan")}) == "n/a"
    row = arena_hard_score(judgments(win=30, loss=50, tie=20), seed=0).loc["m"]
    assert format_score(row).startswith("40.0 (-")


# ------------------------------------------------------------------------------------------------
# unparsed, degenerate and bad input


def test_unparsed_verdicts_are_counted_and_skipped():
    rows = judgments(win=30, loss=50, tie=20, unparsed=7)
    rows[-1]["verdict"] = float("nan")  # NaN, as a DataFrame stores a missing value, is unparsed too
    battles = battles_from_judgments(rows)
    assert len(battles) == 100
    assert battles.attrs["n_unparsed"] == {"m": 7}
    assert battles.attrs["n_judgments"] == {"m": 107}
    row = arena_hard_score(pd.DataFrame(rows), num_rounds=10).loc["m"]
    assert (row["n_judgments"], row["n_unparsed"], row["n_battles"]) == (107, 7, 100)
    assert row["score"] == pytest.approx(40.0, abs=1e-2)


@pytest.mark.parametrize("outcome,score,sign", [("win", 100.0, 1), ("strong_loss", 0.0, -1)])
def test_a_model_that_wins_or_loses_everything_gets_100_or_0(outcome, score, sign):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning, no overflow: the divergence is detected
        table = arena_hard_score(judgments(**{outcome: 12}, unparsed=2) + judgments("ok", win=3, loss=3))
    row = table.loc["m"]
    assert row["rating"] == sign * math.inf
    assert (row["score"], row["ci_lower"], row["ci_upper"]) == (score, score, score)
    assert "diverges" in row["note"] and row["n_unparsed"] == 2
    assert table.loc["ok", "score"] == pytest.approx(50.0, abs=1e-2) and table.loc["ok", "note"] == ""
    assert format_score(row) == f"{score:.1f} (-0.0, +0.0)"


def test_one_loss_in_many_wins_is_finite_with_the_upper_bound_at_100():
    row = arena_hard_score(judgments(win=59, loss=1)).loc["m"]
    assert row["score"] == pytest.approx(100 * 59 / 60, abs=1e-2)
    # Bootstrap rounds that miss the single loss diverge; the 97.5% bound is then 100.
    assert row["ci_upper"] == 100.0 and row["ci_lower"] < row["score"]


def test_divergence_in_a_general_graph_follows_fords_condition():
    rows = (battle_rows(BASELINE, "x", 3, 2, 1)  # x and the baseline beat each other: finite
            + battle_rows("top", BASELINE, 2, 0, 0) + battle_rows("top", "x", 1, 0, 0)  # beats all: +inf
            + battle_rows("x", "bottom", 4, 0, 0)  # loses all: -inf
            + battle_rows("top", "loose", 1, 0, 0))  # only lost to an infinite player: not identified
    ratings = bradley_terry(pd.DataFrame(rows))
    assert ratings["top"] == math.inf and ratings["bottom"] == -math.inf and math.isnan(ratings["loose"])
    assert ratings["x"] == pytest.approx(1000 + 400 * math.log10(2.5 / 3.5), abs=1e-3)
    rates = win_rate_vs(ratings)
    assert (rates["top"], rates["bottom"]) == (1.0, 0.0)


def test_a_model_without_parseable_judgments_gets_nan_not_an_exception():
    table = arena_hard_score(judgments("lost", unparsed=4) + judgments("m", win=3, loss=1), num_rounds=10)
    row = table.loc["lost"]
    assert math.isnan(row["score"]) and math.isnan(row["ci_lower"]) and row["n_unparsed"] == 4
    assert row["n_judgments"] == 4 and row["n_battles"] == 0 and "no parseable" in row["note"]
    assert list(table["model"]) == ["m", "lost"]  # NaN last
    assert format_score(row) == "n/a"
    alone = arena_hard_score(judgments("lost", unparsed=2))
    assert math.isnan(alone.loc["lost", "score"]) and alone.loc["lost", "n_unparsed"] == 2
    assert arena_hard_score([]).empty


def test_bad_input_names_the_bad_value_and_what_is_expected():
    rows = judgments(win=2)
    rows[1]["verdict"] = "A>>>B"
    with pytest.raises(ValueError, match=r"row 1: unknown verdict label 'A>>>B'; expected one of A>>B, A>B"):
        battles_from_judgments(rows)
    with pytest.raises(ValueError, match=r"unknown verdict label '\[\[A>B\]\]'"):  # labels, not judge text
        arena_hard_score([{**judgments(win=1)[0], "verdict": "[[A>B]]"}])
    with pytest.raises(ValueError, match=r"lack column\(s\) \['verdict'\]; expected columns question_id"):
        arena_hard_score(pd.DataFrame(judgments(win=2)).drop(columns="verdict"))
    with pytest.raises(ValueError, match=r"unknown game 3; expected 1"):
        battles_from_judgments([{**judgments(win=1)[0], "game": 3}])
    with pytest.raises(ValueError, match=r"baseline 'gpt-4-turbo'.*against 'gpt-4-0314'"):
        arena_hard_score(judgments(win=2, baseline="gpt-4-turbo"))
    with pytest.raises(ValueError, match=r"judged more than once"):
        battles_from_judgments(judgments(win=2) + judgments(win=1))
    with pytest.raises(ValueError, match=r"unknown winner 'a'; expected one of model_a, model_b, tie"):
        bradley_terry(pd.DataFrame([{"model_a": BASELINE, "model_b": "m", "winner": "a"}]))
    with pytest.raises(ValueError, match=r"anchor 'nobody' is in no battle"):
        bradley_terry(battles_from_judgments(judgments(win=1, loss=1)), anchor="nobody")


def test_position_consistency_undoes_the_swap():
    from eval.arena import position_consistency

    def games(q, v1, v2, model="m"):
        return [{"question_id": q, "model": model, "baseline": "gpt-4-0314", "game": 1, "verdict": v1},
                {"question_id": q, "model": model, "baseline": "gpt-4-0314", "game": 2, "verdict": v2}]

    rows = (games(1, "B>A", "A>>B")  # model wins both games (B in game 1, A in game 2): consistent
            + games(2, "A>B", "A>B")  # "A" both times: a position, not an answer, won
            + games(3, "A=B", "A=B")  # a tie twice: consistent
            + games(4, "B>A", None))  # one game unparsed: left out
    assert position_consistency(rows) == {"m": pytest.approx(2 / 3)}
    assert math.isnan(position_consistency(games(1, None, "A>B"))["m"])
