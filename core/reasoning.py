"""Reasoning in answers: the one place a thinking model's answer is cut into its thinking and what it tells the user.

Thinking models write a chain of thought before the answer, in their family's markup (the template says which:
`Template.reasoning_format`, derived in core/templates.py):

    think     <think>\nthinking\n</think>\n\nanswer       Qwen3, SmolLM3, QwQ; DeepSeek-R1 distills, whose generation
                                                        prompt already opened the <think> (the answer starts inside it)
    harmony   <|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>answer   gpt-oss

`split` returns (reasoning, answer, closed): records keep the thinking in a `reasoning` column and the answer alone in
`messages` (core/answer.py); `closed` is False where the thinking never ended (the answer ran into max_tokens first),
which the stages count and the filter can drop. A server that parses reasoning itself (vLLM's --reasoning-parser behind
the openai engine) hands it over in `Completion.reasoning`; `split_completion` takes that as it is.

Thinking models also need their own sampling: the paper answers greedily, and their cards warn that greedy decoding
makes them repeat endlessly. `card_sampling` holds what each card recommends.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Split:
    reasoning: str | None  # the thinking; None where the answer has none
    answer: str  # what the model told the user (tool calls still in it, in the family's markup)
    closed: bool = True  # False: the thinking began and never ended, so there is no answer


def reasoning_format(chat_template: str | None) -> str | None:
    """How a chat template's answers carry reasoning: "harmony" (analysis/final channels), "think" (<think> tags) or
    None."""
    text = chat_template or ""
    if "<|channel|>" in text and "analysis" in text:
        return "harmony"
    if THINK_OPEN in text or THINK_CLOSE in text:
        return "think"
    return None


def opened(post_query_template: str) -> bool:
    """Whether the generation prompt leaves a <think> open (DeepSeek-R1 distills: `<｜Assistant｜><think>\\n`), so the
    answer begins inside the thinking."""
    return post_query_template.rfind(THINK_OPEN) > post_query_template.rfind(THINK_CLOSE)


def thinks(tpl) -> bool:
    """Whether answers through template `tpl` (a core.templates.Template) reason: Harmony always does; a <think> family
    unless its generation prompt closes an empty block (Qwen3 and SmolLM3 with enable_thinking false)."""
    fmt, post = getattr(tpl, "reasoning_format", None), tpl.post_query_template
    if fmt != "think":
        return fmt == "harmony"
    return not (THINK_OPEN in post and post.rfind(THINK_CLOSE) > post.rfind(THINK_OPEN))


# -- Harmony ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HarmonyMessage:
    channel: str | None  # analysis, commentary, final
    recipient: str | None  # to=functions.get_weather: a tool call
    body: str
    ended: bool  # closed by <|end|>, <|return|> or <|call|> (a stop string cut the last one: see split)


_END = re.compile(r"<\|(?:end|return|call)\|>")


def harmony_messages(text: str) -> list[HarmonyMessage]:
    """The messages of a Harmony answer (what follows the generation prompt `<|start|>assistant`): each
    `[assistant][ to=recipient]<|channel|>name[ <|constrain|>json]<|message|>body<|end|>`, the next one after
    `<|start|>`. The recipient may stand before the channel or after it (the Harmony spec allows both)."""
    out = []
    for part in text.split("<|start|>"):
        if "<|message|>" not in part:
            continue
        head, body = part.split("<|message|>", 1)
        end = _END.search(body)
        channel = re.search(r"<\|channel\|>\s*(\w+)", head)
        to = re.search(r"to=([^\s<]+)", head)
        out.append(HarmonyMessage(channel.group(1) if channel else None, to.group(1) if to else None,
                                  body[:end.start()] if end else body, end is not None))
    return out


def _split_harmony(text: str) -> Split:
    messages = harmony_messages(text)
    if not messages:
        # The markup is special tokens: a server that drops them (skip_special_tokens) leaves "analysis...assistantfinal
        # ..." (vLLM's own gpt-oss handling, when asked for text); anything else is a plain answer.
        m = re.match(r"\s*analysis(.*?)assistantfinal(.*)\Z", text, re.S)
        if m:
            return Split(m.group(1).strip(), m.group(2).strip(), True)
        return Split(None, text.strip(), True)
    thinking = [m.body.strip() for m in messages if m.channel == "analysis"]
    final = [m.body.strip() for m in messages if m.channel == "final"]
    # An answer's stop strings are <|return|> and <|call|>: an analysis message without its <|end|> is where
    # generation stopped (max_tokens, or the model's eos), with no answer after it.
    closed = not (messages[-1].channel == "analysis" and not messages[-1].ended)
    return Split("\n\n".join(thinking) if thinking else None, "\n\n".join(final), closed)


# -- <think> ----------------------------------------------------------------------------------------------------------
def _split_think(text: str, prefilled: bool, thinking: bool) -> Split:
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        body, prefilled = body[len(THINK_OPEN):], True
    elif not prefilled and not (thinking and THINK_CLOSE in body):
        return Split(None, text.strip(), True)
    # prefilled, or a thinking model's </think> without its opening (an R1 template without the prefill, whose model
    # wrote the <think> unseen); with thinking off a stray </think> is text of the answer
    if THINK_CLOSE in body:
        thinking, answer = body.split(THINK_CLOSE, 1)
        return Split(thinking.strip(), answer.strip(), True)
    return Split(body.strip(), "", False)


def split(text: str, tpl=None) -> Split:
    """(reasoning, answer, closed) of an answer written through template `tpl` (a core.templates.Template; None: no
    reasoning format, the text is the answer): the text as the engine returns it, after the generation prompt."""
    fmt = getattr(tpl, "reasoning_format", None)
    if fmt == "harmony":
        return _split_harmony(text)
    if fmt == "think":
        return _split_think(text, opened(tpl.post_query_template), thinks(tpl))
    return Split(None, text.strip(), True)


def split_completion(c, tpl=None) -> Split:
    """`split` of an engine's Completion; a server's own parsed reasoning (Completion.reasoning) is taken as it is."""
    if getattr(c, "reasoning", None) is not None:
        return Split(c.reasoning.strip(), c.text.strip(), c.finish_reason != "length" or bool(c.text.strip()))
    return split(c.text, tpl)


def message(role: str, answer: str, parts: Split, keep_reasoning: bool = False, tool_calls=None) -> dict:
    """An assistant turn in TRL's messages format: the answer alone, or (keep_reasoning) with the thinking as
    `reasoning_content`, the key TRL's training templates and Qwen3's chat template read; tool calls as
    `tool_calls`."""
    m = {"role": role, "content": answer}
    if keep_reasoning and parts.reasoning is not None:
        m["reasoning_content"] = parts.reasoning
    if tool_calls:
        m["tool_calls"] = tool_calls
    return m


# -- sampling from the model cards ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CardSampling:
    family: str
    model: str  # regex on the model id (case-insensitive); the first match wins
    thinking: dict  # what the card recommends in thinking mode: temperature, top_p, top_k
    non_thinking: dict | None  # and without thinking, where the card says
    source: str


# The paper's greedy answers are wrong for thinking models: each card asks for sampling (Qwen3: "DO NOT use greedy
# decoding, as it can lead to performance degradation and endless repetitions"). min_p=0 in the Qwen cards is vLLM's
# default. Applied when thinking is on and the config leaves response_temperature/top_p/top_k unset.
CARDS = [
    CardSampling("qwq", r"qwq", dict(temperature=0.6, top_p=0.95), None,
                 "huggingface.co/Qwen/QwQ-32B README, Usage Guidelines: 'Use Temperature=0.6 and TopP=0.95 instead of "
                 "Greedy decoding to avoid endless repetitions'"),
    CardSampling("qwen3", r"qwen3", dict(temperature=0.6, top_p=0.95, top_k=20),
                 dict(temperature=0.7, top_p=0.8, top_k=20),
                 "huggingface.co/Qwen/Qwen3-8B README, Best Practices: thinking mode Temperature=0.6, TopP=0.95, "
                 "TopK=20, MinP=0; non-thinking Temperature=0.7, TopP=0.8, TopK=20, MinP=0"),
    CardSampling("deepseek-r1", r"deepseek-r1", dict(temperature=0.6, top_p=0.95), None,
                 "github.com/deepseek-ai/DeepSeek-R1 README, Usage Recommendations (every distill): temperature "
                 "0.5-0.7, 0.6 recommended; top-p 0.95"),
    CardSampling("gpt-oss", r"gpt-oss", dict(temperature=1.0, top_p=1.0), None,
                 "github.com/openai/gpt-oss README, Recommended Sampling Parameters: 'We recommend sampling with "
                 "temperature=1.0 and top_p=1.0'"),
    CardSampling("smollm3", r"smollm3", dict(temperature=0.6, top_p=0.95), None,
                 "huggingface.co/HuggingFaceTB/SmolLM3-3B README, How to use: 'We recommend setting temperature=0.6 "
                 "and top_p=0.95 in the sampling parameters'"),
]


def card_sampling(model: str | None) -> CardSampling | None:
    return next((c for c in CARDS if model and re.search(c.model, model, re.I)), None)
