import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_MODEL = "embedded:smollm2-135m-instruct"


def pytest_collection_finish(session):
    """Start what waits on the network while the other tests run: the gpu extra's pip resolution."""
    for item in session.items:
        if item.name == "test_the_gpu_extra_resolves_to_its_pins":
            item.module.start_dry_run()


@pytest.fixture(scope="session")
def hf_engine():
    from core.engines import get_engine

    engine = get_engine("hf", model=TINY_MODEL, batch_size=16)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smol_tokenizer(hf_engine):
    return hf_engine.tokenizer


TINY = str(ROOT / "tests/fixtures/tiny_hf.yaml")  # tiny.yaml on hf (its auto is tested in test_engine_choice.py)
# Small but real: 32 sampled instructions in rounds of 8, a round to a shard, short responses. A shape for the
# resume and kill tests (shards to kill between); the paper's own shape runs in tests/test_paper_shape.py.
SMALL = ["--stages", "instructions", "responses", "--mix", "single", "--total_prompts", "32", "--n", "8",
         "--rounds_per_shard", "1", "--hf_batch_size", "8",
         "--max_tokens", "64", "--response_max_tokens", "48", "--response_batch_size", "8"]


def cli(out, *extra, verb="run"):
    return [verb, "--config", TINY, "--output_dir", str(out), *SMALL, *extra]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real tiny synthesis run (instructions + responses), shared by the end-to-end tests."""
    from synth.__main__ import main

    out = tmp_path_factory.mktemp("full")
    assert main(cli(out, "--report_to", "wandb")) == 0
    return out


@pytest.fixture(scope="session")
def trained_sft(tiny_run, tmp_path_factory):
    """Real LoRA steps on a tiny Magpie set (the responses of the session's tiny run); shared by the
    training and evaluation tests."""
    from train.sft import main

    out = tmp_path_factory.mktemp("sft")
    argv = ["--config", str(ROOT / "recipes/configs/sft/tiny.yaml"), "--dataset", str(tiny_run / "responses"),
            "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "1", "--max_length", "256", "--report_to", "none",
            "--save_strategy", "no", "--logging_steps", "1",
            # Two steps must move the model: the config's warmup would spend step 1 at lr 0, and then
            # 8 of 12 greedy eval answers came out unchanged in fp32 (all 12 change with this).
            "--warmup_steps", "0", "--learning_rate", "1e-3"]
    assert main(argv) == 0
    return out


# The chain after the tiny run (multi-turn, every tiny tagger, filter, export): short generations keep it cheap.
CHAIN = ["--mt_batch_size", "8", "--mt_max_tokens", "48", "--response_max_tokens", "48", "--tag_batch_size", "8",
         "--base_max_tokens", "24", "--report_to", "none"]


def chain_argv(out, *extra):
    return ["run", "--config", TINY, "--output_dir", str(out), *CHAIN, *extra]


def seeded(tiny_run, dest, stages=("instructions", "responses")):
    import shutil

    for s in stages:
        shutil.copytree(Path(tiny_run) / s, Path(dest) / s)
    return dest


@pytest.fixture(scope="session")
def chain(tiny_run, tmp_path_factory):
    """The tiny run carried on through multiturn, tag, filter and export (tests/test_chain.py, the report)."""
    from synth.__main__ import main

    out = seeded(tiny_run, tmp_path_factory.mktemp("chain"))
    assert main(chain_argv(out, "--stages", "multiturn", "tag", "filter", "export", "--report_to", "wandb")) == 0
    return out


EVAL_TINY = str(ROOT / "recipes/configs/eval/tiny.yaml")
# A real tiny evaluation: few prompts, short answers.
EVAL_SMALL = ["--alpaca_limit", "8", "--arena_limit", "4", "--alpaca_max_tokens", "64", "--arena_max_tokens", "64",
              "--report_to", "wandb"]


@pytest.fixture(scope="session")
def evaluated(trained_sft, tmp_path_factory):
    """The tiny SFT model and its base evaluated on the same references and judge (tests/test_eval.py, the report)."""
    from eval.__main__ import main

    root = tmp_path_factory.mktemp("eval")
    common = ["run", "--config", EVAL_TINY, "--references_dir", str(root / "refs"), *EVAL_SMALL]
    assert main([*common, "--model", str(trained_sft), "--output_dir", str(root / "sft")]) == 0
    assert main([*common, "--model", "embedded:smollm2-135m-instruct", "--row", "llama-3-8b-instruct",
                 "--output_dir", str(root / "base")]) == 0
    return root


def kill_when(module: str, argv: list[str], path: Path) -> bool:
    """Run `python -m module argv` and SIGKILL it as soon as `path` exists (a finished shard, say).
    True when the path appeared; False when the run ended first (callers then fail with its stderr, kept
    in `kill_when.stderr`). No wall-clock limit: a loaded machine is slow (pytest-timeout's `--timeout N` if you
    want one)."""
    with open(os.devnull, "wb") as out, __import__("tempfile").TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=err)
        while not path.exists() and proc.poll() is None:
            time.sleep(0.1)
        reached = path.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        err.seek(0)
        kill_when.stderr = err.read().decode(errors="replace")[-2000:]
    return reached


def stream_coincidences(records: list[dict], n: int) -> dict:
    """How often two instructions of consecutive rounds of the same sampling cell are the same text, per child
    offset (round i child j against round i+1 child j+d). Independent streams give every offset the same small
    rate; a seed scheme that hands one stream to two samples shows as an offset where (nearly) all coincide (the
    old one: d = -2 on vLLM, d = -batch on hf). Returns the overall rate and the worst offset's counts."""
    from collections import Counter

    text = {r["id"]: r["raw_instruction"] for r in records}
    cell = {r["id"] // n: (r["gen_input_configs"]["temperature"], r["gen_input_configs"]["top_p"]) for r in records}
    pairs, equal = Counter(), Counter()
    for a, ta in text.items():
        ra, ja = divmod(a, n)
        if cell.get(ra + 1) != cell[ra]:
            continue
        for jb in range(n):
            tb = text.get((ra + 1) * n + jb)
            if tb is not None:
                pairs[jb - ja] += 1
                equal[jb - ja] += ta == tb
    rate = sum(equal.values()) / max(sum(pairs.values()), 1)
    worst = max(pairs, key=lambda d: (equal[d] - rate * pairs[d], d)) if pairs else 0
    return {"rate": rate, "offset": worst, "equal": equal[worst], "pairs": pairs[worst],
            "distinct": len(set(text.values())), "records": len(text)}


def assert_independent_streams(records: list[dict], n: int) -> dict:
    seeds = [r["gen_input_configs"]["seed"] for r in records]
    assert len(set(seeds)) == len(seeds), "two samples share a seed"
    c = stream_coincidences(records, n)
    assert c["pairs"] > 0, "no two consecutive rounds of one cell: the check saw nothing"
    # Chance allows a few coincidences (a 135M model repeats its commonest questions); a shared stream gives one
    # for every pair at its offset.
    assert c["equal"] <= 3 + 3 * c["rate"] * c["pairs"], f"child offset {c['offset']}: {c}"
    return c
