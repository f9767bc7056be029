"""AlpacaEval 2 scoring: the win rate and the length-controlled win rate from pairwise judge annotations.

The paper (MAGPIE, Table 1) reports AlpacaEval 2's win rate (WR) and length-controlled win rate (LC) against the
gpt4_turbo reference. Both are computed here from an annotation table in alpaca_eval's layout, one row per
instruction:

    instruction, output_1 (baseline/reference), output_2 (model), generator_1, generator_2, preference[, index]

where `preference` is 1.0 when output_1 wins, 2.0 when output_2 wins, 1.5 for a tie (0 is alpaca_eval's legacy
tie code), any float in [1, 2] for weighted judges and NaN when the judge's answer could not be parsed.

The numbers come from alpaca_eval itself (`get_winrate`, and the GLM building blocks of
`alpaca_eval.metrics.glm_winrate`); this module only supplies what alpaca_eval fetches from the hub on its own:
the table of "gamed" annotations with the per-instruction difficulty (`df_gamed.csv`), which is taken as an
argument so that the metric can be computed offline and tested.

- Paper profile: `length_controlled_winrate(annotations, gamed=load_gamed())` is alpaca_eval's
  `length_controlled_v1`, the LC of the AlpacaEval 2 leaderboard.
- Offline `tiny` profile (`gamed=None`): alpaca_eval's `length_controlled_minimal` GLM (length term and model
  term only, no instruction difficulty, no regularisation towards the gamed baselines), which needs nothing from
  the hub. It is a documented stand-in, not the leaderboard's LC.
"""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
from huggingface_hub import hf_hub_download

log = logging.getLogger(__name__)

GAMED_REPO_ID = "tatsu-lab/alpaca_eval"
GAMED_FILENAME = "df_gamed.csv"
LC_V1 = "length_controlled_v1"
LC_MINIMAL = "length_controlled_minimal"
LC_MINIMAL_LABEL = "length_controlled_minimal (no gamed rows)"
# What the GLM reads from df_gamed.csv; its `model` column (which gamed baseline) is dropped, as alpaca_eval does.
GAMED_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")


def _glm():
    """alpaca_eval's GLM module, imported on first use (the import takes about a second)."""
    from . import import_alpaca_eval

    return import_alpaca_eval("alpaca_eval.metrics.glm_winrate")


def _require_columns(df: pd.DataFrame, columns, what: str, hint: str = "") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing} that the table lacks (it has {list(df.columns)})"
                         + (f"; {hint}" if hint else ""))


def win_rate(annotations: pd.DataFrame) -> dict:
    """AlpacaEval's win rate of output_2 (the model) over output_1 (the baseline), in percent.

    Returns alpaca_eval's `get_winrate` numbers (win_rate and standard_error in percent, n_wins, n_wins_base,
    n_draws, n_total, discrete_win_rate) plus `n_unparsed`, the number of NaN preferences.
    """
    annotations = pd.DataFrame(annotations)
    _require_columns(annotations, ["preference"], "win_rate")
    get_winrate = _glm().get_winrate  # the very function alpaca_eval's LC starts from

    # alpaca_eval counts 1.5 (and the legacy 0) as draws, then keeps only preferences in [1, 2]: NaN rows (unparsed
    # judge answers) leave every count and the mean, i.e. they are neither losses nor ties, and n_total is the
    # number of parsed rows (values outside [1, 2] are dropped the same way, silently). A weighted preference
    # counts in n_wins when > 1.5 but enters win_rate with its weight; discrete_win_rate rounds it first.
    # numpy scalars -> Python numbers, so that the results serialise to JSON as they are.
    out = {k: v.item() if isinstance(v, np.generic) else v for k, v in get_winrate(annotations[["preference"]]).items()}
    out["n_unparsed"] = int(pd.Series(annotations["preference"], dtype=float).isna().sum())
    return out


def _generators(annotations: pd.DataFrame) -> tuple[str | None, str | None]:
    """(model, baseline) names; alpaca_eval fits one GLM per (model, baseline) pair."""
    names = []
    for col in ("generator_2", "generator_1"):
        values = annotations[col].dropna().unique() if col in annotations.columns else []
        if len(values) > 1:
            raise ValueError(f"{col} has {len(values)} distinct values {list(values)[:5]}: score one model "
                             "against one baseline per call")
        names.append(values[0] if len(values) else None)
    return names[0], names[1]


def _instruction_difficulty(gamed: pd.DataFrame) -> pd.Series:
    first = gamed.drop_duplicates("index")
    difficulty = pd.Series(first["instruction_difficulty"].to_numpy(), index=first["index"].to_numpy())
    # alpaca_eval looks the difficulty up by the *row label* of the de-duplicated table, which equals the `index`
    # value only when the first occurrences sit in rows 0..N-1 in instruction order (true of a table whose first
    # gamed baseline lists the instructions in order). Keying by `index` is what that lookup means; say so when a
    # given table would make the two disagree.
    if not np.array_equal(first.index.to_numpy(), first["index"].to_numpy()):
        log.warning("gamed table: first rows per instruction are not in index order; alpaca_eval's positional "
                    "lookup of instruction_difficulty would differ from the index-keyed one used here")
    return difficulty


def _check_gamed(gamed: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    _require_columns(gamed, GAMED_COLUMNS, "the gamed table (df_gamed.csv)",
                     hint=f"load it with load_gamed() or hf_hub_download('{GAMED_REPO_ID}', '{GAMED_FILENAME}')")
    gamed = gamed.drop(columns=["model"], errors="ignore").reset_index(drop=True)
    if gamed["not_gamed_baseline"].dtype != bool:
        raise ValueError("gamed table: not_gamed_baseline must be boolean (False for the gamed baselines), "
                         f"got dtype {gamed['not_gamed_baseline'].dtype}")
    prefs = gamed["preference"].astype(float)
    if ((prefs < 0) | (prefs > 1)).any():
        raise ValueError("gamed table: preference must already be on alpaca_eval's [0, 1] scale "
                         "(preference - 1), as in df_gamed.csv")
    # patsy silently drops rows with missing features, which would shift the rows against their sample weights;
    # df_gamed.csv has none (alpaca_eval itself would fail on them), so dropping them up front changes nothing.
    bad = gamed[["std_delta_len", "instruction_difficulty"]].isna().any(axis=1)
    if bad.any():
        notes.append(f"dropped {int(bad.sum())} gamed rows with missing features")
        gamed = gamed[~bad].reset_index(drop=True)
    return gamed


def _model_features(annotations: pd.DataFrame, difficulty: pd.Series | None) -> tuple[pd.DataFrame, float]:
    """alpaca_eval's featurisation of the model's own annotations (glm_winrate._get_featurized_data, step 2)."""
    for col in ("output_1", "output_2"):
        not_str = ~annotations[col].map(lambda x: isinstance(x, str))
        if not_str.any():
            raise ValueError(f"{col} has {int(not_str.sum())} missing/non-text outputs (rows "
                             f"{list(np.flatnonzero(not_str.to_numpy())[:5])}...); the length feature needs text, "
                             "use '' for an empty answer")
    # Baseline length minus model length, divided by its std over all rows (NaN preferences included), as
    # alpaca_eval does: positive when the baseline is longer.
    delta = (annotations["output_1"].str.len() - annotations["output_2"].str.len()).astype(float).to_numpy()
    std = float(pd.Series(delta).std())
    df = pd.DataFrame({
        # alpaca_eval fits on [0, 1]: P(model beats baseline); the legacy tie code 0 means 1.5.
        "preference": pd.Series(annotations["preference"], dtype=float).replace({0.0: 1.5}).to_numpy() - 1,
        "std_delta_len": delta / std if std > 0 else np.zeros_like(delta),
        "not_gamed_baseline": True,
    })
    if difficulty is not None:
        index = pd.to_numeric(annotations["index"], errors="coerce").to_numpy()
        if np.isnan(index).any() or not np.array_equal(index, np.round(index)):
            raise ValueError("annotations' `index` column must hold integer instruction positions (0..804 in "
                             "AlpacaEval 2), used to look up each instruction's difficulty")
        index = index.astype(int)
        unknown = sorted(set(index) - set(difficulty.index))
        if unknown:
            raise ValueError(f"annotations' `index` has {len(unknown)} value(s) not in the gamed table (e.g. "
                             f"{unknown[:5]}): `index` must be the instruction's position in the AlpacaEval set")
        df.insert(1, "index", index)
        df["instruction_difficulty"] = difficulty.loc[index].to_numpy()
    return df, std


def length_controlled_winrate(annotations: pd.DataFrame, gamed: pd.DataFrame | None = None) -> dict:
    """AlpacaEval 2's length-controlled win rate (LC), in percent, plus everything `win_rate` returns.

    gamed: alpaca_eval's df_gamed.csv (see `load_gamed`), i.e. the annotations of two length-gamed baselines with
        columns index, preference (on the [0, 1] scale), std_delta_len, instruction_difficulty,
        not_gamed_baseline (False) [and model]. Given, the LC is alpaca_eval's `length_controlled_v1` (the
        leaderboard's), and `annotations` must have an `index` column: each instruction's position 0..804 in the
        AlpacaEval set, which selects its difficulty. None: alpaca_eval's `length_controlled_minimal` GLM, the only
        one that needs nothing from the hub.

    Both fit alpaca_eval's logistic GLM of P(model wins) on tanh(standardised length difference) and a model term
    (plus instruction difficulty for v1), with alpaca_eval's 5-fold GroupKFold LogisticRegressionCV (L1,
    liblinear), on the rows with a parsed preference, then average the predictions at zero length difference over
    all instructions.

    Extra keys: length_controlled_winrate, lc_standard_error (alpaca_eval's: the standard error of the
    per-instruction predictions, so 0 for the minimal GLM, whose prediction is the same everywhere), lc_method,
    glm_weights (coefficient name -> value) and lc_note (None, or what was done differently from alpaca_eval on a
    degenerate input: fewer folds for < 5 rows; LC = WR when the length difference has no variance or every
    preference the GLM would see is the same; LC = NaN when no preference was parsed). A model scored against
    itself gets alpaca_eval's 50% by construction. With only a handful of rows the cross-validated L1 penalty
    shrinks every weight to 0, so the LC of a tiny run sits at (or near) 50% whatever the raw win rate.
    """
    annotations = pd.DataFrame(annotations).reset_index(drop=True)
    required = ["preference", "output_1", "output_2"] + (["index"] if gamed is not None else [])
    _require_columns(annotations, required, "length_controlled_winrate",
                     hint="with a gamed table, `index` is each instruction's position (0..804) in the AlpacaEval "
                     "set (the prompt records' `index`); copy it into the annotations, or pass gamed=None")
    metrics = win_rate(annotations)
    glm = _glm()
    method = LC_V1 if gamed is not None else LC_MINIMAL
    info = glm.GLM_INFO[method]
    notes: list[str] = []

    model_name, baseline_name = _generators(annotations)
    if model_name is not None and model_name == baseline_name:
        # alpaca_eval does not fit anything here: a model against itself is 0.5 on every row by construction.
        preds = np.full(len(annotations), 0.5)
        # The split alpaca_eval uses to name the (all-zero) weights when a model is scored against itself.
        weights = {t.strip(): 0.0 for t in info["formula"].split("-")[0].split("+")}
        notes.append("model == baseline: every prediction is 0.5 by construction (alpaca_eval's rule), no GLM fit")
    else:
        if gamed is not None:
            gamed = _check_gamed(gamed, notes)
        feats, std = _model_features(annotations, None if gamed is None else _instruction_difficulty(gamed))
        # Rows alpaca_eval's win rate drops (NaN, or outside [1, 2]) stay out of the fit too. alpaca_eval's GLM
        # drops only the NaN ones; out-of-range values would enter its loss as probabilities outside [0, 1].
        parsed = feats["preference"].between(0, 1).to_numpy()
        n_out_of_range = int((feats["preference"].notna().to_numpy() & ~parsed).sum())
        if n_out_of_range:
            notes.append(f"{n_out_of_range} preferences outside [1, 2] left out of the fit")
        if not parsed.any():
            preds, weights = np.array([np.nan]), {}
            notes.append("no parsed preference: LC is undefined (NaN)")
        elif not std > 0:
            # No variance in the length difference (all outputs differ by the same amount, or one row): the
            # length term cannot be estimated from this model's rows and alpaca_eval's standardisation divides by
            # zero. With nothing to control for, the raw win rate is the length-controlled one.
            preds, weights = None, {}
            notes.append("length difference has zero variance: LC = WR, lc_standard_error = WR's standard_error")
        elif pd.concat([None if gamed is None else gamed["preference"].dropna(),
                        feats["preference"][parsed]]).nunique() == 1:  # the values the GLM would be trained on
            # One outcome everywhere (all wins, all losses or all ties) leaves the GLM nothing to explain; the fit
            # is then an artefact of the solver: alpaca_eval's liblinear fit drops the zero-weighted duplicated
            # rows and returns 50% for a model that lost every comparison. The raw win rate is the honest answer.
            preds, weights = None, {}
            notes.append("all parsed preferences are identical: no GLM fit, LC = WR, "
                         "lc_standard_error = WR's standard_error")
        else:
            preds, weights = _fit_glm(glm, info, feats, parsed, gamed, notes)

    if preds is None:
        lc, lc_se = metrics["win_rate"], metrics["standard_error"]
    else:
        lc, lc_se = float(np.mean(preds) * 100), float(pd.Series(preds).sem() * 100)
    metrics.update(length_controlled_winrate=lc, lc_standard_error=lc_se,
                   lc_method=method if gamed is not None else LC_MINIMAL_LABEL,
                   glm_weights={str(k): float(v) for k, v in weights.items()}, lc_note="; ".join(notes) or None)
    wr = metrics["win_rate"]
    if np.isfinite(lc) and np.isfinite(wr) and glm.get_is_extreme_changes(wr, lc):
        # alpaca_eval's own sanity check: an LC far from WR often means the GLM fit failed.
        log.warning("length-controlled win rate %.1f%% is far from the raw %.1f%%; the GLM fit may have failed",
                    lc, wr)
    return metrics


def _fit_glm(glm, info: dict, feats: pd.DataFrame, parsed: np.ndarray, gamed: pd.DataFrame | None,
             notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """alpaca_eval's GLM fit (get_length_controlled_winrate's non-baseline branch) on our featurised rows."""
    # Predict for every instruction as if the model's outputs were as long as the baseline's.
    test = feats.drop(columns=["preference", "index"], errors="ignore").copy()
    test["std_delta_len"] = 0.0

    lam = info["regularize_to_baseline_lambda"]
    if gamed is not None and lam:
        # v1 trains on the gamed baselines' rows too, down-weighted to lam split over the two gamed baselines,
        # which ties the length coefficient to what verbose/concise prompting of one model does.
        train = pd.concat([gamed[list(GAMED_COLUMNS)], feats], axis=0, ignore_index=True)
        sample_weight = np.where(train["not_gamed_baseline"].to_numpy(), 1.0, lam / 2)
        keep = np.concatenate([gamed["preference"].notna().to_numpy(), parsed])
    else:
        train, sample_weight, keep = feats, None, parsed

    x_train, x_test = glm.make_dmatrix_for_model(train, test, formula=info["formula"])
    x_train = x_train[keep]
    if sample_weight is not None:
        sample_weight = sample_weight[keep]

    kwargs = dict(info["kwargs"])
    wanted, n = kwargs.get("n_splits", 5), len(x_train)
    # alpaca_eval's GroupKFold needs at least as many groups (rows) as folds; below 2 rows there is no CV at all
    # and fit_LogisticRegressionCV's n_splits=0 branch fits a plain LogisticRegression(C=100).
    kwargs["n_splits"] = n_splits = wanted if n >= wanted else n if n >= 2 else 0
    if n_splits != wanted:
        notes.append(f"{n} training rows: " + (f"{n_splits}-fold CV instead of {wanted}" if n_splits
                     else f"no CV (LogisticRegression, C=100) instead of {wanted}-fold"))

    import sklearn

    # fit_LogisticRegressionCV switches sklearn's metadata routing on globally (sklearn.set_config); the context
    # restores the caller's setting afterwards.
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)  # sklearn 1.8+ deprecations in alpaca_eval's call
        model = glm.fit_LogisticRegressionCV(x_train, "preference", is_ytrue_proba=True,
                                             sample_weight=sample_weight, **kwargs)
        preds = model.predict_proba(x_test)[:, 1]
    return preds, dict(zip(x_test.columns, model.coef_[0]))


def load_gamed(cache_dir: str | None = None) -> pd.DataFrame | None:
    """alpaca_eval's df_gamed.csv from the hub (dataset tatsu-lab/alpaca_eval), without its `model` column.

    Returns None, after one line on stderr, when the hub cannot be reached (offline, HF_HUB_OFFLINE=1) and the file
    is not in the cache; `length_controlled_winrate(..., gamed=None)` then falls back to the minimal GLM.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:
        path = hf_hub_download(repo_id=GAMED_REPO_ID, filename=GAMED_FILENAME, repo_type="dataset",
                               cache_dir=cache_dir)
    except OSError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(err, HfHubHTTPError) and status is not None and status < 500 and status != 429:
            raise  # the hub answered: the file is gone or gated, which a fallback would hide
        first_line = (str(err).splitlines() or [""])[0]
        print(f"warning: {GAMED_REPO_ID}/{GAMED_FILENAME} unavailable ({type(err).__name__}: {first_line}); "
              f"AlpacaEval LC falls back to {LC_MINIMAL_LABEL}", file=sys.stderr)
        return None
    return pd.read_csv(path).drop(columns=["model"], errors="ignore")
