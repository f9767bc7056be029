"""SFT with TRL on the real embedded SmolLM2: loss masks, packing, the EOS, a few real steps."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

CHATML_TRAINING = ROOT / "recipes/chat_templates/chatml_smollm2_training.jinja"
LLAMA3_TRAINING = ROOT / "recipes/chat_templates/llama3_training.jinja"
CONVS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2+2 is 4."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"},
     {"role": "assistant", "content": "Green."}],
]


def render(template, conv, **kw):
    from transformers.utils.chat_template_utils import render_jinja_template

    return render_jinja_template(conversations=[conv], chat_template=template, **kw)[0][0]


def test_training_templates_render_like_the_released_ones(smol_tokenizer):
    llama3 = json.loads((ROOT / "tests/fixtures/chat_templates/meta-llama__Meta-Llama-3-8B-Instruct.json").read_text())
    for conv in CONVS:
        for gen in (False, True):
            assert render(CHATML_TRAINING.read_text(), conv, add_generation_prompt=gen) == \
                render(smol_tokenizer.chat_template, conv, add_generation_prompt=gen)
            kw = dict(add_generation_prompt=gen, bos_token="<|begin_of_text|>")
            assert render(LLAMA3_TRAINING.read_text(), conv, **kw) == render(llama3["chat_template"], conv, **kw)


def test_assistant_only_mask_is_exactly_the_replies_and_their_end_of_turn(smol_tokenizer):
    """TRL's assistant_only_loss labels: the tokens of each reply plus <|im_end|>, nothing else."""
    from transformers.utils.chat_template_utils import render_jinja_template

    tok = smol_tokenizer
    conv = CONVS[1]
    text, gen_idx = render_jinja_template(conversations=[conv], chat_template=CHATML_TRAINING.read_text(),
                                          return_assistant_tokens_mask=True)
    enc = tok(text[0], add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(s <= a < e for s, e in gen_idx[0]) for a, _ in enc["offset_mapping"]]
    trained = tok.decode([i for i, m in zip(enc["input_ids"], mask) if m])
    assert trained == "Blue.<|im_end|>Green.<|im_end|>"
    # ... and the tokenizer's own assistant mask, which TRL's assistant_only_loss uses, agrees.
    out = tok.apply_chat_template(conv, chat_template=CHATML_TRAINING.read_text(), tokenize=True,
                                  return_dict=True, return_assistant_tokens_mask=True)
    assert out["input_ids"] == enc["input_ids"]
    assert [bool(m) for m in out["assistant_masks"]] == mask


def test_packed_examples_do_not_attend_to_each_other(hf_engine):
    """Packing as TRL does it (padding-free, position_ids restarting per example, no cache) gives each
    example the same logits as running it alone: no attention across the boundary. fp32 so that the
    comparison can be tight."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_engine.info.extras["path"], dtype=torch.float32).eval()
    tok = hf_engine.tokenizer
    a = tok.apply_chat_template(CONVS[0], tokenize=True, return_dict=True)["input_ids"]
    b = tok.apply_chat_template(CONVS[1], tokenize=True, return_dict=True)["input_ids"]
    packed = torch.tensor([a + b])
    position_ids = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    with torch.inference_mode():
        together = model(input_ids=packed, position_ids=position_ids, use_cache=False).logits[0]
        alone_b = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        naive = model(input_ids=packed, use_cache=False).logits[0]  # no boundary: b sees a
    assert (together[len(a):] - alone_b).abs().max() < 1e-3
    assert (naive[len(a):] - alone_b).abs().max() > 1.0


@pytest.mark.slow
def test_few_steps_write_a_model_that_loads_and_generates(trained_sft):
    summary = json.loads((trained_sft / "train_summary.json").read_text())
    assert summary["steps"] == 2
    # The summary reads TRL's own log: its run loss is the mean of the two logged step losses (logged to 4 places).
    assert summary["train_loss"] == pytest.approx((summary["first_loss"] + summary["last_loss"]) / 2, abs=2e-4)
    assert (trained_sft / "adapter_model.safetensors").exists()
    from core.engines import Sampling, get_engine

    engine = get_engine("hf", model=str(trained_sft / "merged"))
    (c,), = engine.chat([[{"role": "user", "content": "What is the capital of France?"}]],
                        Sampling(temperature=0, max_tokens=48))
    assert c.text.strip()


@pytest.mark.slow
def test_trained_model_stops_at_end_of_turn(trained_sft, smol_tokenizer):
    gen = json.loads((trained_sft / "merged" / "generation_config.json").read_text())
    eot = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = gen["eos_token_id"]
    assert eot in (eos if isinstance(eos, list) else [eos])
    tok_cfg = json.loads((trained_sft / "merged" / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>"


# -- bad input: one `error:` line that names it, exit code 2, before any model is loaded -----------------------
TINY_SFT = ROOT / "recipes/configs/sft/tiny.yaml"


@pytest.fixture
def convs_file(tmp_path):
    f = tmp_path / "convs.jsonl"
    f.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVS))
    return f


def sft_error(capsys, *argv, config=TINY_SFT) -> str:
    """Run `python -m train.sft` in this process; return its one error line."""
    from train.sft import main

    rc = main(["--config", str(config), *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "/no/such/export"], "error: dataset /no/such/export: no such directory or file; give a Magpie"),
    (["--dataset", "sharegpt", "--dataset_path", "/no/such.json"],
     "error: local copy of 'sharegpt' /no/such.json: no such directory or file"),
    (["--dataset", "sharegtp"], ("error: dataset sharegtp: no such registered set; did you mean sharegpt? "
                                 "(`python -m train.data` lists them")),
])
def test_bad_dataset_is_one_error_line(capsys, argv, expected):
    assert sft_error(capsys, *argv).startswith(expected)


def test_bad_dtype_lists_the_valid_ones(capsys, convs_file, tmp_path):
    line = sft_error(capsys, "--dataset", str(convs_file), "--dtype", "foo")
    assert line.startswith("error: command line --dtype: invalid choice: 'foo'")
    assert all(d in line for d in ("auto", "bfloat16", "float16", "float32"))
    # The same value in a YAML file: argparse does not check a default against its choices.
    config = tmp_path / "bad.yaml"
    config.write_text(TINY_SFT.read_text().replace("dtype: auto", "dtype: foo"))
    line = sft_error(capsys, "--dataset", str(convs_file), config=config)
    assert line == "error: dtype foo: choose one of auto, bfloat16, float16, float32"


def test_output_dir_that_is_a_file(capsys, convs_file):
    for out in (convs_file, convs_file / "sft"):
        assert sft_error(capsys, "--dataset", str(convs_file), "--output_dir", str(out)) == \
            f"error: output_dir {out}: {convs_file} is a file; choose another output_dir (new or existing folder)"


def test_missing_model_path_is_named(capsys, convs_file):
    line = sft_error(capsys, "--dataset", str(convs_file), "--model_name_or_path", "/no/such/dir")
    assert line.startswith("error: model path /no/such/dir does not exist; give an existing checkpoint directory")


def test_model_references(tmp_path):
    from core import models

    for hub_id in ("meta-llama/Meta-Llama-3-8B", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct"):
        assert models.resolve(hub_id) == hub_id  # passed on to transformers / vLLM untouched
    assert models.resolve(str(tmp_path)) == str(tmp_path)
    for path in ("/no/such/dir", "./no-such-dir", "../no-such-dir", "~/no-such-model", "runs/x/sft/merged"):
        with pytest.raises(ValueError, match=f"^model path {path} does not exist"):
            models.resolve(path)
    with pytest.raises(ValueError, match="unknown embedded model 'embedded:nope'; known: embedded:smollm2"):
        models.resolve("embedded:nope")


def test_a_bad_value_is_blamed_on_where_it_came_from(capsys, convs_file, tmp_path):
    line = sft_error(capsys, "--dataset", str(convs_file), "--num_train_epochs", "abc")
    assert line == "error: command line --num_train_epochs: invalid float value: 'abc'"
    assert str(TINY_SFT) not in line
    line = sft_error(capsys, "--dataset", str(convs_file), "--nosuchflag", "1")
    assert line.startswith("error: command line: unknown option --nosuchflag")
    config = tmp_path / "bad.yaml"
    config.write_text(TINY_SFT.read_text().replace("num_train_epochs: 2", "num_train_epochs: abc"))
    line = sft_error(capsys, "--dataset", str(convs_file), config=config)
    assert line == f"error: config {config}: num_train_epochs: invalid float value: 'abc'"
    assert sft_error(capsys, config=tmp_path / "none.yaml") == f"error: config {tmp_path / 'none.yaml'}: no such file"


def test_cli_bad_input_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "train.sft", "--config", str(TINY_SFT), "--dataset", "sharegtp"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert errors == [errors[0]] and "sharegtp" in errors[0] and "sharegpt" in errors[0]


def test_failed_run_is_recorded_as_failed_on_wandb(convs_file, tmp_path, monkeypatch):
    """The trainer opens the W&B run; a failure inside training must close it with exit code 1, which wandb
    writes to the offline run's log."""
    import trl

    import wandb
    from train.sft import main

    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "test",
                       "WANDB_RUN_GROUP": "test", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)

    run_dirs = []

    def boom(self, *args, **kwargs):
        assert wandb.run is not None  # the run is open: the failure happens inside it
        run_dirs.append(Path(wandb.run.dir).parent)  # where this run writes (earlier runs may set wandb's dir)
        raise RuntimeError("boom")

    monkeypatch.setattr(trl.SFTTrainer, "training_step", boom)
    with pytest.raises(RuntimeError, match="boom"):
        main(["--config", str(TINY_SFT), "--dataset", str(convs_file), "--output_dir", str(tmp_path / "sft"),
              "--report_to", "wandb", "--max_steps", "1", "--max_length", "64", "--save_strategy", "no"])
    assert wandb.run is None
    assert "got exitcode: 1" in (run_dirs[0] / "logs" / "debug.log").read_text()


# -- a full disk: refused before training, and a save it cuts short is resumed from the last whole checkpoint -----
def test_a_disk_too_small_for_the_run_is_refused_before_training(capsys, convs_file, tmp_path, monkeypatch):
    import re

    from train import common

    monkeypatch.setattr(common, "free_bytes", lambda path: 1000)
    out = tmp_path / "sft"
    line = sft_error(capsys, "--dataset", str(convs_file), "--output_dir", str(out), "--max_steps", "1",
                     "--max_length", "64", "--report_to", "none")
    assert re.fullmatch(rf"error: output_dir {out}: 1000 bytes free on its disk, and this run saves about [\d.]+ MiB "
                        r"\(1000 < \d+ bytes: a checkpoint [\d.]+ MiB, the final model [\d.]+ MiB\); free space or "
                        "choose another output_dir", line), line
    assert not list(out.glob("checkpoint-*"))


def test_save_bytes_counts_weights_and_optimizer_state():
    from types import SimpleNamespace

    from train import common

    S, save_bytes = common.SMALL_FILES, common.save_bytes

    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 10, bias=False))  # 210 fp32 params
    model[1].weight.requires_grad_(False)  # 100 of them frozen, as a PEFT base is
    args = SimpleNamespace(deepspeed=None, optim="adamw_torch", save_strategy="steps", save_only_model=False)
    full, peft = SimpleNamespace(use_peft=False), SimpleNamespace(use_peft=True)
    assert save_bytes(model, args, full, True) == (S + 840 + 2 * 440, S + 840)  # all weights + AdamW's 2 moments of 110
    assert save_bytes(model, args, peft, True) == (S + 440 + 2 * 440, S + 440 + S + 400)  # the adapter, the merged base
    assert save_bytes(model, SimpleNamespace(**{**vars(args), "deepspeed": "z3.json"}), full, False)[0] == \
        S + 840 + 12 * 110
    assert save_bytes(model, SimpleNamespace(**{**vars(args), "save_strategy": "no"}), full, False) == (0, S + 840)


@pytest.mark.slow
def test_a_save_that_fills_the_disk_is_one_line_and_the_retry_resumes(capsys, convs_file, tmp_path, monkeypatch):
    """The disk fills up inside checkpoint-2 (its weights and optimizer written, not its trainer state): one line
    that says what to do, the partial checkpoint removed, and the same command then resumes from checkpoint-1."""
    import errno

    import transformers
    import trl

    from train.sft import main

    out = tmp_path / "sft"
    argv = ["--dataset", str(convs_file), "--output_dir", str(out), "--max_steps", "2", "--max_length", "64",
            "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--report_to", "none",
            "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1", "--merge_adapter", "false"]
    saves = []
    real_save = transformers.Trainer._save_rng_state

    def disk_full_at_second_save(self, output_dir):
        saves.append(output_dir)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", disk_full_at_second_save)
    line = sft_error(capsys, *argv)
    assert line.startswith(f"error: output_dir {out}: the disk filled up while saving a checkpoint (")
    assert line.endswith("free now); free space and run the same command again: it resumes from checkpoint-1")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]

    monkeypatch.undo()
    resumed, real_train = [], trl.SFTTrainer.train
    monkeypatch.setattr(trl.SFTTrainer, "train", lambda self, **kw: resumed.append(kw) or real_train(self, **kw))
    assert main(["--config", str(TINY_SFT), *argv]) == 0
    assert resumed == [{"resume_from_checkpoint": str(out / "checkpoint-1")}]
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2
