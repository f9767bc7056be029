"""Pre-query templates, derived from a model's own chat template.

MAGPIE's one trick (paper section 2): give an aligned model only the left part of its chat
template, up to where a user message would begin, and it writes a user message. We find that
part by rendering conversations whose contents are sentinels and cutting around them, so any
chat model works without a hand-written table. The reference repo keeps such a table
(configs/model_configs.json); where it deliberately differs from what the template renders,
`OVERRIDES` reproduces it, each entry saying why.

Everything the template renders is what the model sees at chat time, default system turns
included (Magpie issue #28: Qwen2.5's "You are Qwen" turn). Two inputs change that text and are
fixed by the config, never by the machine: the template variables (`template_kwargs`:
enable_thinking, reasoning_effort, ...), passed to every render, here and in the engines'
`render_chat`; and the date, which templates read from `strftime_now` or `date_string`
(gpt-oss, SmolLM3, Mistral-Small-3, Llama-3.x) and which is the configured `template_date`.
"""
from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import asdict, dataclass, field

from .reasoning import reasoning_format
from .tools import detect_format as detect_tool_format
from .tools import probe_messages as tool_probe

U1, A1, U2 = "MAGPIEuserONE", "MAGPIEassistantONE", "MAGPIEuserTWO"

# The date every template renders as today, unless a role's `template_date` says otherwise. Llama-3.1's
# own template falls back to this day ("26 Jul 2024") when none is given; any fixed day would do, as long as
# a run does not depend on the day it runs (a pre-query template that changes at midnight splits a run's
# prefix cache and its records).
DEFAULT_TEMPLATE_DATE = "2024-07-26"
DATE_KEY = "template_date"  # the key of template_kwargs that holds the date (YYYY-MM-DD); not a Jinja variable


class NoChatTemplate(ValueError):
    pass


@dataclass(frozen=True)
class Override:
    family: str
    model: str  # regex on the model id (case-insensitive)
    template: str | None = None  # or: a regex that identifies the family's chat template
    by_template: bool = False  # recognised by `template` whatever the model id: a chat format, not one model's quirk
    drop_default_system: bool = False
    pre_query_template: str | None = None
    newline_stop: bool = True
    sanitize: bool = False
    response_stops: tuple[str, ...] | None = None  # what ends an answer, when not the turn markers (stop_strings)
    extra_stops: tuple[str, ...] = ()  # end-of-sequence tokens the template never renders
    why: str = ""


# Order matters: the first match wins.
OVERRIDES = [
    Override(
        "llama-3.1", r"llama-3\.[13]", template=r"Cutting Knowledge Date",
        drop_default_system=True, newline_stop=False, sanitize=True,
        why="the template injects a dated system turn; the reference uses none (paper App. D.3: a system"
        " prompt lowers instruction quality). The reference turns the newline stop off for 3.1/3.3 and"
        " cleans with its sanitizer instead (scripts/magpie-llama3.1-8b.sh).",
    ),
    Override(
        "qwen2", r"qwen(1\.5|2)-(?!.*2\.5)|qwen2-|qwen1\.5-",
        template=r"system(\n|\\n)You are a helpful assistant\.<\|im_end\|>",
        drop_default_system=True,
        why="Qwen2/Qwen1.5 templates add a generic default system turn; the reference's pre-query"
        " template has none. (Qwen2.5 keeps its 'You are Qwen' turn, as the reference does.)",
    ),
    Override(
        "gemma-2", r"gemma-2", pre_query_template="<bos><start_of_turn>user\n\n",
        newline_stop=False, sanitize=True,
        why="the reference starts Gemma-2 instructions after a blank line, and runs it without the"
        " newline stop, cleaning with its sanitizer (scripts/magpie-gemma2-9b.sh).",
    ),
    Override(
        "mistral", r"mistral-7b-instruct", pre_query_template="<s> [INST] ",
        why="the reference wrote the decoded form of the tokenized template (sentencepiece puts a space"
        " before [INST]); kept so that runs match the released data.",
    ),
    Override(
        "phi-3", r"phi-3", pre_query_template="<s> <|user|>\n",
        why="as Mistral: the reference's string is the decoded sentencepiece form.",
    ),
    Override(
        "gpt-oss", r"gpt-oss", template=r"<\|start\|>assistant<\|channel\|>", by_template=True,
        response_stops=("<|return|>", "<|call|>"),
        why="Harmony: an answer runs through channels (analysis<|end|><|start|>assistant<|channel|>final"
        "<|message|>...), so <|end|>, <|start|>, <|channel|> and <|message|> end an instruction but not an"
        " answer, which ends at <|return|> (<|call|> for a tool call). The pre-query template keeps the default"
        " system message (identity, knowledge cutoff, the configured date, reasoning effort, channels): every"
        " chat has it.",
    ),
    Override(
        "llama-4", r"llama-4", template=r"<\|header_start\|>", by_template=True,
        extra_stops=("<|eom|>", "<|end_of_text|>"),
        why="Llama-4 ends generation at <|eot|>, <|eom|> and <|end_of_text|> (torchtune's Llama4Tokenizer"
        " stop_tokens); the template renders only <|eot|>.",
    ),
]
# Families checked on their real templates that need no override (tests/test_families.py):
#   Qwen3: no default system turn; enable_thinking=false changes only what follows the user turn (an empty
#     <think></think> after the assistant header), so the pre-query template is the same either way.
#   Gemma-3: no default system turn; a system prompt is folded into the first user turn, which
#     pre_query_with_system finds by rendering it.
#   Phi-4: <|im_start|>user<|im_sep|>, no default system turn.
#   SmolLM3: a default system turn with the date and the reasoning mode (/think, /no_think from enable_thinking),
#     which the template leaves unclosed (no <|im_end|>) when no tools are given; kept as rendered, since that is
#     what the model sees when it answers.
#   Mistral-Small-3.x: its default [SYSTEM_PROMPT] with the date (kept, like Qwen2.5's default turn).
#   DeepSeek-R1 distills: <｜User｜> after the bos; the generation prompt opens <think>.
#   OLMo-2: <|user|> turns end with a plain newline, so the newline stop also ends the user turn.


@dataclass(frozen=True)
class Template:
    pre_query_template: str
    stop_strings: tuple[str, ...]  # end of turn, start of a new turn, eos/bos
    mt_append_template: str  # after an assistant turn's end marker, up to the next user content
    assistant_header: str = ""  # what the generation prompt adds after the end of a user turn
    newline_stop: bool = True  # reference: stop instructions at the first newline
    sanitize: bool = False  # reference: clean instructions (when the newline stop is off)
    family: str | None = None  # the override applied, if any
    notes: tuple[str, ...] = field(default_factory=tuple)
    # pre_query_template + instruction + post_query_template is what the chat template renders for that instruction
    # with the generation prompt (where no override changed pre_query_template): the end of the user turn and the
    # assistant header, with whatever the flags put there (Qwen3's empty <think></think>).
    post_query_template: str = ""
    end_of_turn: str = ""  # the token that ends an assistant turn (<|eot_id|>, <|im_end|>, <|return|>, ...)
    response_stop_strings: tuple[str, ...] = ()  # what ends an answer (stop_strings but reasoning tags, or the override's)
    template_kwargs: dict = field(default_factory=dict, hash=False)  # the variables every render got
    template_date: str | None = None  # the date the template rendered as today, where it reads one
    reasoning_format: str | None = None  # how answers carry reasoning: "think", "harmony" (core/reasoning.py) or None
    tool_format: str | None = None  # how answers write tool calls: hermes, llama3_json, mistral, harmony (core/tools.py)
    # The template ends a finished conversation's last answer otherwise than an earlier one (gpt-oss, Qwen3): the
    # prompt for a follow-up is cut from the conversation with the next user turn (followup_prefix).
    followup_by_prefix: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("stop_strings", "notes", "response_stop_strings"):
            d[k] = list(getattr(self, k))
        return d


# -- rendering: the one way every chat template of the repo is rendered --------------------------------------------
_STRFTIME = re.compile(r"""strftime_now\(\s*(["'])([^"'\\]*)\1\s*\)""")


def template_day(template_kwargs: dict | None) -> datetime.date:
    value = (template_kwargs or {}).get(DATE_KEY) or DEFAULT_TEMPLATE_DATE
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"template_date must be a date YYYY-MM-DD, got {value!r}") from None


def render_args(chat_template: str, template_kwargs: dict | None = None) -> tuple[str, dict, str | None]:
    """(chat template, variables, date) of a render: the template with each `strftime_now("<format>")` replaced by
    the configured date in that format (transformers' strftime_now reads the clock, and a variable cannot replace
    it), and the template kwargs plus `date_string` (Llama-3.x's variable, "%d %b %Y") where the template reads it.
    The date is None for a template that reads none."""
    variables = {k: v for k, v in (template_kwargs or {}).items() if k != DATE_KEY}
    day = template_day(template_kwargs)
    reads_date = isinstance(chat_template, str) and ("strftime_now" in chat_template or "date_string" in chat_template)
    if not reads_date:
        return chat_template, variables, None
    chat_template = _STRFTIME.sub(lambda m: json.dumps(day.strftime(m.group(2))), chat_template)
    if "date_string" in chat_template:
        variables.setdefault("date_string", day.strftime("%d %b %Y"))
    return chat_template, variables, day.isoformat()


def _render(chat_template: str, messages: list[dict], gen: bool, bos: str | None, eos: str | None,
            template_kwargs: dict | None = None) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    chat_template, variables, _ = render_args(chat_template, template_kwargs)
    rendered, _ = render_jinja_template(
        conversations=[messages], chat_template=chat_template, add_generation_prompt=gen,
        **{"bos_token": bos or "", "eos_token": eos or "", **variables},
    )
    return rendered[0]


def apply_chat_template(tokenizer, conversation, add_generation_prompt: bool = True,
                        template_kwargs: dict | None = None) -> str:
    """`tokenizer.apply_chat_template` as text, with a role's template kwargs and its fixed date: what the engines'
    `render_chat` calls, so that answers are rendered with the flags the pre-query template was derived with."""
    chat_template, variables, _ = render_args(tokenizer.chat_template, template_kwargs)
    own = {} if chat_template == tokenizer.chat_template else {"chat_template": chat_template}
    return tokenizer.apply_chat_template(list(conversation), tokenize=False,
                                         add_generation_prompt=add_generation_prompt, **own, **variables)


# -- derivation ------------------------------------------------------------------------------------------------------
def _after(text: str, marker: str) -> str:
    return text[text.index(marker) + len(marker):]


def _common_tags(a: str, b: str) -> str:
    """The common prefix of a and b up to the end of a complete tag and the whitespace after it
    (`<|end|>\n`, not `<|end|>\n<|`, which Phi-3's `<|user|>` and `<|endoftext|>` share)."""
    m = re.match(r"^(.*[>\]]\s*)", os.path.commonprefix([a, b]), re.S)
    return m.group(1) if m else ""


REASONING_TAGS = ("<think>", "</think>")
# Special-token-like pieces of a template: <|eot_id|>, <start_of_turn>, </s>, [INST], <｜User｜>.
_TAG = re.compile(r"<[^<>\s]+>|\[/?[A-Z_]+\]")


def find_override(model_id: str | None, chat_template: str) -> Override | None:
    if model_id:  # a known id that matches no override: trust its template (chat formats aside)
        o = next((o for o in OVERRIDES if re.search(o.model, model_id, re.I)), None)
        return o or next((o for o in OVERRIDES if o.by_template and re.search(o.template, chat_template)), None)
    return next((o for o in OVERRIDES if o.template and re.search(o.template, chat_template)), None)


def derive(chat_template: str | None, bos_token: str | None = None, eos_token: str | None = None,
           model_id: str | None = None, template_kwargs: dict | None = None) -> Template:
    """Pre-query template, stop strings and multi-turn append template of a chat template.

    No model is loaded: only the Jinja template is rendered. `model_id` (optional) selects a
    family override; without it, overrides are recognised from the template text. `template_kwargs`
    are the variables of every render (enable_thinking, reasoning_effort, tools, ...), and
    `template_kwargs["template_date"]` (YYYY-MM-DD) the day the template renders as today.
    """
    if not chat_template:
        raise NoChatTemplate(
            f"model {model_id or '(unnamed)'} has no chat template; pass --pre-query-template "
            "(and --stop-strings) or choose a chat model"
        )
    template_kwargs = dict(template_kwargs or {})
    template_day(template_kwargs)  # a bad date fails here, naming the key

    def render(messages, gen):
        return _render(chat_template, messages, gen, bos_token, eos_token, template_kwargs)

    u1, a1, u2 = {"role": "user", "content": U1}, {"role": "assistant", "content": A1}, {"role": "user", "content": U2}
    one, gen = (render([u1], g) for g in (False, True))
    two, three = (render(c, False) for c in ([u1, a1], [u1, a1, u2]))
    for text, what in ((one, "a user turn"), (two, "an assistant turn"), (three, "a second user turn")):
        if U1 not in text:
            raise NoChatTemplate(f"chat template of {model_id or 'this model'} does not render {what} "
                                 "with its content; pass --pre-query-template")

    pre_query = one[: one.index(U1)]
    user_end = _after(one, U1)  # e.g. '<|eot_id|>', '<|im_end|>\n'
    assistant_end = _after(two, A1)
    between = three[three.index(A1) + len(A1): three.index(U2)]
    # What follows the assistant's end-of-turn marker up to the next user content.
    end_marker = _common_tags(between, assistant_end) if assistant_end else ""
    mt_append = between[len(end_marker):]
    gen_suffix = _after(gen, U1)
    assistant_header = gen_suffix[len(_common_tags(gen_suffix, user_end)):] if gen_suffix != user_end else ""
    # The assistant's end of turn: the marker after its content (gpt-oss ends a last turn with <|return|>, an
    # earlier one with <|end|>: the first tag after the content of a last turn), else the eos.
    end_of_turn = next(iter(_TAG.findall(end_marker) or _TAG.findall(assistant_end)), eos_token or "")

    # Stop at anything that ends a turn or starts one (the reference's stop_tokens per family:
    # for Llama-3 <|eot_id|>, <|start_header_id|>, <|end_header_id|>, <|end_of_text|>).
    o = find_override(model_id, chat_template)
    stops = [t for text in (user_end, assistant_end, mt_append, assistant_header) for t in _TAG.findall(text)]
    stops += [eos_token or "", bos_token or "", *(o.extra_stops if o else ())]
    stops = tuple(dict.fromkeys(s for s in stops if s))
    # An answer may reason: Qwen3's and SmolLM3's <think></think> (which enable_thinking=false puts in the assistant
    # header) end an instruction, not an answer.
    answer_stops = tuple(s for s in stops if s not in REASONING_TAGS)

    notes = []
    tools = template_kwargs.get("tools")
    if tools:
        plain = _render(chat_template, [u1], False, bos_token, eos_token,
                        {k: v for k, v in template_kwargs.items() if k != "tools"})
        if plain == one:
            raise ValueError(f"the chat template of {model_id or 'this model'} does not render tools; tool-call data "
                             "needs a model whose template takes `tools` (Qwen2.5/3, Llama-3.1+, Mistral, gpt-oss, ...)")
    if o is not None and tools and (o.pre_query_template is not None or o.drop_default_system):
        notes.append(f"override {o.family}: {o.why} Not applied with tools: the pre-query template is the template's "
                     "own rendering, tools included")
    elif o is not None:
        notes.append(f"override {o.family}: {o.why}")
        if o.pre_query_template is not None:
            pre_query = o.pre_query_template
        elif o.drop_default_system:
            bos_prefix = bos_token if bos_token and one.startswith(bos_token) else ""
            pre_query = bos_prefix + mt_append
    _, _, day = render_args(chat_template, template_kwargs)
    if day is not None:
        notes.append(f"the template reads today's date: rendered as {day} (template_date)")
    followup_by_prefix = two + mt_append != three[: three.index(U2)]
    if followup_by_prefix:
        notes.append("the template ends a conversation's last answer otherwise than an earlier one (gpt-oss: <|return|>"
                     " for <|end|>; Qwen3: an empty <think></think>): a follow-up prompt is cut from the conversation"
                     " with the next user turn (followup_prefix), not the history + mt_append_template")
    if "strftime_now" in _STRFTIME.sub("", chat_template).replace("strftime_now is defined", ""):
        notes.append("the template calls strftime_now with a computed format: that date is the machine's")
    probe_tools, probe = tool_probe()
    try:  # how the template writes a call (a template without tools renders none, or raises on the role)
        rendered_call = _render(chat_template, probe, False, bos_token, eos_token, {**template_kwargs, "tools": probe_tools})
    except Exception:
        rendered_call = None
    return Template(
        reasoning_format=reasoning_format(chat_template), tool_format=detect_tool_format(rendered_call, chat_template),
        pre_query_template=pre_query, stop_strings=stops, mt_append_template=mt_append,
        assistant_header=assistant_header, newline_stop=o.newline_stop if o else True,
        sanitize=o.sanitize if o else False, family=o.family if o else None, notes=tuple(notes),
        post_query_template=gen_suffix, end_of_turn=end_of_turn,
        response_stop_strings=tuple(o.response_stops) if o and o.response_stops else answer_stops,
        template_kwargs={k: v for k, v in template_kwargs.items() if k != DATE_KEY}, template_date=day,
        followup_by_prefix=followup_by_prefix,
    )


def pre_query_with_system(chat_template: str, system_prompt: str, bos_token: str | None = None,
                          eos_token: str | None = None, template_kwargs: dict | None = None) -> str:
    """The pre-query template with a system turn (for controlled synthesis, paper section 5)."""
    try:
        text = _render(chat_template, [{"role": "system", "content": system_prompt},
                                       {"role": "user", "content": U1}], False, bos_token, eos_token, template_kwargs)
    except Exception as e:  # e.g. Gemma's template raises on a system role
        raise ValueError(f"this chat template cannot render a system turn ({e}); a control system "
                         "prompt needs a model whose template has one") from None
    if system_prompt not in text or U1 not in text:
        raise ValueError("this chat template drops the system turn; a control system prompt has no effect")
    return text[: text.index(U1)]


def followup_prefix(render_chat, messages: list[dict]) -> str:
    """What comes before the next user message of a conversation: `render_chat(messages + [user], False)` cut at the
    user's content (`render_chat`: an engine's). Rendering the history alone and adding mt_append_template gives the
    same text where a template ends a finished conversation's last answer as it ends an earlier one, but not for
    gpt-oss (Harmony: <|return|>, then <|end|>) nor Qwen3 (an empty <think></think> in the last answer only)."""
    text = render_chat([*messages, {"role": "user", "content": U2}], False)
    return text[: text.rindex(U2)]


def from_tokenizer(tokenizer, model_id: str | None = None, template_kwargs: dict | None = None) -> Template:
    return derive(getattr(tokenizer, "chat_template", None), tokenizer.bos_token, tokenizer.eos_token,
                  model_id=model_id, template_kwargs=template_kwargs)


def tokenizer_from_config(config: dict):
    """A tokenizer holding only what a tokenizer_config carries for templates: the chat template, bos/eos and the
    special tokens (`added_tokens_decoder`, or `added_tokens` {id: content}). Enough to derive a template and its
    stop ids without the vocabulary (a checked-in fixture, `python -m synth template --chat_template_file`); any
    other text is one unknown token."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    def text(t):
        return t.get("content") if isinstance(t, dict) else t

    table = config.get("added_tokens_decoder") or config.get("added_tokens") or {}
    added = {int(i): text(t) for i, t in table.items()}
    unknown = "<magpie-unknown>"
    tok = Tokenizer(WordLevel({**{c: i for i, c in added.items()}, unknown: max(added, default=-1) + 1},
                              unk_token=unknown))
    tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in added.values()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unknown, bos_token=text(config.get("bos_token")),
                                   eos_token=text(config.get("eos_token")))
    fast.chat_template = config.get("chat_template")
    return fast


def read_chat_template_file(path) -> dict:
    """A tokenizer_config.json / chat_template.json (chat template, bos/eos, special tokens) or a bare Jinja file, as
    a tokenizer_config-like dict."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"chat template file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".json":
        return {"chat_template": text}
    config = json.loads(text)
    template = config.get("chat_template")
    if isinstance(template, list):  # named variants: the default one, as transformers picks it
        template = {v["name"]: v["template"] for v in template}.get("default")
    if not isinstance(template, str):
        raise ValueError(f"{path} has no chat_template; give a tokenizer_config.json, chat_template.json or .jinja")
    return {**config, "chat_template": template}


def stop_token_ids(tokenizer, stop_strings) -> list[int]:
    """Ids of the stop strings that are single tokens of the vocabulary (fast to stop on)."""
    encoded = ((s, tokenizer(s, add_special_tokens=False)["input_ids"]) for s in stop_strings)
    return sorted({enc[0] for s, enc in encoded if len(enc) == 1 and tokenizer.decode(enc) == s})
