"""The hf engine on the real embedded SmolLM2: BOS handling, stops, n samples, seeds."""
import copy

from tokenizers.processors import TemplateProcessing

from core import templates
from core.engines import Sampling, cut_at_stop, encode_prompt, get_engine


def bos_adding(tokenizer):
    """A copy of the tokenizer that prepends BOS to every encoding, as Llama-3's does."""
    tok = copy.deepcopy(tokenizer)
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_token_id)])
    return tok


def test_template_with_bos_text_gets_one_bos(smol_tokenizer):
    tok = bos_adding(smol_tokenizer)
    pq = templates.from_tokenizer(tok).pre_query_template
    assert pq.startswith(tok.bos_token)
    naive = tok(pq)["input_ids"]
    assert naive[:2] == [tok.bos_token_id, tok.bos_token_id]  # the trap: a second BOS
    ids = encode_prompt(tok, pq)
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert len(ids) == len(naive) - 1


def test_engine_feeds_one_bos(hf_engine, smol_tokenizer):
    engine = get_engine("hf", model="embedded:smollm2-135m-instruct", tokenizer=bos_adding(smol_tokenizer))
    pq = templates.from_tokenizer(engine.tokenizer).pre_query_template
    fed = []
    orig = engine.model.generate
    engine.model.generate = lambda **kw: fed.append(kw["input_ids"][0].tolist()) or orig(**kw)
    engine.complete([pq], Sampling(max_tokens=4, seed=0))
    assert fed[0][0] == engine.tokenizer.bos_token_id and fed[0][1] != engine.tokenizer.bos_token_id
    assert fed[0] == encode_prompt(smol_tokenizer, pq)


def test_n_samples_stop_strings_and_seed(hf_engine):
    pq = templates.from_tokenizer(hf_engine.tokenizer).pre_query_template
    s = Sampling(temperature=1.0, top_p=1.0, max_tokens=48, n=6, stop=("\n", "<|im_end|>"), seed=7)
    a = hf_engine.complete([pq], s)[0]
    assert len(a) == 6
    assert all("\n" not in c.text and "<|im_end|>" not in c.text for c in a)
    assert sum(bool(c.text.strip()) for c in a) >= 4
    assert [c.text for c in hf_engine.complete([pq], s)[0]] == [c.text for c in a]  # same seed, same samples
    b = hf_engine.complete([pq], s.replace(seed=8))[0]
    assert [c.text for c in b] != [c.text for c in a]
    assert len({c.text for c in a}) > 1  # n samples of one prompt are not copies


def test_length_and_chat(hf_engine):
    out = hf_engine.complete(["<|im_start|>user\nWrite a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"],
                             Sampling(temperature=0, max_tokens=5))[0][0]
    assert out.finish_reason == "length" and out.num_tokens == 5
    (c,), = hf_engine.chat([[{"role": "user", "content": "What is the capital of France?"}]],
                           Sampling(temperature=0, max_tokens=40))
    assert "Paris" in c.text


def test_cut_at_stop():
    assert cut_at_stop("abc\ndef<|im_end|>", ["<|im_end|>", "\n"]) == ("abc", True)
    assert cut_at_stop("abc", ["\n"]) == ("abc", False)


def test_top_logprobs_of_each_generated_token(hf_engine):
    """Sampling.logprobs: the top-k log-probabilities per generated token (the AlpacaEval judge reads them);
    greedy decoding picks the top-1 of each step."""
    import math

    (c,), = hf_engine.chat([[{"role": "user", "content": "Say hello."}]],
                           Sampling(temperature=0, max_tokens=4, logprobs=5))
    assert c.top_logprobs is not None and len(c.top_logprobs) == c.num_tokens
    first = c.top_logprobs[0]
    assert 1 <= len(first) <= 5 and all(v <= 0 for v in first.values())
    assert sum(math.exp(v) for v in first.values()) <= 1 + 1e-3
    assert c.text.startswith(max(first, key=first.get))
    (plain,), = hf_engine.chat([[{"role": "user", "content": "Say hello."}]], Sampling(temperature=0, max_tokens=4))
    assert plain.top_logprobs is None and plain.text == c.text


def test_auto_dtype_follows_the_cpus_native_bf16(monkeypatch, hf_engine):
    import torch

    from core.engines import dtype as hf

    for probe, native in (("_is_avx512_bf16_supported", True), ("_is_amx_tile_supported", True), (None, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda p=probe: p == "_is_avx512_bf16_supported")
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda p=probe: p == "_is_amx_tile_supported")
        assert hf.cpu_computes_bf16() is native
        assert hf.dtype_name("auto", "cpu") == ("bfloat16" if native else "float32")
        assert hf.dtype_name("bfloat16", "cpu") == "bfloat16"  # an explicit dtype is kept
    # The session's engine was built with the default dtype (auto) on this machine's CPU.
    monkeypatch.undo()
    assert hf_engine.model.dtype == (torch.bfloat16 if hf.cpu_computes_bf16() else torch.float32)


def test_tiny_sft_trains_in_fp32_where_bf16_is_emulated(monkeypatch, capsys):
    from conftest import ROOT

    from core.engines import dtype as hf
    from train.sft import _hardware_precision, parse

    argv = ["--config", str(ROOT / "recipes/configs/sft/tiny.yaml"), "--output_dir", "unused"]
    for native in (True, False):
        monkeypatch.setattr(hf, "cpu_computes_bf16", lambda n=native: n)
        _, training_args, model_args = parse(argv)
        assert model_args.dtype == "auto" and training_args.bf16  # the YAML: auto, and the paper's bf16 flag
        out = _hardware_precision(model_args, training_args)
        assert model_args.dtype == ("bfloat16" if native else "float32")
        assert out.bf16 is native and out.use_cpu
        assert ("no native bf16" in capsys.readouterr().err) is not native


def test_document_prefix_is_what_the_tokenizer_puts_before_plain_text(smol_tokenizer):
    """A base model prompted with a plain document (reward_difference's URIAL prompt) gets the BOS its tokenizer
    adds by itself: none for SmolLM2, `<|begin_of_text|>` for Llama-3 (here: a post-processor adding one)."""
    import copy

    from tokenizers.processors import TemplateProcessing

    from core.engines import document_prefix

    assert document_prefix(smol_tokenizer) == "" and document_prefix(None) == ""
    with_bos = copy.deepcopy(smol_tokenizer)
    bos = "<|endoftext|>"
    with_bos._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, with_bos.convert_tokens_to_ids(bos))])
    assert document_prefix(with_bos) == bos
    assert with_bos(document_prefix(with_bos) + "Hi", add_special_tokens=False)["input_ids"] == \
        with_bos("Hi")["input_ids"]  # the prefix gives exactly the ids plain tokenization gives
