"""Arena-Hard scores from judge verdicts, computed the way lmarena-ai/arena-hard-auto's `show_result.py` does.

Every question is judged twice against the baseline: game 1 shows the baseline as assistant A, game 2 swaps
the answers (gen_judgment.py). Each parsed verdict becomes battles scored from the model's side (1 win, 0.5
tie, 0 loss); a strong verdict (`A>>B`, `B>>A`, ...) is WEIGHT = 3 identical battles (label_to_score in
show_result.py). Two generations of show_result, chosen by `version`:

* "v0.1", the one the MAGPIE paper reports (show_result.py and utils_math.py at commit 0489bf3, 2024):
  baseline gpt-4-0314; compute_mle_elo's Bradley-Terry fit gives each model's predicted win rate against the
  baseline; 100 bootstrap rounds resample all battles (pooled over models) with replacement, and the 2.5% and
  97.5% percentiles of each model's rating, turned into win rates, make a 95% interval.
* "v2.0" (the 2025-04 release, commit 404392d): one leaderboard per question category, each against its
  own baseline (utils/judge_utils.py JUDGE_SETTINGS: o3-mini-2025-01-31 for hard_prompt and its
  subcategories coding and math, gemini-2.0-flash-001 for creative_writing). A question with either game
  unparsed is dropped whole (null_indices in load_judgments). 100 rounds resample each model's battles
  separately (groupby("model").sample); the score is the mean of the rounds' mean battle scores, the
  interval their 5% and 95% quantiles (90%).

Style control (`control_features`, show_result.py v2.0 `--control-features length markdown`, whichever the
version): a Bradley-Terry fit of the battle scores on the models (+1 the model, -1 the baseline) plus style
covariates: length (m - b) / (m + b) of the two answers' token counts, and for headers, lists and bold text
(d_m - d_b) / (d_m + d_b + 1) of their counts per token; each covariate standardised over the battles. 100
rounds refit on all battles resampled (pooled); the score is the median of the rounds' win rates against
the baseline, the interval their 5% and 95% quantiles. The covariates are centred on the battles scored
together, so a model scored alone is controlled against its own average style: pass the judgments of every
model of a leaderboard at once (as arena-hard-auto does) for the correction to compare models. The 2024 code's
own `--style-control` (an L2-penalised fit on raw markdown counts) is not reproduced.

How each round is fitted, chosen by `control_fit` and recorded beside `control` in every row:

* "show_result" (the default: leaderboards print its numbers): utils/math_utils.py fit_pairwise_model as
  show_result.py calls it (read at commit 196f6b8, unchanged since the v2.0 release 404392d). torch float32
  throughout; every coefficient starts at 0.5, the baseline's -1 column included (columns in sorted model
  order, then the covariates); loss binary_cross_entropy_with_logits summed over battles; torch.optim.LBFGS
  with lr 0.1, max_iter 50, tolerance_grad and tolerance_change 1e-9, no line search; win rate
  exp(c_m) / (exp(c_m) + exp(c_baseline)) (to_winrate_probabilities). Run on the repo's own code with the same
  draws (tests/fixtures/arena_show_result_style.json) it gives the same numbers to the last bit; torch on
  another thread count rounds its sums otherwise (the repo's numbers themselves moved by 0.006 points from one
  thread to two), so the fit runs on one, which is also 3x faster on 2 cores. The 50 steps stop short of the
  optimum: on 4 models x 60 random questions the median is 0.04 to 0.26 points from "converged"'s, an interval
  bound up to 0.45; further where style all but decides the verdicts (1.3 points for a judge that prefers the
  longer answer, tests/test_arena_cli.py). A model without a battle in a round keeps its starting 0.5 there
  and is counted, as in the repo. The repo's `--control-features length` alone crashes and `markdown` alone mislabels the models (it
  slices the design's first columns, not the covariates); here both fit the covariates named.
* "converged": the same likelihood minimised to convergence by Newton's method (the baseline's column dropped,
  which fixes its rating at 0; float64): the maximum-likelihood fit the L-BFGS run approximates. A model
  without a battle in a round is left out of that round's quantiles.

Arena-Hard judges each model only against the baseline (a star design). There the Bradley-Terry MLE win
rate of a model is its own win rate over its battles, so v0.1 is computed in that closed form (the tests
check it against compute_mle_elo's regression, round by round). A model that wins every battle has an
infinite rating and scores 100.0 (the repo's regression stops at some large rating that rounds to 100.0).
A model without a parseable judgment scores NaN, with `n_unparsed` saying why. Where the repo crashes or
silently skips (an unknown label, a missing column, metadata missing for an answer), a ValueError names it.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit

NAME = "arena_hard"  # the benchmark's name: its folder in an evaluation and its key in results.json
BASELINE = "gpt-4-0314"  # v0.1 show_result.py --baseline
V2_BASELINES = {"hard_prompt": "o3-mini-2025-01-31", "coding": "o3-mini-2025-01-31", "math": "o3-mini-2025-01-31",
                "creative_writing": "gemini-2.0-flash-001"}  # v2.0 utils/judge_utils.py JUDGE_SETTINGS
V2_CATEGORY = "hard_prompt"  # v2.0 show_result.py --category
VERSIONS = ("v0.1", "v2.0")
NUM_ROUNDS, WEIGHT = 100, 3  # show_result.py: --num-rounds (v0.1), range(100) (v2.0); weight=3
CONTROL_FEATURES = ("length", "markdown")
CONTROL_FITS = ("show_result", "converged")  # show_result's own L-BFGS, or the maximum-likelihood fit
# utils/math_utils.py fit_pairwise_model's defaults, which show_result.py keeps (commit 196f6b8)
LBFGS_SETTINGS = {"lr": 0.1, "max_iter": 50, "tolerance_grad": 1e-9, "tolerance_change": 1e-9}
# label_to_score (v2.0 show_result.py) as assistant A's score; it also reads the mirrored spellings (A<B ...),
# which v0.1's get_battles_from_row skipped silently. Our judge parser emits only the first five.
A_SCORE = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0,
            "A<<B": 0.0, "A<B": 0.0, "B=A": 0.5, "B<A": 1.0, "B<<A": 1.0}
LABELS = tuple(A_SCORE)
_STRONG = ("A>>B", "B>>A", "A<<B", "B<<A")
JUDGMENT_COLUMNS = ("question_id", "model", "baseline", "game", "verdict")
_COUNTS = {(1.0, True): "n_strong_win", (1.0, False): "n_win", (0.5, False): "n_tie", (0.0, False): "n_loss",
           (0.0, True): "n_strong_loss"}
COLUMNS = ("model", "score", "ci_lower", "ci_upper", "ci_minus", "ci_plus", "n_judgments", "n_unparsed",
           "n_battles", *_COUNTS.values(), "note", "version", "category", "baseline", "interval", "control",
           "control_fit")


def _show(value) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_judgments(judgments, columns: Sequence[str] = JUDGMENT_COLUMNS) -> pd.DataFrame:
    """The judgments as a frame plus `score` (the model's, NaN where unparsed) and `strong`; ValueError naming
    the first bad value."""
    if isinstance(judgments, pd.DataFrame):
        df = judgments.reset_index(drop=True)
    elif isinstance(judgments, Iterable) and not isinstance(judgments, (str, bytes, Mapping)):
        rows = list(judgments)
        df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(columns))
    else:
        raise TypeError(f"judgments must be a pandas DataFrame or a list of dicts, not {type(judgments).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"judgments lack column(s) {missing}; expected columns {', '.join(columns)}")
    for col in ("question_id", "model", "baseline"):
        if df[col].isna().any():
            i = df.index[df[col].isna()][0]
            raise ValueError(f"judgments row {i}: `{col}` is missing; every judgment needs a {col}")
    same = df.index[df["model"] == df["baseline"]]
    if len(same):
        raise ValueError(f"judgments row {same[0]}: model {_show(df.at[same[0], 'model'])} is its own baseline")
    game = pd.to_numeric(df["game"], errors="coerce")
    bad = df.index[~game.isin([1, 2])]
    if len(bad):
        raise ValueError(f"judgments row {bad[0]}: unknown game {_show(df.at[bad[0], 'game'])}; expected 1 "
                         "(baseline is assistant A) or 2 (baseline is assistant B)")
    a_score = df["verdict"].map(A_SCORE)
    bad = df.index[df["verdict"].notna() & a_score.isna()]
    if len(bad):
        raise ValueError(f"judgments row {bad[0]}: unknown verdict label {_show(df.at[bad[0], 'verdict'])}; expected "
                         f"one of {', '.join(LABELS)}, or None for a judgment whose label could not be read")
    dup = df.duplicated(["question_id", "model", "baseline", "game"], keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        raise ValueError(f"question {_show(row['question_id'])} game {row['game']} of model {_show(row['model'])} "
                         "is judged more than once; give one verdict per game")
    # Game 1 shows the baseline as A, so the model's score is 1 - A's (load_judgments: `1 - s` for games[0]).
    return df.assign(game=game.astype(int), score=np.where(game == 1, 1.0 - a_score, a_score),
                     strong=df["verdict"].isin(_STRONG))


def battles_from_judgments(judgments, weight: int = WEIGHT) -> pd.DataFrame:
    """Battles from judgments (columns question_id, model, baseline, game, verdict, and any others, e.g. category).

    One row per parsed judgment, in the judgments' order, with `score` the model's (1 win, 0.5 tie, 0 loss);
    a strong verdict is `weight` identical rows (get_battles_from_row: `[output] * weight`).
    """
    return _battles(_check_judgments(judgments), weight)


def _battles(df: pd.DataFrame, weight: int) -> pd.DataFrame:
    if not isinstance(weight, (int, np.integer)) or weight < 1:
        raise ValueError(f"weight must be a positive integer (Arena-Hard: {WEIGHT}), not {weight!r}")
    parsed = df[df["score"].notna()]
    repeat = np.where(parsed["strong"], weight, 1)
    return parsed.loc[parsed.index.repeat(repeat)].drop(columns="strong").reset_index(drop=True)


def position_consistency(judgments) -> dict[str, float]:
    """Per model, the share of questions whose two games agree on the outcome (win / tie / loss for the model)
    once the swap is undone, over the questions with both games parsed; NaN where there is none. A judge that
    prefers a position disagrees with itself (the Arena-Hard paper judges in both orders for this reason)."""
    df = _check_judgments(judgments)
    games = df.pivot_table(index=["model", "question_id"], columns="game", values="score", aggfunc="first")
    both = games.reindex(columns=[1, 2]).dropna()
    agree = (both[1] == both[2]).groupby(level="model").mean()
    return {m: float(agree.get(m, np.nan)) for m in dict.fromkeys(df["model"])}


# ------------------------------------------------------------------------------------------------
# the three estimators: each returns (score, lower, upper) as win rates in [0, 1], one per model


def _logit(p: np.ndarray) -> np.ndarray:
    # Infinite ratings clipped far enough out that interpolating with them still gives a win rate of 1 (or 0).
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.log(p / (1.0 - p)), -1e12, 1e12)


def _v01(code, s, k, rng, num_rounds):
    def rates(i):
        with np.errstate(invalid="ignore"):
            return np.bincount(code[i], s[i], k) / np.bincount(code[i], minlength=k)

    boot = _logit(np.stack([rates(i) for i in rng.integers(0, len(s), (num_rounds, len(s)))]))
    # get_bootstrap_result pools every model's battles; show_result takes the percentiles of the Elo ratings
    # (linear in the log-odds), then turns them into win rates.
    lower, upper = (expit(np.nanpercentile(boot, q, axis=0)) for q in (2.5, 97.5))
    return rates(np.arange(len(s))), lower, upper


def _v20(code, s, k, rng, num_rounds):
    boot = np.empty((num_rounds, k))
    for m in range(k):  # models in sorted order, as groupby("model") visits them
        own = s[code == m]
        boot[:, m] = own[rng.integers(0, len(own), (num_rounds, len(own)))].mean(axis=1)
    return boot.mean(axis=0), np.quantile(boot, 0.05, axis=0), np.quantile(boot, 0.95, axis=0)


def _fit_converged(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Coefficients of the unpenalised, intercept-free logistic fit of battle scores s in [0, 1] on x: bt_loss's
    summed cross-entropy, minimised by Newton's method to convergence."""
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        p = expit(x @ beta)
        # lstsq: a column without battles in a resample (or a diverging rating) leaves the Hessian singular.
        step = np.linalg.lstsq((x * (p * (1 - p))[:, None]).T @ x, x.T @ (s - p), rcond=None)[0]
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def _fit_show_result(x, s):
    """fit_pairwise_model(loss_type="bt") of arena-hard-auto's utils/math_utils.py: x and s float32 tensors, the
    coefficients after one LBFGS.step of LBFGS_SETTINGS from 0.5 each."""
    import torch  # here, not at the top: it takes seconds to import and only this fit needs it

    w = torch.full((x.shape[1],), 0.5, dtype=torch.float32, requires_grad=True)  # BTModel: constant_(..., 0.5)
    opt = torch.optim.LBFGS([w], **LBFGS_SETTINGS)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, s, reduction="sum")  # bt_loss
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _style_features(battles, baseline, control_features, metadata, dtype=np.float64) -> np.ndarray:
    """show_result.py v2.0 print_leaderboard_with_style_features: model vs baseline style per battle, computed
    in `dtype` (the repo: float32, standardised by torch)."""
    tokenizers = set()

    def style(model, qid):
        try:
            meta = metadata[model][qid]
            tokenizers.add(meta.get("tokenizer", "o200k_base"))  # arena-hard's files: tiktoken for gpt-4o
            return [meta["token_len"], *(sum(meta[k].values()) for k in ("header_count", "list_count", "bold_count"))]
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"metadata for {model!r}'s answer to question {qid!r} is missing or incomplete ({e!r}); "
                             "pass metadata={model: {question_id: answer_metadata(answer)}} for every model "
                             "and the baseline") from None

    m = np.array([style(a, q) for a, q in zip(battles["model"], battles["question_id"])], dtype).reshape(-1, 4)
    b = np.array([style(baseline, q) for q in battles["question_id"]], dtype).reshape(-1, 4)
    if len(tokenizers) > 1:
        raise ValueError(f"answer metadata counts tokens with different tokenizers {sorted(tokenizers)}; the length "
                         "ratio needs one: recompute it with answer_metadata (install tiktoken for arena-hard's)")
    with np.errstate(divide="ignore", invalid="ignore"):
        # Two empty answers differ in no length (the repo asserts on the 0 / 0 and stops).
        length = np.nan_to_num((m[:, 0] - b[:, 0]) / (m[:, 0] + b[:, 0]))
    dm, db = m[:, 1:] / (m[:, :1] + 1), b[:, 1:] / (b[:, :1] + 1)
    f = np.column_stack([length, (dm - db) / (dm + db + 1)])
    if dtype == np.float32:  # torch's float32 mean and std round otherwise than numpy's: the repo's own
        import torch

        t = torch.from_numpy(np.ascontiguousarray(f))
        mean, std = (x.numpy() for x in (t.mean(dim=0), t.std(dim=0)))
    else:
        mean, std = f.mean(axis=0), f.std(axis=0, ddof=1)
    # torch.std is the n - 1 one. A constant covariate (e.g. no bold text anywhere) explains nothing: it is
    # left at 0 where the repo's NaN assert would stop.
    ok = np.isfinite(std) & (std > 0)
    f = np.where(ok, (f - mean) / np.where(ok, std, 1), 0).astype(dtype)
    # standardised before the choice, as there: torch rounds a column's sum otherwise when it stands alone
    return f[:, [i for i, name in enumerate(("length",) + ("markdown",) * 3) if name in control_features]]


def _style_controlled(code, s, k, rng, num_rounds, features, fit, base):
    """(median, 5%, 95%) over bootstrap rounds of the model's win rate vs the baseline; `base` is the baseline's
    place among the sorted model names (show_result's one-hot column order)."""
    draws = rng.integers(0, len(s), (num_rounds, len(s)))  # bootstrap_pairwise_model's draws
    boot = np.full((num_rounds, k), np.nan)
    if fit == "show_result":
        import torch

        col = np.arange(k) + (np.arange(k) >= base)  # the models' columns around the baseline's
        onehot = np.zeros((len(s), k + 1), np.float32)
        onehot[np.arange(len(s)), col[code]] = 1
        onehot[:, base] = -1  # one_hot_encode keeps the baseline's column
        x = torch.from_numpy(np.hstack([onehot, features]))
        y = torch.from_numpy(s.astype(np.float32))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tensors this small only wait on each other's threads: 3x faster on 2 cores
        try:
            for r, i in enumerate(draws):
                i = torch.from_numpy(i)
                c = torch.exp(_fit_show_result(x[i], y[i])[:k + 1])
                boot[r] = (c / (c + c[base])).numpy()[col]  # to_winrate_probabilities, float32
        finally:
            torch.set_num_threads(threads)
    else:
        x = np.hstack([np.eye(k)[code], features])  # the baseline's -1 column dropped: it fixes its rating at 0
        for r, i in enumerate(draws):
            present = np.bincount(code[i], minlength=k) > 0
            boot[r, present] = expit(_fit_converged(x[i], s[i])[:k][present])
    return tuple(np.nanquantile(boot, q, axis=0) for q in (0.5, 0.05, 0.95))


# ------------------------------------------------------------------------------------------------


def arena_hard_score(judgments, baseline: str | None = None, num_rounds: int = NUM_ROUNDS, seed: int = 0,
                     weight: int = WEIGHT, version: str = "v0.1", category: str | None = None,
                     control_features: Sequence[str] = (), metadata: Mapping | None = None,
                     control_fit: str = "show_result") -> pd.DataFrame:
    """Arena-Hard score of every model in `judgments` against the baseline, one row per model, best first.

    judgments: rows (dicts or a DataFrame) with question_id, model, baseline, game (1: baseline is A, 2: swapped)
      and verdict (a label such as "A>>B", None where unparsed); version "v2.0" also needs `category`.
    baseline: v0.1 gpt-4-0314, v2.0 the category's (V2_BASELINES) unless given.
    category: v2.0 only, the leaderboard to score (hard_prompt by default); other categories' rows are left out.
    control_features: any of "length", "markdown" for style control, which needs metadata:
      {model: {question_id: answer_metadata(answer)}} for every model and the baseline.
    control_fit: how style control fits each round: "show_result" (its 50 float32 L-BFGS steps, whose numbers
      leaderboards print) or "converged" (the maximum-likelihood fit); see the module docstring.

    Columns: score, ci_lower, ci_upper (percent), ci_minus = score - ci_lower, ci_plus = ci_upper - score,
    n_judgments (games, unparsed included), n_unparsed, n_battles (strong verdicts counted `weight` times),
    n_strong_win ... n_strong_loss (verdicts from the model's side), note (why a score is 100, 0 or NaN), and
    how it was computed: version, category, baseline, interval (0.95 or 0.9), control, control_fit (None
    without style control).
    Bootstrap draws come from np.random.default_rng(seed) (the repo: a global np.random seed): v0.1 and style
    control draw rng.integers(0, n, (num_rounds, n)) over the n battles in order; v2.0 draws the same for each
    model's battles, model by model in sorted order. The same seed gives the same frame.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown Arena-Hard version {version!r}; choose one of {', '.join(VERSIONS)}")
    if not isinstance(num_rounds, (int, np.integer)) or num_rounds < 1:
        raise ValueError(f"num_rounds must be a positive integer (Arena-Hard: {NUM_ROUNDS}), not {num_rounds!r}")
    unknown = [f for f in control_features if f not in CONTROL_FEATURES]
    if unknown or isinstance(control_features, str):
        raise ValueError(f"unknown control feature(s) {unknown or control_features!r}; choose from "
                         f"{', '.join(CONTROL_FEATURES)} (a list, as show_result's --control-features)")
    if control_fit not in CONTROL_FITS:
        raise ValueError(f"unknown control fit {control_fit!r}; choose {' or '.join(CONTROL_FITS)} (show_result: "
                         "arena-hard-auto's own L-BFGS, as leaderboards print it; converged: the exact optimum)")
    if control_features and metadata is None:
        raise ValueError("style control needs metadata={model: {question_id: answer_metadata(answer)}} "
                         "for every model and the baseline")
    if version == "v0.1":
        if category is not None:
            raise ValueError(f"category {category!r} applies to version v2.0; v0.1 has one set of 500 questions")
        df = _check_judgments(judgments)
        baseline = baseline or BASELINE
    else:
        df = _check_judgments(judgments, JUDGMENT_COLUMNS + ("category",))
        category = category or V2_CATEGORY
        if category not in set(df["category"]) and len(df):
            raise ValueError(f"no judgment in category {category!r}; the judgments have {sorted(set(df['category']))}")
        if not baseline and category not in V2_BASELINES:
            raise ValueError(f"category {category!r} has no v2.0 baseline (known: {', '.join(V2_BASELINES)}); "
                             "pass baseline=")
        baseline = baseline or V2_BASELINES[category]
        df = df[df["category"] == category].reset_index(drop=True)
    others = sorted(set(df["baseline"]) - {baseline}, key=str)
    if others:
        raise ValueError(f"judgments compare against baseline {others[0]!r}, but the score is against {baseline!r}; "
                         "Arena-Hard judges every model against the one baseline (pass baseline= to change it)")
    counts = df[df["score"].notna()].groupby(["model", "score", "strong"]).size()
    n_judgments, n_unparsed = df.groupby("model").size(), df["score"].isna().groupby(df["model"]).sum()
    if version == "v2.0":  # load_judgments drops a question unless both games have a verdict
        df = df.assign(score=df["score"].where(df.groupby(["model", "question_id"])["score"].transform("count") == 2))
    battles = _battles(df, weight)
    rated = sorted(set(battles["model"]), key=str)
    code, s = pd.Categorical(battles["model"], categories=rated).codes, battles["score"].to_numpy(float)
    rng, est = np.random.default_rng(seed), (np.array([]),) * 3
    if rated:
        if control_features:
            dtype = np.float32 if control_fit == "show_result" else np.float64
            features = _style_features(battles, baseline, control_features, metadata, dtype)
            base = sorted([*rated, baseline], key=str).index(baseline)
            est = _style_controlled(code, s, len(rated), rng, num_rounds, features, control_fit, base)
        else:
            est = (_v01 if version == "v0.1" else _v20)(code, s, len(rated), rng, num_rounds)

    rows = []
    for model in dict.fromkeys(df["model"]):
        score, lo, hi = (100.0 * float(e[rated.index(model)]) if model in rated else np.nan for e in est)
        n_battles = int((battles["model"] == model).sum())
        note = ("no parseable judgment: score undefined" if not n_battles else
                "won every parseable battle" if score == 100 else "lost every parseable battle" if score == 0 else "")
        rows.append({"model": model, "score": score, "ci_lower": lo, "ci_upper": hi, "ci_minus": score - lo,
                     "ci_plus": hi - score, "n_judgments": int(n_judgments[model]),
                     "n_unparsed": int(n_unparsed[model]), "n_battles": n_battles,
                     **{c: int(counts.get((model, *key), 0)) for key, c in _COUNTS.items()}, "note": note,
                     "version": version, "category": category, "baseline": baseline,
                     "interval": 0.95 if version == "v0.1" and not control_features else 0.9,
                     "control": " ".join(control_features), "control_fit": control_fit if control_features else None})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.index = pd.Index(table["model"].tolist())
    return table.sort_values("score", ascending=False, na_position="last", kind="stable")


def format_score(row) -> str:
    """`15.8 (-1.7, +1.9)` from a row of `arena_hard_score` (a Series or dict); `n/a` without a score."""
    score = float(row["score"])
    if np.isnan(score):
        return "n/a"
    down, up = score - float(row["ci_lower"]), float(row["ci_upper"]) - score
    # A bootstrap interval may miss the point score (v2.0's score is the rounds' mean); show the true sign then.
    return f"{score:.1f} ({'-' if down >= 0 else '+'}{abs(down):.1f}, {'+' if up >= 0 else '-'}{abs(up):.1f})"


# ------------------------------------------------------------------------------------------------
# answer metadata for style control


@functools.lru_cache(maxsize=1)
def _tiktoken():
    """arena-hard's utils/add_markdown_info.py counts tokens with tiktoken's gpt-4o encoding (o200k_base); None
    where tiktoken or its encoding file (downloaded on first use) is unavailable."""
    try:
        import tiktoken

        return tiktoken.get_encoding("o200k_base")
    except Exception:  # noqa: BLE001  (not installed, or offline: the fallback below says which was used)
        return None


def answer_metadata(text: str, tokenizer=None) -> dict:
    """An answer's style metadata as arena-hard writes it in model_answer files (utils/add_markdown_info.py):
    token_len, header_count {h1..h6}, list_count {ordered, unordered}, bold_count {"**", "__"}, plus `tokenizer`
    naming what counted the tokens.

    tokenizer: None for tiktoken's o200k_base as arena-hard uses, or whitespace-separated words where tiktoken
    cannot be loaded; "whitespace"; or an object with `encode` (e.g. the answer model's transformers tokenizer).
    Compare answers only with metadata from one tokenizer (style control checks it).
    """
    if not isinstance(text, str):
        raise TypeError(f"answer_metadata needs the answer text, not {type(text).__name__}")
    enc = _tiktoken() if tokenizer is None else None
    if enc is not None:
        name, n_tokens = "o200k_base", len(enc.encode(text, disallowed_special=()))
    elif tokenizer is None or tokenizer == "whitespace":
        name, n_tokens = "whitespace", len(text.split())
    else:
        try:
            ids = tokenizer.encode(text, add_special_tokens=False)
        except TypeError:
            ids = tokenizer.encode(text)
        name, n_tokens = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__), len(ids)
    # add_markdown_info.py removes each code block's content (the fences stay) by str.replace, so that markdown
    # inside code is not counted; the replace also removes that content wherever else it occurs, as there.
    for block in re.findall(r"```([^`]*)```", text):
        text = text.replace(block, "")

    def count(pattern):
        return len(re.findall(pattern, text, re.MULTILINE))

    return {"token_len": n_tokens, "header_count": {f"h{k}": count(rf"^#{{{k}}}\s") for k in range(1, 7)},
            "list_count": {"ordered": count(r"^\s*\d+\.\s"), "unordered": count(r"^\s*[-*+]\s")},
            "bold_count": {"**": count(r"\*\*[^*\n]+\*\*"), "__": count(r"__[^_\n]+__")}, "tokenizer": name}
