"""SFT with TRL on the real embedded SmolLM2: loss masks, packing, the EOS, a few real steps."""
import json

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
    assert summary["steps"] == 2 and summary["first_loss"] > 0 and summary["last_loss"] > 0
    assert (trained_sft / "adapter_model.safetensors").exists()
    from synth.engines import Sampling, get_engine

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
