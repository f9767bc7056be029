"""Reward models as the paper's configs load them, on small checkpoints built here (random weights, SmolLM2's
tokenizer): code of its own that imports a name transformers 5 removed, as ArmoRM-Llama3-8B-v0.1's does; a model that
cannot load refused before any preference sample is drawn; length-sorted batches under a token budget; and
reward_difference's two models (base model, reward model) in two processes."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY, TINY_MODEL

# Code of our own, written the way ArmoRM-Llama3-8B-v0.1's modeling_custom.py is written for transformers 4: it imports
# LLAMA_INPUTS_DOCSTRING (gone in transformers 5) and decorates forward with it, passes past_key_values, reads
# config.use_return_dict, pools the last token before the first pad and returns `score`. Its weights are named as
# LlamaForSequenceClassification's, so the same checkpoint loads both ways.
MODELING = '''
from dataclasses import dataclass

import torch
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.models.llama.modeling_llama import {imported}  # noqa: F401
from transformers.utils import ModelOutput, add_start_docstrings_to_model_forward


@dataclass
class RewardOutput(ModelOutput):
    score: torch.FloatTensor = None
    logits: torch.FloatTensor = None


class TinyRewardModel(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = torch.nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()

    @add_start_docstrings_to_model_forward({docstring})
    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None, return_dict=None):
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        hidden = self.model(input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                            use_cache=use_cache, return_dict=return_dict)[0]
        last = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        score = self.score(hidden[torch.arange(input_ids.shape[0]), last])[:, 0]
        return RewardOutput(score=score, logits=score[:, None])
'''

PAIRS = [("What is the capital of France?", "The capital of France is Paris."),
         ("Write a two-line poem about the sea.",
          "The sea rolls in with silver light,\nand hums the harbour into night."),
         ("Hi", "Hello!"),
         ("How many legs does a spider have? Answer with the number and one sentence on why it matters.",
          "Eight. Spiders are arachnids, not insects, and the count is one of the easiest ways to tell them apart."),
         ("Name a prime.", "7")]


def _checkpoint(root: Path, name: str, imported: str | None) -> Path:
    """root/name: a 2-layer Llama sequence classifier (hidden 16) with SmolLM2's tokenizer and chat template, seed 0;
    `imported`: the name its own code imports from modeling_llama (None: no code of its own)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from core import models

    tokenizer = AutoTokenizer.from_pretrained(models.resolve(TINY_MODEL))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, num_labels=1)
    torch.manual_seed(0)
    path = root / name
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    if imported:
        docstring = imported if imported.endswith("DOCSTRING") else '""'
        (path / "modeling_tiny_rm.py").write_text(MODELING.format(imported=imported, docstring=docstring))
        cfg = json.loads((path / "config.json").read_text())
        cfg["architectures"] = ["TinyRewardModel"]
        cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_tiny_rm.TinyRewardModel"}
        (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """plain: no code of its own; docstring: the same weights, code importing LLAMA_INPUTS_DOCSTRING (ArmoRM's
    import); broken: code importing LlamaFlashAttention2, which transformers 5 removed too and which has no
    stand-in. Unique directory names: transformers caches remote code by the folder's name."""
    root = tmp_path_factory.mktemp("rm")
    return {"plain": _checkpoint(root, "tiny_rm_plain", None),
            "docstring": _checkpoint(root, "tiny_rm_llama_inputs_docstring", "LLAMA_INPUTS_DOCSTRING"),
            "broken": _checkpoint(root, "tiny_rm_flash_attention2", "LlamaFlashAttention2")}


def test_remote_code_importing_a_removed_name_loads_and_scores(checkpoints):
    from synth.taggers.reward import SequenceClassifierScorer, check_reward_model

    path = checkpoints["docstring"]
    # Plain transformers 5 cannot load it: this is how ArmoRM failed, after all k=5 sampling.
    load = ("import sys; from transformers import AutoModelForSequenceClassification as A; "
            "A.from_pretrained(sys.argv[1], trust_remote_code=True)")
    plain = subprocess.run([sys.executable, "-c", load, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode != 0 and "LLAMA_INPUTS_DOCSTRING" in plain.stderr
    check_reward_model(str(path), trust_remote_code=True)  # builds it (meta device): no error
    custom = SequenceClassifierScorer(str(path), dtype="float32", device="cpu", trust_remote_code=True)
    assert type(custom.model).__name__ == "TinyRewardModel"
    reference = SequenceClassifierScorer(str(checkpoints["plain"]), dtype="float32", device="cpu")
    # Its own code on the same weights scores as transformers' LlamaForSequenceClassification: the weights loaded.
    assert custom.score(PAIRS) == pytest.approx(reference.score(PAIRS), abs=1e-5)


def test_remote_code_is_never_run_unless_asked(checkpoints):
    from synth.taggers.reward import check_reward_model

    with pytest.raises(ValueError, match="ships its own model code: set pref_reward_trust_remote_code: true"):
        check_reward_model(str(checkpoints["docstring"]), key="pref_reward_model")


def test_a_reward_model_that_cannot_be_built_is_named(checkpoints):
    from synth.taggers.reward import check_reward_model

    path = str(checkpoints["broken"])
    with pytest.raises(ValueError) as e:
        check_reward_model(path, trust_remote_code=True, key="pref_reward_model")
    msg = str(e.value)
    assert msg.startswith(f"pref_reward_model {path} cannot be built with transformers 5.")
    assert "LlamaFlashAttention2" in msg and "choose another reward model" in msg and "\n" not in msg


def _tagged(root: Path) -> Path:
    """root/tagged: a small tagged set (the preference stage's input), written as the tag stage writes one."""
    from core import store

    out = store.DatasetDir(root / "tagged")
    out.begin("tag", {"input_id": "handmade"})
    out.write_shard(0, [{"id": i, "instruction": q, "response": a, "task_category": "Information seeking",
                         "difficulty": "medium", "input_quality": "good", "instruct_reward": 0.0}
                        for i, (q, a) in enumerate(PAIRS)])
    out.finish({"records": len(PAIRS)})
    return root / "tagged"


def test_preferences_refuse_a_scorer_that_cannot_load_before_sampling(checkpoints, tmp_path):
    """The function: nothing is picked, sampled or written, and the engine is never touched."""
    from core.engines import ModelRole
    from core.layout import RunLayout
    from synth.config import PreferenceArgs
    from synth.preferences import sample_preferences

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the engine was used ({name}) before the scorer was checked")

    pargs = PreferenceArgs(pref_reward_model=str(checkpoints["broken"]), pref_reward_trust_remote_code=True,
                           pref_reward_engine="hf")
    with pytest.raises(ValueError, match="cannot be built"):
        sample_preferences(Untouchable(), ModelRole(TINY_MODEL, engine="hf"), pargs, _tagged(tmp_path),
                           RunLayout(tmp_path).pref_samples)
    assert not (tmp_path / "preferences").exists()


def test_preferences_cli_refuses_a_scorer_that_cannot_load_before_sampling(checkpoints, tmp_path):
    _tagged(tmp_path)
    broken = str(checkpoints["broken"])
    argv = ["preferences", "--config", TINY, "--output_dir", str(tmp_path), "--pref_reward_model", broken,
            "--pref_reward_trust_remote_code", "true", "--report_to", "none"]
    proc = subprocess.run([sys.executable, "-m", "synth", *argv], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: pref_reward_model {broken} cannot be built with transformers")
    assert not (tmp_path / "preferences").exists()


# -- batches by length under a token budget ------------------------------------------------------------
@pytest.mark.parametrize("lengths, rows, tokens", [
    ([5, 40, 7, 7, 100, 3, 40, 12], 4, 64), ([10] * 9, 4, 1000), ([300, 2, 2], 16, 100), ([], 4, 10)])
def test_token_batches_respect_rows_and_budget(lengths, rows, tokens):
    from synth.taggers.reward import token_batches

    batches = token_batches(lengths, rows, tokens)
    assert sorted(k for b in batches for k in b) == list(range(len(lengths)))  # every row once
    for b in batches:
        widest = max(lengths[k] for k in b)
        assert len(b) <= rows and (len(b) == 1 or len(b) * widest <= tokens)
    order = [lengths[k] for b in batches for k in b]
    assert order == sorted(lengths, reverse=True)  # longest first


def test_scores_batched_by_tokens_equal_one_by_one_in_input_order(checkpoints):
    from synth.taggers.reward import SequenceClassifierScorer

    scorer = SequenceClassifierScorer(str(checkpoints["plain"]), batch_size=4, dtype="float32", device="cpu",
                                      max_batch_tokens=160)
    shapes, forward = [], scorer._forward
    scorer._forward = lambda batch, pad: shapes.append((len(batch), max(map(len, batch)))) or forward(batch, pad)
    batched = scorer.score(PAIRS)
    assert len(shapes) > 1 and all(n == 1 or n * width <= 160 for n, width in shapes)
    assert [width for _, width in shapes] == sorted((width for _, width in shapes), reverse=True)
    alone = [scorer.score([p])[0] for p in PAIRS]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert len({round(x, 5) for x in batched}) == len(PAIRS)  # distinct scores: a mix-up would show


# -- reward_difference: two models, two processes, the same records on resume -------------------------------------
@pytest.mark.slow  # two spawned model processes, then one: 1-2 min on this shared 2-core machine
def test_reward_difference_base_model_and_reward_model_run_in_two_processes(checkpoints, tmp_path, monkeypatch):
    from core import procs, store
    from synth.tag import tag_dataset
    from synth.taggers.reward import SequenceClassifierScorer

    monkeypatch.setenv("MAGPIE_ISOLATE", "1")  # as on a GPU: every model group in a process of its own
    src = store.DatasetDir(tmp_path / "responses")
    src.begin("responses", {"handmade": True})
    src.write_shard(0, [{"id": i, "instruction": q, "response": a} for i, (q, a) in enumerate(PAIRS[:4])])
    src.finish({"pairs": 4})
    reward = dict(reward_model=str(checkpoints["plain"]), dtype="float32", device="cpu")
    taggers = {"instruct_reward": reward,
               "reward_difference": {**reward, "base_model": TINY_MODEL, "base_engine": "hf", "base_max_tokens": 12,
                                     "engine_kwargs": {"dtype": "auto", "device": "cpu"}}}
    out = tmp_path / "tagged"
    before = len(procs.HISTORY)
    tag_dataset(src.path, out, taggers, batch_size=2, plots=False)
    pids = [pid for target, pid in procs.HISTORY[before:] if target == "synth.tag:run_taggers"]
    assert len(pids) == len(set(pids)) == 2  # base model, then reward model: never together
    rows = store.DatasetDir(out).records()
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    scorer = SequenceClassifierScorer(reward["reward_model"], dtype="float32", device="cpu")
    base_scores = scorer.score([(r["instruction"], r["base_response"]) for r in rows])
    for r, bs in zip(rows, base_scores):
        assert isinstance(r["base_response"], str) and r["base_reward"] == pytest.approx(bs, abs=1e-5)
        assert r["reward_difference"] == r["instruct_reward"] - r["base_reward"]  # instruct_reward's own score
    manifest = store.DatasetDir(out).manifest()
    assert manifest["counts"]["stats"]["reward_difference"]["reused_instruct_reward"] == 4  # each response scored once
    assert manifest["taggers_info"]["base_response"]["base_model"] == TINY_MODEL

    # Resume after a crash in the reward model's process: the base answers are read back, not generated again.
    base_part = out / "parts" / "base_response"
    stamps = {p.name: p.stat().st_mtime_ns for p in (base_part / "data").iterdir()}
    shutil.rmtree(out / "parts" / "reward_difference")
    shutil.rmtree(out / "data")
    (out / store.MANIFEST).write_text(json.dumps({**manifest, "status": "running"}))
    before = len(procs.HISTORY)
    tag_dataset(src.path, out, taggers, batch_size=2, plots=False)
    assert len(procs.HISTORY) - before == 1  # only the reward model's process
    assert {p.name: p.stat().st_mtime_ns for p in (base_part / "data").iterdir()} == stamps
    again = store.DatasetDir(out).records()
    for a, b in zip(again, rows):
        assert a["base_response"] == b["base_response"]
        assert a["reward_difference"] == pytest.approx(b["reward_difference"], abs=1e-6)
