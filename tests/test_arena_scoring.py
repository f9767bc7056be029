"""Arena-Hard scoring (eval/arena.py) against arena-hard-auto's show_result.py, recomputed here step by step.

The references below follow show_result.py of lmarena-ai/arena-hard-auto: the v0.1 one (commit 0489bf3:
get_battles_from_row, compute_mle_elo with sklearn, get_bootstrap_result, percentiles 2.5 / 97.5,
predict_win_rate) and the v2.0 one (commit 404392d: load_judgments' label_to_score and explode, per-model
bootstrap means, quantiles 0.05 / 0.95, and print_leaderboard_with_style_features for style control, fitted to
convergence). The only change is the random draws, which use arena_hard_score's documented seeded Generator
instead of a global seed. Style control's default fit, show_result's own 50 L-BFGS steps, is checked against
numbers that the repo's own code produced (tests/fixtures/arena_show_result_style.json, its `source`).
"""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from eval.arena import (
    BASELINE,
    LABELS,
    V2_BASELINES,
    answer_metadata,
    arena_hard_score,
    battles_from_judgments,
    format_score,
    position_consistency,
)

SHOW_RESULT_STYLE = Path(__file__).parent / "fixtures" / "arena_show_result_style.json"

O3, GEMINI = V2_BASELINES["hard_prompt"], V2_BASELINES["creative_writing"]
# The model's outcome as the judge's label in each game: game 1 shows the baseline as A, game 2 as B.
LABEL = {("strong_win", 1): "B>>A", ("win", 1): "B>A", ("tie", 1): "A=B", ("loss", 1): "A>B",
         ("strong_loss", 1): "A>>B", ("strong_win", 2): "A>>B", ("win", 2): "A>B", ("tie", 2): "A=B",
         ("loss", 2): "B>A", ("strong_loss", 2): "B>>A"}


def judgments(model="m", baseline=BASELINE, **counts):
    """Judgment rows with the given number of each outcome (strong_win, win, tie, loss, strong_loss, unparsed),
    spread over both games: row i is question i // 2, game 1 + i % 2."""
    kinds = ("strong_win", "win", "tie", "loss", "strong_loss", "unparsed")
    outcomes = [o for o in kinds for _ in range(counts.pop(o, 0))]
    assert not counts, f"unknown outcome(s) {counts}"
    return [{"question_id": f"q{i // 2}", "model": model, "baseline": baseline, "game": 1 + i % 2,
             "verdict": None if o == "unparsed" else LABEL[o, 1 + i % 2]} for i, o in enumerate(outcomes)]


MIRROR = {"A>>B": "B<<A", "A>B": "B<A", "A=B": "B=A", "B>A": "A<B", "B>>A": "A<<B"}


def random_records(models, n_questions, seed, mirrored=False, category="hard_prompt"):
    """arena-hard judgment-file rows (uid, model, category, games: [game 1, game 2]) with random verdicts, each
    model leaning its own way; `mirrored` spells half the labels the other way round (A<B for B>A, ...)."""
    rng = np.random.default_rng(seed)
    outcomes = ("strong_win", "win", "tie", "loss", "strong_loss")
    records = []
    for k, model in enumerate(models):
        lean = np.roll([0.1, 0.3, 0.3, 0.2, 0.1], k)
        for q in range(n_questions):
            labels = [LABEL[rng.choice(outcomes, p=lean), g] for g in (1, 2)]
            labels = [MIRROR[x] if mirrored and rng.random() < 0.5 else x for x in labels]
            records.append({"uid": f"q{q}", "model": model, "category": category,
                            "games": [{"score": x} for x in labels]})
    return records


def as_rows(records, baseline, games=(1, 2)):
    """Our judgment rows from arena-hard records, the games of each question in the order given (that order
    is the battles' order, which the bootstrap draws index into)."""
    return [{"question_id": r["uid"], "model": r["model"], "baseline": baseline, "game": g, "category": r["category"],
             "verdict": None if r["games"][g - 1] is None else r["games"][g - 1]["score"]}
            for r in records for g in games]


# ------------------------------------------------------------------------------------------------
# show_result.py's methods, written out


def show_result_v01(records, baseline, num_rounds, seed, weight=3):
    """v0.1: battles (model_a = baseline, winner read through the swap), Bradley-Terry by logistic regression,
    pooled bootstrap, 2.5 / 97.5 percentiles of the Elo ratings, win rates vs the baseline in percent."""
    a_wins = {"A>B": ("model_a", 1), "A>>B": ("model_a", weight), "A=B": ("tie", 1), "B>A": ("model_b", 1),
              "B>>A": ("model_b", weight)}
    rows = []
    for r in records:
        for g, game in enumerate(r["games"]):
            if game is None or game["score"] not in a_wins:
                continue
            winner, w = a_wins[game["score"]]
            if g == 1:  # game 2: the model is assistant A
                winner = {"model_a": "model_b", "model_b": "model_a"}.get(winner, winner)
            rows += [{"question_id": r["uid"], "model_a": baseline, "model_b": r["model"], "winner": winner}] * w
    battles = pd.DataFrame(rows)

    def compute_mle_elo(df):
        models = pd.concat([df["model_a"], df["model_b"]]).unique()
        models = pd.Series(np.arange(len(models)), index=models)
        df = pd.concat([df, df], ignore_index=True)
        x = np.zeros([len(df), len(models)])
        x[np.arange(len(df)), models[df["model_a"]]] = math.log(10)
        x[np.arange(len(df)), models[df["model_b"]]] = -math.log(10)
        y = np.zeros(len(df))
        y[(df["winner"] == "model_a").to_numpy()] = 1.0
        tie = (df["winner"] == "tie").to_numpy().copy()
        tie[len(tie) // 2:] = False  # one tie: one A win + one B win
        y[tie] = 1.0
        lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8).fit(x, y)  # the repo: penalty=None
        elo = 400 * lr.coef_[0] + 1000
        return pd.Series(elo + 1000 - elo[models[baseline]], index=models.index)

    def win_rate(elo):  # predict_win_rate vs the baseline (rated 1000)
        return 100 / (1 + 10 ** ((1000 - elo) / 400))

    point = compute_mle_elo(battles)
    draws = np.random.default_rng(seed).integers(0, len(battles), (num_rounds, len(battles)))
    boot = pd.DataFrame([compute_mle_elo(battles.iloc[i]) for i in draws])
    return pd.DataFrame({m: {"score": win_rate(point[m]), "ci_lower": win_rate(np.percentile(boot[m], 2.5)),
                             "ci_upper": win_rate(np.percentile(boot[m], 97.5))}
                         for m in point.index if m != baseline}).T


LABEL_TO_SCORE = {"A>B": [1], "A>>B": [1] * 3, "A=B": [0.5], "A<<B": [0] * 3, "A<B": [0], "B>A": [0], "B>>A": [0] * 3,
                  "B=A": [0.5], "B<<A": [1] * 3, "B<A": [1]}


def v20_battles(records):
    data = pd.DataFrame(records)
    null = data["games"].map(lambda x: x[0] is None or x[1] is None or x[0]["score"] is None or x[1]["score"] is None)
    data = data[~null].reset_index(drop=True)
    data["scores"] = data["games"].map(lambda x: LABEL_TO_SCORE[x[1]["score"]]
                                       + [1 - s for s in LABEL_TO_SCORE[x[0]["score"]]])
    return data[["uid", "model", "category", "scores"]].explode("scores").reset_index(drop=True)


def show_result_v20(records, num_rounds, seed):
    """v2.0 without style control: each model's battles resampled on their own, the mean of the rounds'
    means, and their 5% / 95% quantiles, in percent."""
    battles = v20_battles(records)
    rng = np.random.default_rng(seed)
    rounds = []
    for model, group in battles.groupby("model"):
        s = group["scores"].astype(float).to_numpy()
        rounds += [{"model": model, "scores": s[i].mean()} for i in rng.integers(0, len(s), (num_rounds, len(s)))]
    boot = pd.DataFrame(rounds).groupby("model")["scores"]
    return 100 * pd.DataFrame({"score": boot.mean(), "ci_lower": boot.quantile(0.05), "ci_upper": boot.quantile(0.95)})


def show_result_style(records, metadata, baseline, control_features, num_rounds, seed):
    """v2.0 style control: style covariates of model vs baseline, standardised; one-hot models with the baseline
    at -1; a logistic fit per resample of all battles; median and 5% / 95% quantiles of the win rates."""
    battles = v20_battles(records)

    def counts(meta):
        return [v if isinstance(v, int) else sum(v.values()) for v in meta.values()]

    m = np.array([counts(metadata[a][u]) for a, u in zip(battles["model"], battles["uid"])], float)
    b = np.array([counts(metadata[baseline][u]) for u in battles["uid"]], float)
    f = np.zeros_like(m)
    f[:, 0] = (m[:, 0] - b[:, 0]) / (m[:, 0] + b[:, 0])
    md, bd = m[:, 1:] / (m[:, :1] + 1), b[:, 1:] / (b[:, :1] + 1)
    f[:, 1:] = (md - bd) / (md + bd + 1)
    f = (f - f.mean(axis=0)) / f.std(axis=0, ddof=1)
    f = f[:, {("length",): [0], ("markdown",): [1, 2, 3]}.get(tuple(control_features), [0, 1, 2, 3])]
    models = sorted(set(battles["model"]) | {baseline})
    onehot = np.zeros((len(battles), len(models)))
    onehot[np.arange(len(battles)), [models.index(x) for x in battles["model"]]] = 1
    onehot[:, models.index(baseline)] = -1
    x, y = np.hstack([onehot, f]), battles["scores"].astype(float).to_numpy()
    rows = []
    for i in np.random.default_rng(seed).integers(0, len(y), (num_rounds, len(y))):
        xi, yi = np.vstack([x[i], x[i]]), np.r_[np.ones(len(i)), np.zeros(len(i))]
        w = np.r_[y[i], 1 - y[i]]
        coef = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10_000).fit(
            xi[w > 0], yi[w > 0], sample_weight=w[w > 0]).coef_[0]
        rows.append({mm: 1 / (1 + np.exp(coef[models.index(baseline)] - coef[k])) for k, mm in enumerate(models)})
    table = pd.DataFrame(rows).drop(columns=baseline)
    return 100 * pd.DataFrame({"score": table.quantile(0.5), "ci_lower": table.quantile(0.05),
                               "ci_upper": table.quantile(0.95)})


def random_metadata(models, n_questions, seed):
    rng = np.random.default_rng(seed)
    return {m: {f"q{q}": {"token_len": int(rng.integers(40, 700)),
                          "header_count": {"h1": 0, "h2": int(rng.integers(0, 4))},
                          "list_count": {"ordered": int(rng.integers(0, 6)), "unordered": int(rng.integers(0, 5))},
                          "bold_count": {"**": int(rng.integers(0, 6)), "__": 0}} for q in range(n_questions)}
            for m in models}


# ------------------------------------------------------------------------------------------------
# the score equals show_result's


def test_v01_equals_show_result_bradley_terry_and_its_95_percent_bootstrap():
    records = random_records(["m1", "m2", "m3"], 30, seed=5)
    records[3]["games"][1] = {"score": None}  # unparsed: v0.1 skips that game alone
    want = show_result_v01(records, BASELINE, num_rounds=20, seed=7)
    got = arena_hard_score(as_rows(records, BASELINE), num_rounds=20, seed=7)
    for model in want.index:
        for col in ("score", "ci_lower", "ci_upper"):
            assert got.loc[model, col] == pytest.approx(want.loc[model, col], abs=1e-5), (model, col)
    assert set(got["interval"]) == {0.95}
    # and the numbers mean something: the three leans differ, and the intervals are a few points wide
    assert got["score"].max() - got["score"].min() > 10
    assert ((got["ci_upper"] - got["ci_lower"]) > 3).all()


def test_v20_equals_show_result_bootstrap_means_with_5_and_95_percent_quantiles():
    records = random_records(["m1", "m2"], 60, seed=2, mirrored=True)  # A<B ... as well as B>A ...
    records[0]["games"][0] = {"score": None}  # one game unparsed: show_result drops the whole question
    want = show_result_v20(records, num_rounds=100, seed=3)
    # load_judgments lists game 2's battles before game 1's: the rows in that order give the same draws.
    got = arena_hard_score(as_rows(records, O3, games=(2, 1)), version="v2.0", num_rounds=100, seed=3)
    for model in want.index:
        for col in ("score", "ci_lower", "ci_upper"):
            assert got.loc[model, col] == pytest.approx(want.loc[model, col], abs=1e-9), (model, col)
    assert got.loc["m1", "n_unparsed"] == 1 and got.loc["m1", "n_judgments"] == 120
    # the dropped question's other game is no battle: 59 questions' battles remain
    assert got.loc["m1", "n_battles"] == len(v20_battles(records).query("model == 'm1'"))
    assert set(got["interval"]) == {0.9} and set(got["baseline"]) == {O3}


@pytest.mark.parametrize("control_features", [["length", "markdown"], ["length"], ["markdown"]])
def test_converged_style_control_equals_the_maximum_likelihood_fit(control_features):
    models = ["m1", "m2"]
    records = random_records(models, 25, seed=4)
    metadata = random_metadata(models + [O3], 25, seed=6)
    want = show_result_style(records, metadata, O3, control_features, num_rounds=12, seed=1)
    got = arena_hard_score(as_rows(records, O3, games=(2, 1)), version="v2.0", num_rounds=12, seed=1,
                           control_features=control_features, metadata=metadata, control_fit="converged")
    for model in models:
        for col in ("score", "ci_lower", "ci_upper"):
            assert got.loc[model, col] == pytest.approx(want.loc[model, col], abs=1e-5), (model, col)
    assert set(got["control_fit"]) == {"converged"} and set(got["control"]) == {" ".join(control_features)}
    plain = arena_hard_score(as_rows(records, O3, games=(2, 1)), version="v2.0", num_rounds=12, seed=1)
    assert abs(got.loc["m1", "score"] - plain.loc["m1", "score"]) > 0.1  # the covariates did something


def show_result_case(name):
    """One case of the fixture: our judgment rows (game 2 before game 1, as the repo's battles), metadata, and
    the repo's numbers {model: {score, ci_lower, ci_upper, point}} in percent."""
    fx = json.loads(SHOW_RESULT_STYLE.read_text())
    case = next(c for c in fx["cases"] if c["name"] == name)
    rows = [{"question_id": j["uid"], "model": j["model"], "baseline": fx["baseline"], "game": g,
             "category": fx["category"], "verdict": j["games"][g - 1]}
            for j in fx["judgments"] if j["model"] in case["models"] for g in (2, 1)]
    # the fixture keeps each count summed (all the fit reads); spread over keys as arena-hard's files hold them
    metadata = {m: {u: {"token_len": n, "header_count": {"h1": h // 2, "h2": h - h // 2},
                        "list_count": {"ordered": li // 3, "unordered": li - li // 3}, "bold_count": {"**": b}}
                    for u, (n, h, li, b) in answers.items()} for m, answers in fx["metadata"].items()}
    return case, rows, metadata


def styled(case, rows, metadata, control_fit="show_result"):
    return arena_hard_score(rows, version="v2.0", num_rounds=case["num_rounds"], seed=case["seed"],
                            control_features=case["control_features"], metadata=metadata, control_fit=control_fit)


@pytest.mark.parametrize("name", ["length-markdown", "length", "markdown", "alone"])
def test_show_result_fit_equals_arena_hard_autos_own_run(name):
    # The repo's show_result.py and utils/math_utils.py ran on these judgments with the same bootstrap draws
    # (the fixture's `source` says how): its torch L-BFGS, 50 steps from 0.5, float32, whole bootstrap.
    case, rows, metadata = show_result_case(name)
    got = styled(case, rows, metadata)
    assert sorted(got["model"]) == sorted(case["want"]) and got["n_battles"].sum() == case["n_battles"]
    for model, want in case["want"].items():
        for col in ("score", "ci_lower", "ci_upper"):
            assert got.loc[model, col] == pytest.approx(want[col], abs=0.1), (model, col)
        # the median of the rounds lies near the one fit on every battle, as it should
        assert got.loc[model, "score"] == pytest.approx(want["point"], abs=1.5)
    assert set(got["control_fit"]) == {"show_result"} and set(got["interval"]) == {0.9}


def test_converged_fit_is_a_few_tenths_of_a_point_from_show_results():
    case, rows, metadata = show_result_case("length-markdown")
    ours, exact = styled(case, rows, metadata), styled(case, rows, metadata, control_fit="converged")
    default = arena_hard_score(rows, version="v2.0", num_rounds=1, control_features=["length"], metadata=metadata)
    assert set(default["control_fit"]) == {"show_result"}  # the fit leaderboards print is the default
    gap = (exact["score"] - ours.loc[exact.index, "score"]).abs()
    # 50 L-BFGS steps stop short of the optimum: measurably (0.05 to 0.16 points here), by less than half a point
    assert gap.max() > 0.1 and (gap < 0.5).all(), gap.to_dict()
    for col in ("ci_lower", "ci_upper"):
        assert ((exact[col] - ours.loc[exact.index, col]).abs() < 0.5).all(), col
    assert set(exact["control_fit"]) == {"converged"}
    # without style control no fit is named
    assert arena_hard_score(rows, version="v2.0", num_rounds=5)["control_fit"].isna().all()


def test_style_control_takes_away_a_win_that_only_length_bought():
    # The judge prefers the longer answer and nothing else: either model wins 5 of 6 questions where its answer
    # is longer than the baseline's (250 vs 100 tokens) and 1 of 5 where it is shorter (60 tokens). "verbose" is
    # longer on 36 questions (shorter on 10), "terse" on 12 (shorter on 30).
    rows, metadata = [], {"verbose": {}, "terse": {}, O3: {}}
    for model, n_long, n_short in (("verbose", 36, 10), ("terse", 12, 30)):
        for q in range(n_long + n_short):
            longer = q < n_long
            win = q % 6 != 5 if longer else (q - n_long) % 5 == 0
            metadata[model][q] = {"token_len": 250 if longer else 60, "header_count": {}, "list_count": {},
                                  "bold_count": {}}
            metadata[O3][q] = {"token_len": 100, "header_count": {}, "list_count": {}, "bold_count": {}}
            for game in (1, 2):
                rows.append({"question_id": q, "model": model, "baseline": O3, "game": game, "category": "hard_prompt",
                             "verdict": LABEL["win" if win else "loss", game]})
    raw = arena_hard_score(rows, version="v2.0")
    styled = arena_hard_score(rows, version="v2.0", control_features=["length"], metadata=metadata)
    assert raw.loc["verbose", "score"] > 65 and raw.loc["terse", "score"] < 40
    # Controlled for length both are the same judge-preference at the leaderboard's average length: equal, and
    # verbose's score falls by more than 10 points toward 50.
    assert abs(styled.loc["verbose", "score"] - styled.loc["terse", "score"]) < 1
    assert styled.loc["verbose", "score"] < raw.loc["verbose", "score"] - 10
    assert abs(styled.loc["verbose", "score"] - 50) < 10
    # Markdown alone cannot explain it (no answer has any: the covariates are constant and left out).
    md = arena_hard_score(rows, version="v2.0", control_features=["markdown"], metadata=metadata)
    assert md.loc["verbose", "score"] == pytest.approx(raw.loc["verbose", "score"], abs=2)


def test_style_control_needs_every_answers_metadata_from_one_tokenizer():
    rows = as_rows(random_records(["m"], 3, seed=0), O3)
    meta = {"m": {f"q{q}": answer_metadata("a b c", "whitespace") for q in range(3)},
            O3: {f"q{q}": answer_metadata("d e", "whitespace") for q in range(2)}}
    with pytest.raises(ValueError, match=r"metadata for 'o3-mini-2025-01-31''s answer to question 'q2' is missing"):
        arena_hard_score(rows, version="v2.0", control_features=["length"], metadata=meta)
    meta[O3]["q2"] = {k: v for k, v in answer_metadata("d e").items() if k != "tokenizer"}  # arena-hard's own files
    meta[O3]["q2"]["tokenizer"] = "o200k_base"
    with pytest.raises(ValueError, match=r"different tokenizers \['o200k_base', 'whitespace'\]"):
        arena_hard_score(rows, version="v2.0", control_features=["length"], metadata=meta)
    with pytest.raises(ValueError, match="style control needs metadata"):
        arena_hard_score(rows, version="v2.0", control_features=["length"])
    with pytest.raises(ValueError, match=r"unknown control feature\(s\) \['style'\]; choose from length, markdown"):
        arena_hard_score(rows, version="v2.0", control_features=["style"], metadata=meta)
    with pytest.raises(ValueError, match=r"unknown control fit 'exact'; choose show_result or converged"):
        arena_hard_score(rows, version="v2.0", control_features=["length"], metadata=meta, control_fit="exact")


# ------------------------------------------------------------------------------------------------
# v2.0 categories


def test_v20_scores_each_category_against_its_own_baseline():
    hard = [{**r, "category": "hard_prompt"} for r in judgments("m", O3, win=6, loss=2)]
    creative = [{**r, "category": "creative_writing"} for r in judgments("m", GEMINI, win=1, loss=7)]
    rows = hard + creative
    default = arena_hard_score(rows, version="v2.0").loc["m"]
    assert (default["category"], default["baseline"], default["n_judgments"]) == ("hard_prompt", O3, 8)
    assert default["score"] == pytest.approx(75.0, abs=5)
    cw = arena_hard_score(rows, version="v2.0", category="creative_writing").loc["m"]
    assert (cw["baseline"], cw["n_judgments"]) == (GEMINI, 8) and cw["score"] == pytest.approx(12.5, abs=5)
    with pytest.raises(ValueError, match=r"baseline 'gemini-2.0-flash-001', but the score is against 'o3-mini"):
        arena_hard_score([{**r, "category": "hard_prompt"} for r in creative], version="v2.0")
    with pytest.raises(ValueError, match=r"no judgment in category 'math'; the judgments have \['creative_writing'"):
        arena_hard_score(rows, version="v2.0", category="math")
    with pytest.raises(ValueError, match=r"lack column\(s\) \['category'\]"):
        arena_hard_score(judgments("m", O3, win=2), version="v2.0")
    # A local reference model as the baseline of every category:
    local = [{**r, "category": "creative_writing"} for r in judgments("m", "smol", win=3, loss=1)]
    assert arena_hard_score(local, baseline="smol", version="v2.0", category="creative_writing").loc[
        "m", "baseline"] == "smol"


# ------------------------------------------------------------------------------------------------
# judgments -> battles


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("game", [1, 2])
def test_each_label_in_each_game_gives_the_models_score(label, game):
    battles = battles_from_judgments([{"question_id": 7, "model": "m", "baseline": BASELINE, "game": game,
                                       "verdict": label}])
    a_score = {"A": 1.0, "B": 0.0}[label[0]] if "=" not in label else 0.5
    if "<" in label:
        a_score = 1.0 - a_score
    want = a_score if game == 2 else 1.0 - a_score  # the model is assistant A only in game 2
    assert list(battles["score"]) == [want] * (3 if label.count(">") + label.count("<") == 2 else 1)


def test_strong_verdicts_count_three_times_and_the_counts_are_reported():
    # 10 strong wins + 10 weak losses: 30 battles won of 40 -> 75.0; the same weak -> 50.0; weight=1 -> 50.0
    assert arena_hard_score(judgments(strong_win=10, loss=10), num_rounds=10).loc["m", "score"] == pytest.approx(75.0)
    assert arena_hard_score(judgments(win=10, loss=10), num_rounds=10).loc["m", "score"] == pytest.approx(50.0)
    assert arena_hard_score(judgments(strong_win=10, loss=10), num_rounds=10, weight=1).loc[
        "m", "score"] == pytest.approx(50.0)
    row = arena_hard_score(judgments(strong_win=2, win=3, tie=4, loss=5, strong_loss=6, unparsed=1)).loc["m"]
    assert row[["n_strong_win", "n_win", "n_tie", "n_loss", "n_strong_loss"]].tolist() == [2, 3, 4, 5, 6]
    assert (row["n_battles"], row["n_judgments"], row["n_unparsed"]) == (3 * 2 + 3 + 4 + 5 + 3 * 6, 21, 1)


def test_bootstrap_is_seeded_and_narrows_with_more_judgments():
    small = judgments(strong_win=5, win=25, tie=20, loss=35, strong_loss=15)  # 100 judgments
    a = arena_hard_score(small, seed=3)
    pd.testing.assert_frame_equal(a, arena_hard_score(pd.DataFrame(small), seed=3))
    assert a.loc["m", "ci_lower"] != arena_hard_score(small, seed=4).loc["m", "ci_lower"]
    assert a.loc["m", "ci_lower"] < a.loc["m", "score"] < a.loc["m", "ci_upper"]
    big = [{**r, "question_id": f"{r['question_id']}-{k}"} for k in range(10) for r in small]
    b = arena_hard_score(big, seed=3)
    assert b.loc["m", "score"] == pytest.approx(a.loc["m", "score"])
    assert b.loc["m", "ci_upper"] - b.loc["m", "ci_lower"] < (a.loc["m", "ci_upper"] - a.loc["m", "ci_lower"]) / 2


# ------------------------------------------------------------------------------------------------
# unparsed, degenerate and bad input


@pytest.mark.parametrize("version", ["v0.1", "v2.0"])
def test_a_model_that_wins_everything_scores_100_and_one_without_verdicts_nan(version):
    rows = judgments("m", win=12) + judgments("ok", win=3, loss=3) + judgments("lost", unparsed=4)
    if version == "v2.0":
        rows = [{**r, "category": "hard_prompt", "baseline": O3} for r in rows]
    table = arena_hard_score(rows, version=version)
    assert table.loc["m", ["score", "ci_lower", "ci_upper"]].tolist() == [100.0, 100.0, 100.0]
    assert table.loc["m", "note"] == "won every parseable battle"
    assert format_score(table.loc["m"]) == "100.0 (-0.0, +0.0)"
    assert table.loc["ok", "score"] == pytest.approx(50.0, abs=5) and table.loc["ok", "note"] == ""
    lost = table.loc["lost"]
    assert math.isnan(lost["score"]) and math.isnan(lost["ci_lower"]) and "no parseable" in lost["note"]
    assert (lost["n_unparsed"], lost["n_battles"]) == (4, 0) and format_score(lost) == "n/a"
    assert list(table["model"]) == ["m", "ok", "lost"]  # best first, NaN last
    assert arena_hard_score([]).empty


def test_bad_input_names_the_bad_value_and_what_to_do():
    rows = judgments(win=2)
    rows[1]["verdict"] = "A>>>B"
    with pytest.raises(ValueError, match=r"row 1: unknown verdict label 'A>>>B'; expected one of A>>B, A>B"):
        arena_hard_score(rows)
    with pytest.raises(ValueError, match=r"unknown verdict label '\[\[A>B\]\]'"):  # labels, not the judge's text
        battles_from_judgments([{**judgments(win=1)[0], "verdict": "[[A>B]]"}])
    with pytest.raises(ValueError, match=r"lack column\(s\) \['verdict'\]; expected columns question_id"):
        arena_hard_score(pd.DataFrame(judgments(win=2)).drop(columns="verdict"))
    with pytest.raises(ValueError, match=r"row 0: unknown game 3; expected 1"):
        arena_hard_score([{**judgments(win=1)[0], "game": 3}])
    with pytest.raises(ValueError, match=r"baseline 'gpt-4-turbo', but the score is against 'gpt-4-0314'"):
        arena_hard_score(judgments(win=2, baseline="gpt-4-turbo"))
    with pytest.raises(ValueError, match=r"judged more than once"):
        arena_hard_score(judgments(win=2) + judgments(win=1))
    with pytest.raises(ValueError, match=r"unknown Arena-Hard version 'v3'; choose one of v0.1, v2.0"):
        arena_hard_score(judgments(win=2), version="v3")
    with pytest.raises(ValueError, match=r"category 'hard_prompt' applies to version v2.0"):
        arena_hard_score(judgments(win=2), category="hard_prompt")


def test_format_score():
    assert format_score({"score": 15.83, "ci_lower": 14.12, "ci_upper": 17.74}) == "15.8 (-1.7, +1.9)"
    assert format_score({"score": 50.0, "ci_lower": 50.5, "ci_upper": 52.0}) == "50.0 (+0.5, +2.0)"
    assert format_score({"score": float("nan"), "ci_lower": float("nan"), "ci_upper": float("nan")}) == "n/a"


def test_position_consistency_undoes_the_swap():
    def games(q, v1, v2):
        return [{"question_id": q, "model": "m", "baseline": BASELINE, "game": 1, "verdict": v1},
                {"question_id": q, "model": "m", "baseline": BASELINE, "game": 2, "verdict": v2}]

    rows = (games(1, "B>A", "A>>B")  # the model wins both games (B in game 1, A in game 2): consistent
            + games(2, "A>B", "A>B")  # "A" both times: a position, not an answer, won
            + games(3, "A=B", "A=B")  # a tie twice: consistent
            + games(4, "B>A", None))  # one game unparsed: left out
    assert position_consistency(rows) == {"m": pytest.approx(2 / 3)}
    assert math.isnan(position_consistency(games(1, None, "A>B"))["m"])


# ------------------------------------------------------------------------------------------------
# answer metadata


MARKDOWN = """# Title
## Part one
Some **bold** text, some __underlined bold__ and a **second** one.
### Steps
1. first
2. second
- apple
  * nested
+ plus
```python
# a comment, not a header
- not a list
**not bold**
```
#not a header (no space)
"""


def test_answer_metadata_counts_markdown_outside_code_blocks():
    meta = answer_metadata(MARKDOWN, tokenizer="whitespace")
    assert meta["header_count"] == {"h1": 1, "h2": 1, "h3": 1, "h4": 0, "h5": 0, "h6": 0}
    assert meta["list_count"] == {"ordered": 2, "unordered": 3}
    assert meta["bold_count"] == {"**": 2, "__": 1}
    assert (meta["token_len"], meta["tokenizer"]) == (len(MARKDOWN.split()), "whitespace")
    assert list(meta)[:4] == ["token_len", "header_count", "list_count", "bold_count"]  # arena-hard's order

    class Words:  # any tokenizer with encode(), e.g. the answer model's
        name_or_path = "words"

        def encode(self, text, add_special_tokens=True):
            return text.split() + (["<s>"] if add_special_tokens else [])

    words = answer_metadata("a b c", Words())
    assert (words["token_len"], words["tokenizer"]) == (3, "words")
    default = answer_metadata(MARKDOWN)  # tiktoken's o200k_base where it can be loaded, else whitespace words
    assert default["tokenizer"] in ("o200k_base", "whitespace")
    if default["tokenizer"] == "o200k_base":
        import tiktoken

        assert default["token_len"] == len(tiktoken.get_encoding("o200k_base").encode(MARKDOWN))
    with pytest.raises(TypeError, match="needs the answer text, not NoneType"):
        answer_metadata(None)
