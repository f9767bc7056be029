"""AlpacaEval 2 scoring (eval/alpaca.py): win rate, length-controlled win rate, and the df_gamed.csv loader.

The LC is checked against alpaca_eval's own `get_length_controlled_winrate` on the same synthetic inputs, with only
its hub download of df_gamed.csv redirected to a table written here.
"""
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from eval import alpaca

N_INSTRUCTIONS = 805  # AlpacaEval 2's set size; `index` runs over 0..804


def _annotations(len_1, len_2, preferences, baseline="gpt4_turbo", model="my_model"):
    """Annotation rows in alpaca_eval's layout with outputs of the given character lengths."""
    n = len(preferences)
    return pd.DataFrame({
        "instruction": [f"instruction {i}" for i in range(n)],
        "output_1": ["b" * int(k) for k in len_1],
        "output_2": ["m" * int(k) for k in len_2],
        "generator_1": baseline,
        "generator_2": model,
        "preference": np.asarray(preferences, dtype=float),
    })


def _logistic(x):
    return 1 / (1 + np.exp(-x))


def _synthetic(seed=0, n=N_INSTRUCTIONS, skill=0.3, length_effect=1.2, length_ratio=1.3, frac_unparsed=0.03):
    """A realistic AlpacaEval-like run: weighted-judge preferences that depend on the model's skill, on how much
    longer its outputs are than the baseline's (the bias LC removes) and on each instruction's difficulty, with a
    few unparsed judge answers; plus a df_gamed.csv-like table of two length-gamed baselines on the same
    instructions (preference on the [0, 1] scale, standardised length difference, shared instruction difficulty).
    Returns (annotations in a shuffled order with their `index` column, gamed table including `model`)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 0.8, n)
    len_1 = rng.integers(200, 2500, n)
    len_2 = np.maximum(1, (len_1 * length_ratio * rng.lognormal(0.0, 0.4, n)).astype(int))
    delta = len_1 - len_2  # alpaca_eval's sign: baseline minus model
    logit = skill - length_effect * np.tanh(delta / delta.std(ddof=1)) - difficulty
    preference = 1 + np.clip(_logistic(logit + rng.normal(0.0, 0.7, n)), 0, 1)
    preference[rng.random(n) < frac_unparsed] = np.nan
    annotations = _annotations(len_1, len_2, preference)
    annotations["index"] = np.arange(n)
    annotations["annotator"] = "weighted_alpaca_eval_gpt4_turbo"
    annotations = annotations.sample(frac=1.0, random_state=seed).reset_index(drop=True)

    gamed = []
    for name, shift in (("gpt4_1106_preview_verbose", -1.0), ("gpt4_1106_preview_concise", 1.0)):
        std_delta_len = rng.normal(shift, 0.8, n)
        p = _logistic(0.1 - length_effect * np.tanh(std_delta_len) - difficulty + rng.normal(0.0, 0.5, n))
        gamed.append(pd.DataFrame({"index": np.arange(n), "preference": p, "std_delta_len": std_delta_len,
                                   "instruction_difficulty": difficulty, "not_gamed_baseline": False,
                                   "model": name}))
    return annotations, pd.concat(gamed, ignore_index=True)


@pytest.fixture
def glm_winrate(tmp_path, monkeypatch):
    """alpaca_eval's glm module with its df_gamed.csv download pointed at tmp_path/df_gamed.csv."""
    from eval.alpaca import _glm

    module = _glm()
    path = tmp_path / "df_gamed.csv"
    monkeypatch.setattr(module, "hf_hub_download", lambda **kwargs: str(path))
    return module, path


def _reference_lc(module, annotations, tmp_path, glm_name):
    """alpaca_eval's LC (and its fitted weights, read back from the weights CSV it writes under tmp_path)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = module.get_length_controlled_winrate(annotations.copy(), glm_name=glm_name,
                                                   glm_info=module.GLM_INFO[glm_name],
                                                   save_weights_dir=tmp_path / "weights")
    weights = pd.read_csv(tmp_path / "weights" / glm_name / "baseline_gpt4_turbo.csv", index_col=0)
    return ref, weights.loc["my_model"].to_dict()


# ---------------------------------------------------------------- win rate


def test_win_rate_by_hand():
    # 3 wins, 1 tie, 2 losses: each row scores 1, 0.5 or 0 for the model.
    out = alpaca.win_rate(_annotations([10] * 6, [10] * 6, [2, 2, 2, 1.5, 1, 1]))
    scores = [1, 1, 1, 0.5, 0, 0]
    mean = sum(scores) / 6  # 3.5 / 6
    sample_var = sum((s - mean) ** 2 for s in scores) / 5  # (3*(5/12)^2 + (1/12)^2 + 2*(7/12)^2) / 5
    assert out["win_rate"] == pytest.approx(100 * 3.5 / 6)  # 58.33...
    assert out["win_rate"] == pytest.approx(58.3333333, abs=1e-6)
    assert out["standard_error"] == pytest.approx(100 * math.sqrt(sample_var / 6))
    assert out["standard_error"] == pytest.approx(20.06932, abs=1e-4)
    assert (out["n_wins"], out["n_wins_base"], out["n_draws"], out["n_total"], out["n_unparsed"]) == (3, 2, 1, 6, 0)
    assert out["discrete_win_rate"] == pytest.approx(100 * 3.5 / 6)


def test_win_rate_weighted_and_legacy_tie():
    # A weighted judge's 1.8 enters the mean as 0.8 but rounds to a win for discrete_win_rate; 0 is a legacy tie.
    out = alpaca.win_rate(_annotations([5] * 4, [5] * 4, [1.8, 1.2, 0, 2.0]))
    assert out["win_rate"] == pytest.approx(100 * (0.8 + 0.2 + 0.5 + 1.0) / 4)
    assert out["discrete_win_rate"] == pytest.approx(100 * (1 + 0 + 0.5 + 1) / 4)
    assert (out["n_wins"], out["n_wins_base"], out["n_draws"], out["n_total"]) == (2, 1, 1, 4)


def test_win_rate_is_alpaca_evals():
    from alpaca_eval.metrics.winrate import get_winrate

    annotations, _ = _synthetic(seed=3, n=200)
    ours, theirs = alpaca.win_rate(annotations), get_winrate(annotations)
    assert set(theirs) <= set(ours)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(float(value), rel=1e-12, abs=1e-12), key


def test_unparsed_preferences_are_counted_and_excluded():
    parsed = [2, 2, 2, 1.5, 1, 1]
    out = alpaca.win_rate(_annotations([10] * 8, [10] * 8, [np.nan, *parsed[:3], None, *parsed[3:]]))
    assert out["n_unparsed"] == 2
    assert out["n_total"] == 6  # unparsed rows are neither losses nor ties
    assert out["win_rate"] == pytest.approx(alpaca.win_rate(_annotations([10] * 6, [10] * 6, parsed))["win_rate"])
    assert out["n_wins"] + out["n_wins_base"] + out["n_draws"] == 6


# ---------------------------------------------------------------- length-controlled win rate vs alpaca_eval


def test_lc_v1_matches_alpaca_eval(glm_winrate, tmp_path):
    module, gamed_path = glm_winrate
    annotations, gamed = _synthetic(seed=0)
    gamed.to_csv(gamed_path, index=False)
    assert annotations["preference"].isna().sum() > 0  # NaN rows must be dropped from both fits alike
    ours = alpaca.length_controlled_winrate(annotations, gamed=pd.read_csv(gamed_path))
    ref, ref_weights = _reference_lc(module, annotations, tmp_path, "length_controlled_v1")

    assert ours["lc_method"] == "length_controlled_v1"
    assert ours["lc_note"] is None
    assert abs(ours["length_controlled_winrate"] - ref["length_controlled_winrate"]) < 0.02
    assert abs(ours["lc_standard_error"] - ref["lc_standard_error"]) < 0.02
    assert ours["win_rate"] == pytest.approx(ref["win_rate"])
    assert set(ours["glm_weights"]) == set(ref_weights)
    for name, value in ref_weights.items():
        assert ours["glm_weights"][name] == pytest.approx(value, abs=1e-6), name
    # the synthetic model gains from length, so controlling for it must lower its score here
    assert ours["length_controlled_winrate"] < ours["win_rate"]


def test_lc_without_gamed_matches_alpaca_eval_minimal(glm_winrate, tmp_path):
    module, gamed_path = glm_winrate
    annotations, gamed = _synthetic(seed=1)
    gamed.to_csv(gamed_path, index=False)  # alpaca_eval downloads df_gamed even for the minimal GLM
    ours = alpaca.length_controlled_winrate(annotations.drop(columns=["index"]), gamed=None)
    ref, ref_weights = _reference_lc(module, annotations, tmp_path, "length_controlled_minimal")

    assert ours["lc_method"] == "length_controlled_minimal (no gamed rows)"
    assert ours["lc_note"] is None
    assert abs(ours["length_controlled_winrate"] - ref["length_controlled_winrate"]) < 0.02
    assert set(ours["glm_weights"]) == {"np.tanh(std_delta_len)", "not_gamed_baseline.astype(float)"}
    for name, value in ref_weights.items():
        assert ours["glm_weights"][name] == pytest.approx(value, abs=1e-6), name


def test_lc_leaves_inputs_and_sklearn_config_alone():
    import sklearn

    annotations, _ = _synthetic(seed=2, n=150)
    before = annotations.copy()
    sklearn.set_config(enable_metadata_routing=False)
    try:
        alpaca.length_controlled_winrate(annotations)
        assert sklearn.get_config()["enable_metadata_routing"] is False  # alpaca_eval sets it globally
    finally:
        sklearn.set_config(enable_metadata_routing=False)
    pd.testing.assert_frame_equal(annotations, before)  # alpaca_eval adds glm_preference in place


@pytest.mark.parametrize("use_gamed", [False, True])
def test_lc_moves_against_length_gains(use_gamed):
    # Average skill, wins by writing ~1.8x longer: the raw win rate is inflated, the LC removes the inflation.
    longer, gamed = _synthetic(seed=4, skill=0.0, length_effect=1.5, length_ratio=1.8, n=400)
    # Strong model with ~0.55x shorter outputs: length works against it, so the LC is at least the raw win rate.
    shorter, _ = _synthetic(seed=5, skill=1.0, length_effect=1.5, length_ratio=0.55, n=400)
    kwargs = {"gamed": gamed.drop(columns=["model"])} if use_gamed else {}
    out_longer = alpaca.length_controlled_winrate(longer, **kwargs)
    out_shorter = alpaca.length_controlled_winrate(shorter, **kwargs)
    assert out_longer["win_rate"] > 55
    assert out_longer["length_controlled_winrate"] < out_longer["win_rate"] - 3
    assert out_shorter["length_controlled_winrate"] >= out_shorter["win_rate"]
    # the length coefficient has alpaca_eval's sign: longer model output (negative delta) helps the model
    assert out_longer["glm_weights"]["np.tanh(std_delta_len)"] < 0


def test_lc_v1_input_errors():
    annotations, gamed = _synthetic(seed=6, n=50)
    with pytest.raises(ValueError, match=r"\['index'\].*position"):
        alpaca.length_controlled_winrate(annotations.drop(columns=["index"]), gamed=gamed)
    shifted = annotations.assign(index=annotations["index"] + 1000)
    with pytest.raises(ValueError, match="not in the gamed table"):
        alpaca.length_controlled_winrate(shifted, gamed=gamed)
    with pytest.raises(ValueError, match="instruction_difficulty"):
        alpaca.length_controlled_winrate(annotations, gamed=gamed.drop(columns=["instruction_difficulty"]))
    with pytest.raises(ValueError, match="output_2"):
        alpaca.length_controlled_winrate(annotations.drop(columns=["output_2"]))
    with pytest.raises(ValueError, match="non-text"):
        alpaca.length_controlled_winrate(annotations.assign(output_2=None))


# ---------------------------------------------------------------- degenerate tiny runs


def test_lc_four_rows_uses_fewer_folds():
    out = alpaca.length_controlled_winrate(_annotations([10, 20, 30, 40], [50, 10, 35, 80], [2, 1, 2, 1.5]))
    assert out["win_rate"] == pytest.approx(62.5)
    assert "4-fold CV instead of 5" in out["lc_note"]
    # four rows cannot support any weight under the cross-validated L1 penalty: shrunk to a coin flip
    assert out["length_controlled_winrate"] == pytest.approx(50.0)
    assert out["glm_weights"] == {"np.tanh(std_delta_len)": 0.0, "not_gamed_baseline.astype(float)": 0.0}


def test_lc_identical_lengths_is_raw_win_rate():
    out = alpaca.length_controlled_winrate(_annotations([10, 20, 30], [10, 20, 30], [2, 1, 2]))
    assert out["length_controlled_winrate"] == pytest.approx(200 / 3)
    assert out["lc_standard_error"] == out["standard_error"]
    assert "zero variance" in out["lc_note"]
    assert out["glm_weights"] == {}


@pytest.mark.parametrize("preference,expected", [(1.5, 50.0), (1.0, 0.0), (2.0, 100.0)])
def test_lc_identical_preferences_is_raw_win_rate(preference, expected):
    # alpaca_eval's fit gives 50% for a model that lost all comparisons; we report the raw win rate instead.
    out = alpaca.length_controlled_winrate(_annotations([10, 20, 30, 40, 5, 6], [50, 10, 35, 80, 3, 2],
                                                        [preference] * 6))
    assert out["length_controlled_winrate"] == pytest.approx(expected)
    assert "identical" in out["lc_note"]


def test_lc_model_against_itself_is_fifty():
    out = alpaca.length_controlled_winrate(
        _annotations([10, 20, 7], [12, 20, 7], [1.5, 2, 1], baseline="same", model="same"))
    assert out["length_controlled_winrate"] == 50.0
    assert out["lc_standard_error"] == 0.0
    assert out["glm_weights"] == {"np.tanh(std_delta_len)": 0.0, "not_gamed_baseline.astype(float)": 0.0}
    assert "model == baseline" in out["lc_note"]


def test_lc_all_unparsed_is_nan():
    out = alpaca.length_controlled_winrate(_annotations([10, 20, 30], [5, 25, 40], [np.nan] * 3))
    assert out["n_unparsed"] == 3 and out["n_total"] == 0
    assert math.isnan(out["length_controlled_winrate"])
    assert "no parsed preference" in out["lc_note"]


# ---------------------------------------------------------------- df_gamed.csv


def test_load_gamed_offline_returns_none(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert alpaca.load_gamed(cache_dir=str(tmp_path / "empty_cache")) is None
    err = capsys.readouterr().err
    assert "df_gamed.csv" in err and len(err.strip().splitlines()) == 1


def test_load_gamed_reads_and_drops_model(tmp_path, monkeypatch):
    annotations, gamed = _synthetic(seed=7, n=60)
    path = tmp_path / "df_gamed.csv"
    gamed.to_csv(path, index=False)
    monkeypatch.setattr(alpaca, "hf_hub_download", lambda **kwargs: str(path))
    loaded = alpaca.load_gamed()
    assert "model" not in loaded.columns
    assert set(alpaca.GAMED_COLUMNS) <= set(loaded.columns)
    assert loaded["not_gamed_baseline"].dtype == bool and len(loaded) == 2 * 60
    out = alpaca.length_controlled_winrate(annotations, gamed=loaded)
    assert out["lc_method"] == "length_controlled_v1" and math.isfinite(out["length_controlled_winrate"])
