import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_MODEL = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="session")
def hf_engine():
    from synth.engines import get_engine

    engine = get_engine("hf", model=TINY_MODEL, batch_size=16)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smol_tokenizer(hf_engine):
    return hf_engine.tokenizer
