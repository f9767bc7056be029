"""Arena-Hard v0.1 scoring: judge verdicts -> battles -> Bradley-Terry ratings -> win rate vs the baseline.

This follows `show_result.py` of lmarena-ai/arena-hard-auto (formerly lm-sys/arena-hard-auto) as it stood
for v0.1 (mid-2024, the version the MAGPIE paper reports):

* Every question is judged twice against the baseline (gpt-4-0314): game 1 shows the baseline as
  assistant A and the model as B, game 2 swaps them, so that position bias cancels.
* Each judgment becomes battles with model_a = baseline and model_b = model (in both games; only the
  winner is read through the swap). A strong verdict (`A>>B`, `B>>A`) is repeated WEIGHT = 3 times, a
  weak one counts once, `A=B` is one tie. A verdict the judge's text did not yield (None) adds nothing.
* Ratings come from a Bradley-Terry model fit by unpenalised, intercept-free logistic regression on
  the Elo scale (SCALE = 400, BASE = 10, INIT_RATING = 1000), a tie counting as half a win each way,
  the baseline anchored at 1000.
* The score is the predicted win rate against the baseline in percent; its 95% interval comes from 100
  bootstrap rounds that resample all battles (pooled over models) with replacement, taking the 2.5% and
  97.5% percentiles of each model's rating and turning those into win rates. It is shown as
  `15.8 (-1.7, +1.9)`.

Where this module decides for itself (the repo crashes or is silent there):

* A model that wins (or loses) every parseable battle has no finite maximum-likelihood rating. Its
  rating is +inf (-inf) and its score 100.0 (0.0), with a `note`; the same rule applies in every
  bootstrap round, so such a model's interval is (100.0, 100.0). In general the rule is Ford's
  condition: ratings are fit on the models that are strongly connected to the anchor in the
  "scored at least a tie against" graph; models above that set are +inf, below it -inf, and models
  that are neither (not comparable with the anchor) NaN. The repo instead raises sklearn's
  "needs samples of at least 2 classes" when one model is scored alone, and with other models present
  returns whatever large finite rating lbfgs stops at (a score that rounds to 100.0).
* A model with no parseable judgment gets a NaN score, with `n_unparsed` saying why.
* An unknown verdict label or a missing column raises ValueError (the repo silently skips such labels).

Arena-Hard judges each model only against the baseline (a star design). There the Bradley-Terry
maximum-likelihood win rate of each model equals its own weighted win rate against the baseline (ties as
halves), so the regression matters only for the display on the Elo scale and for other designs.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components
from sklearn.linear_model import LogisticRegression

# Arena-Hard v0.1 constants (show_result.py: compute_mle_elo, get_battles_from_judgment, --num-rounds).
SCALE, BASE, INIT_RATING = 400, 10, 1000
WEIGHT = 3
BASELINE = "gpt-4-0314"
NUM_ROUNDS = 100
LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
JUDGMENT_COLUMNS = ("question_id", "model", "baseline", "game", "verdict")
BATTLE_COLUMNS = ("model_a", "model_b", "winner")
WINNERS = ("model_a", "model_b", "tie")
# Chatbot Arena's battles also carry "tie (bothbad)"; compute_mle_elo counts it as a tie, so do we.
_TIES = ("tie", "tie (bothbad)")

# Label -> (winner in judge positions, strong). Which position is the model depends on the game.
_LABEL_MEANING = {"A>>B": ("A", True), "A>B": ("A", False), "A=B": (None, False),
                  "B>A": ("B", False), "B>>A": ("B", True)}
# The position of the baseline in each game (gen_judgment.py swaps the answers for the second game).
_BASELINE_POSITION = {1: "A", 2: "B"}
# Per-model verdict counts, from the model's side, named by (outcome, strong).
_COUNT_COLUMNS = {("win", True): "n_strong_win", ("win", False): "n_win", ("tie", False): "n_tie",
                  ("loss", False): "n_loss", ("loss", True): "n_strong_loss"}


# ------------------------------------------------------------------------------------------------
# judgments -> battles


def _as_frame(rows, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        df = rows.copy()
    elif isinstance(rows, Iterable) and not isinstance(rows, (str, bytes, Mapping)):
        rows = list(rows)
        df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(columns))
    else:
        raise TypeError(f"{what} must be a pandas DataFrame or a list of dicts, not {type(rows).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lack column(s) {missing}; expected columns {', '.join(columns)}")
    return df.reset_index(drop=True)


def _show(value) -> str:
    """repr of a cell for an error message, numpy scalars as plain Python values (3, not np.int64(3))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _check_judgments(judgments) -> pd.DataFrame:
    """The judgments as a frame with a clean int `game` and `verdict` None where unparsed; ValueError
    naming the first bad value otherwise."""
    df = _as_frame(judgments, JUDGMENT_COLUMNS, "judgments")
    for col in ("question_id", "model", "baseline"):
        bad = df.index[df[col].map(_is_missing)]
        if len(bad):
            raise ValueError(f"judgments row {bad[0]}: `{col}` is missing; every judgment needs a {col}")
    same = df.index[df["model"] == df["baseline"]]
    if len(same):
        raise ValueError(f"judgments row {same[0]}: model {_show(df.at[same[0], 'model'])} is its own baseline")

    def game_of(value):
        # 1 and 2 as ints or whole floats (a DataFrame with NaN elsewhere turns ints into floats)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            return None
        return int(value) if value in (1, 2) else None

    games = df["game"].map(game_of)
    bad = df.index[games.isna()]
    if len(bad):
        raise ValueError(f"judgments row {bad[0]}: unknown game {_show(df.at[bad[0], 'game'])}; expected 1 "
                         "(baseline is assistant A) or 2 (baseline is assistant B)")
    df["game"] = games.astype(int)

    # Plain object values: pandas 3 stores text as a string dtype that turns None back into NaN.
    verdicts = pd.Series([None if _is_missing(v) else v for v in df["verdict"].astype(object)], index=df.index,
                         dtype=object)
    bad = df.index[[v is not None and v not in LABELS for v in verdicts]]
    if len(bad):
        raise ValueError(f"judgments row {bad[0]}: unknown verdict label {_show(df.at[bad[0], 'verdict'])}; expected "
                         f"one of {', '.join(LABELS)}, or None for a judgment whose label could not be read")
    df["verdict"] = verdicts.astype(object)

    dup = df.duplicated(["question_id", "model", "baseline", "game"], keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        raise ValueError(f"question {_show(row['question_id'])} game {row['game']} of model {_show(row['model'])} "
                         f"vs {_show(row['baseline'])} is judged more than once; give one verdict per game")
    return df


def _model_outcome(game: int, verdict: str | None) -> tuple[str, bool] | None:
    """(outcome for the model under test: win/loss/tie, strong) or None for an unparsed verdict."""
    if verdict is None:
        return None
    position, strong = _LABEL_MEANING[verdict]
    if position is None:
        return "tie", False
    return ("loss" if position == _BASELINE_POSITION[game] else "win"), strong


def position_consistency(judgments) -> dict[str, float]:
    """Per model, the share of questions whose two games agree on the winner (win / tie / loss for the
    model) once the swapped order is undone, over the questions with both games parsed. A judge that
    reads the answers agrees with itself; one that prefers a position does not (the Arena-Hard paper
    judges in both orders for this reason). NaN for a model with no question fully parsed."""
    df = _check_judgments(judgments)
    out = {}
    for model, rows in df.groupby("model", sort=False):
        outcomes: dict = {}
        for q, game, verdict in zip(rows["question_id"], rows["game"], rows["verdict"]):
            o = _model_outcome(int(game), None if _is_missing(verdict) else verdict)
            outcomes.setdefault(q, {})[int(game)] = None if o is None else o[0]
        both = [g for g in outcomes.values() if g.get(1) is not None and g.get(2) is not None]
        out[model] = sum(g[1] == g[2] for g in both) / len(both) if both else float("nan")
    return out


def battles_from_judgments(judgments, weight: int = WEIGHT) -> pd.DataFrame:
    """Arena-Hard battles from judgments (columns question_id, model, baseline, game, verdict).

    Returns columns question_id, game, model_a (always the baseline, as the repo writes it), model_b
    (the model under test) and winner ("model_a" | "model_b" | "tie"); a strong verdict is `weight`
    identical rows. Unparsed verdicts (None/NaN) give no battle; `battles.attrs["n_unparsed"]` and
    `battles.attrs["n_judgments"]` hold the per-model counts.
    """
    if not isinstance(weight, (int, np.integer)) or weight < 1:
        raise ValueError(f"weight must be a positive integer (Arena-Hard: {WEIGHT}), not {weight!r}")
    df = _check_judgments(judgments)
    rows = []
    for rec in df.itertuples(index=False):
        outcome = _model_outcome(rec.game, rec.verdict)
        if outcome is None:
            continue
        result, strong = outcome
        winner = {"win": "model_b", "loss": "model_a", "tie": "tie"}[result]
        battle = {"question_id": rec.question_id, "game": rec.game, "model_a": rec.baseline,
                  "model_b": rec.model, "winner": winner}
        # get_battles_from_judgment appends `[output] * weight`: a strong verdict is that many battles,
        # which the bootstrap then resamples one by one.
        rows += [battle] * (weight if strong else 1)
    battles = pd.DataFrame(rows, columns=["question_id", "game", "model_a", "model_b", "winner"])
    unparsed = df["verdict"].isna()
    models = list(dict.fromkeys(df["model"]))
    battles.attrs["n_judgments"] = {m: int((df["model"] == m).sum()) for m in models}
    battles.attrs["n_unparsed"] = {m: int((unparsed & (df["model"] == m)).sum()) for m in models}
    return battles


# ------------------------------------------------------------------------------------------------
# Bradley-Terry


def _fit_ratings(a: np.ndarray, b: np.ndarray, s: np.ndarray, n: int, anchor: int) -> np.ndarray:
    """Elo-scale maximum-likelihood ratings of n players from battles (a, b, score of a in {0, .5, 1}).

    The anchor is INIT_RATING (= 1000). Players whose rating diverges relative to the anchor are +-inf,
    players not comparable with it NaN (see the module docstring).
    """
    ratings = np.full(n, np.nan)
    if not (np.any(a == anchor) or np.any(b == anchor)):
        return ratings
    # One row per unordered pair, lower index first: the likelihood only depends on these sums. Counting
    # a tie as 0.5 a win each way is what compute_mle_elo's "duplicate every battle, one copy of a tie is
    # an A win" does, up to a factor of 2 on every weight, which leaves the maximum where it is.
    swap = a > b
    lo, hi = np.where(swap, b, a), np.where(swap, a, b)
    s_lo = np.where(swap, 1.0 - s, s)
    pairs, inv = np.unique(lo * n + hi, return_inverse=True)
    wins = np.bincount(inv, weights=s_lo)
    losses = np.bincount(inv, weights=1.0 - s_lo)
    p_lo, p_hi = pairs // n, pairs % n

    # Ford's condition: the MLE is finite exactly within a strongly connected component of the graph
    # with an edge i -> j whenever i scored something (a win or a tie) against j.
    src = np.concatenate([p_lo[wins > 0], p_hi[losses > 0]])
    dst = np.concatenate([p_hi[wins > 0], p_lo[losses > 0]])
    graph = csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    _, component = connected_components(graph, directed=True, connection="strong")
    core = component == component[anchor]
    beaten_by_anchor = np.zeros(n, bool)  # reachable from the anchor: rated below it
    beaten_by_anchor[breadth_first_order(graph, anchor, directed=True, return_predecessors=False)] = True
    beats_anchor = np.zeros(n, bool)  # the anchor is reachable from them: rated above it
    beats_anchor[breadth_first_order(graph.T.tocsr(), anchor, directed=True, return_predecessors=False)] = True
    ratings[beats_anchor & ~core] = np.inf
    ratings[beaten_by_anchor & ~core] = -np.inf
    ratings[anchor] = INIT_RATING

    free = np.flatnonzero(core & (np.arange(n) != anchor))
    if len(free):
        inner = core[p_lo] & core[p_hi]
        p_lo, p_hi, wins, losses = p_lo[inner], p_hi[inner], wins[inner], losses[inner]
        # The anchor's coefficient is fixed at 0 by leaving out its column: the repo fits all columns
        # and shifts the anchor to 1000 afterwards, which gives the same ratings.
        column = np.full(n, -1)
        column[free] = np.arange(len(free))
        m = len(p_lo)
        x = np.zeros((2 * m, len(free)))
        rows = np.arange(2 * m)
        both_lo, both_hi = np.tile(column[p_lo], 2), np.tile(column[p_hi], 2)
        # compute_mle_elo: X[model_a] = +log(BASE), X[model_b] = -log(BASE), so coef is on the log10 scale
        x[rows[both_lo >= 0], both_lo[both_lo >= 0]] = math.log(BASE)
        x[rows[both_hi >= 0], both_hi[both_hi >= 0]] = -math.log(BASE)
        y = np.concatenate([np.ones(m), np.zeros(m)])
        w = np.concatenate([wins, losses])
        keep = w > 0
        # No intercept, no penalty (C=inf is sklearn >= 1.8's spelling of the repo's penalty=None), the
        # repo's tol=1e-8. Both classes are present: within a strongly connected set of 2+ players
        # some lower-indexed player loses somewhere, or the edges could not close a cycle.
        lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8, max_iter=10_000)
        lr.fit(x[keep], y[keep], sample_weight=w[keep])
        ratings[free] = INIT_RATING + SCALE * lr.coef_[0]
    return ratings


def _encode_battles(battles) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    df = _as_frame(battles, BATTLE_COLUMNS, "battles")
    winner = df["winner"].map(lambda v: "tie" if v in _TIES else v)
    bad = df.index[~winner.isin(WINNERS)]
    if len(bad):
        raise ValueError(f"battles row {bad[0]}: unknown winner {_show(df.at[bad[0], 'winner'])}; expected one of "
                         f"{', '.join(WINNERS)}")
    codes, models = pd.factorize(pd.concat([df["model_a"], df["model_b"]], ignore_index=True))
    n = len(df)
    score = winner.map({"model_a": 1.0, "model_b": 0.0, "tie": 0.5}).to_numpy(float)
    return list(models), codes[:n], codes[n:], score


def bradley_terry(battles, anchor: str = BASELINE) -> pd.Series:
    """Bradley-Terry ratings on the Elo scale from battles (columns model_a, model_b, winner).

    The anchor is 1000; any number of models, in any pairing. Returns a Series indexed by model,
    highest first: +inf / -inf for a model whose rating diverges (it won / lost everything that links
    it to the anchor), NaN for one not comparable with the anchor. ValueError if the anchor is in no
    battle.
    """
    models, a, b, score = _encode_battles(battles)
    if anchor not in models:
        raise ValueError(f"anchor {anchor!r} is in no battle; battles name {models[:10]}")
    ratings = _fit_ratings(a, b, score, len(models), models.index(anchor))
    return pd.Series(ratings, index=models, name="rating").sort_values(ascending=False, na_position="last")


def win_rate_vs(ratings, baseline: str = BASELINE) -> pd.Series:
    """Predicted probability (0..1) that each model beats `baseline` (predict_win_rate in the repo):
    1 / (1 + BASE ** ((r_baseline - r_model) / SCALE)); the baseline itself is 0.5, +inf is 1, -inf 0."""
    ratings = pd.Series(ratings, dtype=float)
    if baseline not in ratings.index:
        raise ValueError(f"baseline {baseline!r} has no rating; rated models are {list(ratings.index)[:10]}")
    with np.errstate(over="ignore", invalid="ignore"):
        rates = 1.0 / (1.0 + np.power(float(BASE), (ratings[baseline] - ratings) / SCALE))
    rates[baseline] = 0.5  # the repo fills the diagonal of its win-rate table with 0.5
    return rates.rename("win_rate")


# ------------------------------------------------------------------------------------------------
# score with bootstrap interval


def _quantile(values: np.ndarray, q: float) -> float:
    """np.percentile's default (linear between order statistics), over the non-NaN values, where an
    infinite end of the interpolation is the answer (the nearer end if both are infinite)."""
    x = np.sort(values[~np.isnan(values)])
    if not len(x):
        return math.nan
    h = (len(x) - 1) * q
    lo, hi = math.floor(h), math.ceil(h)
    frac = h - lo
    if frac == 0 or x[lo] == x[hi]:
        return float(x[lo])
    if np.isinf(x[lo]) and np.isinf(x[hi]):
        return float(x[lo] if frac < 0.5 else x[hi])
    if np.isinf(x[lo]) or np.isinf(x[hi]):
        return float(x[lo] if np.isinf(x[lo]) else x[hi])
    return float(x[lo] + (x[hi] - x[lo]) * frac)


def _to_percent(rating: float) -> float:
    if math.isnan(rating):
        return math.nan
    with np.errstate(over="ignore"):
        return float(100.0 / (1.0 + np.power(float(BASE), (INIT_RATING - rating) / SCALE)))


def arena_hard_score(judgments, baseline: str = BASELINE, num_rounds: int = NUM_ROUNDS, seed: int = 0,
                     weight: int = WEIGHT) -> pd.DataFrame:
    """Arena-Hard score of every model in `judgments` against `baseline`, one row per model.

    Columns: model, score (win rate vs the baseline in percent, from the fit on all battles), ci_lower,
    ci_upper (percent, from the 2.5% / 97.5% bootstrap percentiles of the rating), ci_minus = score -
    ci_lower and ci_plus = ci_upper - score (what `format_score` shows), rating (Elo scale, baseline =
    1000), n_judgments (games, unparsed included), n_unparsed, n_battles (strong verdicts counted
    `weight` times), n_strong_win, n_win, n_tie, n_loss, n_strong_loss (verdicts from the model's side)
    and note (why a score is 100, 0 or NaN; empty otherwise). Indexed by model, best first.

    Bootstrap round r refits on the battles (in `battles_from_judgments` order) at the indices
    `rng.integers(0, n, n)`, rng = np.random.default_rng(seed), so the same seed gives the same frame.
    """
    if not isinstance(num_rounds, (int, np.integer)) or num_rounds < 1:
        raise ValueError(f"num_rounds must be a positive integer (Arena-Hard: {NUM_ROUNDS}), not {num_rounds!r}")
    df = _check_judgments(judgments)
    others = sorted(set(df["baseline"]) - {baseline}, key=str)
    if others:
        raise ValueError(f"judgments compare against baseline {others[0]!r}, but the score is against {baseline!r}; "
                         "Arena-Hard judges every model against the one baseline")
    battles = battles_from_judgments(df, weight=weight)
    models = list(battles.attrs["n_judgments"])

    ratings = pd.Series(math.nan, index=models, dtype=float)
    lower = pd.Series(math.nan, index=models, dtype=float)
    upper = pd.Series(math.nan, index=models, dtype=float)
    if len(battles):
        names, a, b, score = _encode_battles(battles)
        n, anchor = len(names), names.index(baseline)
        point = pd.Series(_fit_ratings(a, b, score, n, anchor), index=names)
        # get_bootstrap_result: `battles.sample(frac=1.0, replace=True)` num_round times, all models'
        # battles pooled; a seeded Generator here instead of the repo's np.random.seed(42).
        rng = np.random.default_rng(seed)
        boot = np.empty((num_rounds, n))
        for r in range(num_rounds):
            idx = rng.integers(0, len(a), len(a))
            boot[r] = _fit_ratings(a[idx], b[idx], score[idx], n, anchor)
        for k, name in enumerate(names):
            if name in ratings.index:
                ratings[name] = point[name]
                # The repo takes percentiles of the Elo ratings, then turns them into win rates.
                lower[name] = _quantile(boot[:, k], 0.025)
                upper[name] = _quantile(boot[:, k], 0.975)

    rows = []
    for model in models:
        mine = df[df["model"] == model]
        counts = dict.fromkeys(_COUNT_COLUMNS.values(), 0)
        for game, verdict in zip(mine["game"], mine["verdict"]):
            outcome = _model_outcome(game, verdict)
            if outcome is not None:
                counts[_COUNT_COLUMNS[outcome]] += 1
        n_battles = int((battles["model_b"] == model).sum()) if len(battles) else 0
        rating = float(ratings[model])
        pct, lo, hi = _to_percent(rating), _to_percent(float(lower[model])), _to_percent(float(upper[model]))
        if n_battles == 0:
            note = "no parseable judgment: score undefined"
        elif rating == math.inf:
            note = "won every parseable battle: the Bradley-Terry MLE diverges (rating +inf), score 100"
        elif rating == -math.inf:
            note = "lost every parseable battle: the Bradley-Terry MLE diverges (rating -inf), score 0"
        else:
            note = ""
        rows.append({"model": model, "score": pct, "ci_lower": lo, "ci_upper": hi, "ci_minus": pct - lo,
                     "ci_plus": hi - pct, "rating": rating, "n_judgments": battles.attrs["n_judgments"][model],
                     "n_unparsed": battles.attrs["n_unparsed"][model], "n_battles": n_battles, **counts,
                     "note": note})
    columns = ["model", "score", "ci_lower", "ci_upper", "ci_minus", "ci_plus", "rating", "n_judgments",
               "n_unparsed", "n_battles", *_COUNT_COLUMNS.values(), "note"]
    table = pd.DataFrame(rows, columns=columns)
    table.index = pd.Index(table["model"].tolist())
    return table.sort_values("score", ascending=False, na_position="last", kind="stable")


def format_score(row) -> str:
    """`15.8 (-1.7, +1.9)` from a row of `arena_hard_score` (a Series or dict); `n/a` without a score."""
    score = float(row["score"])
    if math.isnan(score):
        return "n/a"
    down, up = score - float(row["ci_lower"]), float(row["ci_upper"]) - score
    # A bootstrap interval may in odd cases miss the point score; show the true sign then.
    minus = f"-{down:.1f}" if down >= 0 else f"+{-down:.1f}"
    plus = f"+{up:.1f}" if up >= 0 else f"-{-up:.1f}"
    return f"{score:.1f} ({minus}, {plus})"
