"""Pre-query templates, derived from a model's own chat template.

MAGPIE's one trick (paper section 2): give an aligned model only the left part of its chat
template, up to where a user message would begin, and it writes a user message. We find that
part by rendering conversations whose contents are sentinels and cutting around them, so any
chat model works without a hand-written table. The reference repo keeps such a table
(configs/model_configs.json); where it deliberately differs from what the template renders,
`OVERRIDES` reproduces it, each entry saying why.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

U1, A1, U2 = "MAGPIEuserONE", "MAGPIEassistantONE", "MAGPIEuserTWO"


class NoChatTemplate(ValueError):
    pass


@dataclass(frozen=True)
class Override:
    family: str
    model: str  # regex on the model id (case-insensitive)
    template: str | None = None  # or: a regex that identifies the family's chat template
    drop_default_system: bool = False
    pre_query_template: str | None = None
    newline_stop: bool = True
    sanitize: bool = False
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
]


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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop_strings"], d["notes"] = list(self.stop_strings), list(self.notes)
        return d


def _render(chat_template: str, messages: list[dict], gen: bool, bos: str | None, eos: str | None) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages], chat_template=chat_template, add_generation_prompt=gen,
        bos_token=bos or "", eos_token=eos or "",
    )
    return rendered[0]


def _after(text: str, marker: str) -> str:
    return text[text.index(marker) + len(marker):]


def _common_tags(a: str, b: str) -> str:
    """The common prefix of a and b up to the end of a complete tag and the whitespace after it
    (`<|end|>\n`, not `<|end|>\n<|`, which Phi-3's `<|user|>` and `<|endoftext|>` share)."""
    m = re.match(r"^(.*[>\]]\s*)", os.path.commonprefix([a, b]), re.S)
    return m.group(1) if m else ""


# Special-token-like pieces of a template: <|eot_id|>, <start_of_turn>, </s>, [INST], <｜User｜>.
_TAG = re.compile(r"<[^<>\s]+>|\[/?[A-Z_]+\]")


def find_override(model_id: str | None, chat_template: str) -> Override | None:
    if model_id:  # a known id that matches no override: trust its template
        return next((o for o in OVERRIDES if re.search(o.model, model_id, re.I)), None)
    return next((o for o in OVERRIDES if o.template and re.search(o.template, chat_template)), None)


def derive(chat_template: str | None, bos_token: str | None = None, eos_token: str | None = None,
           model_id: str | None = None) -> Template:
    """Pre-query template, stop strings and multi-turn append template of a chat template.

    No model is loaded: only the Jinja template is rendered. `model_id` (optional) selects a
    family override; without it, overrides are recognised from the template text.
    """
    if not chat_template:
        raise NoChatTemplate(
            f"model {model_id or '(unnamed)'} has no chat template; pass --pre-query-template "
            "(and --stop-strings) or choose a chat model"
        )
    u1, a1, u2 = {"role": "user", "content": U1}, {"role": "assistant", "content": A1}, {"role": "user", "content": U2}
    one, gen = (_render(chat_template, [u1], g, bos_token, eos_token) for g in (False, True))
    two, three = (_render(chat_template, c, False, bos_token, eos_token) for c in ([u1, a1], [u1, a1, u2]))
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

    # Stop at anything that ends a turn or starts one (the reference's stop_tokens per family:
    # for Llama-3 <|eot_id|>, <|start_header_id|>, <|end_header_id|>, <|end_of_text|>).
    stops = [t for text in (user_end, assistant_end, mt_append, assistant_header) for t in _TAG.findall(text)]
    stops = tuple(dict.fromkeys(s for s in stops + [eos_token or "", bos_token or ""] if s))

    o = find_override(model_id, chat_template)
    notes = []
    if o is not None:
        notes.append(f"override {o.family}: {o.why}")
        if o.pre_query_template is not None:
            pre_query = o.pre_query_template
        elif o.drop_default_system:
            bos_prefix = bos_token if bos_token and one.startswith(bos_token) else ""
            pre_query = bos_prefix + mt_append
    return Template(
        pre_query_template=pre_query, stop_strings=stops, mt_append_template=mt_append,
        assistant_header=assistant_header, newline_stop=o.newline_stop if o else True,
        sanitize=o.sanitize if o else False, family=o.family if o else None, notes=tuple(notes),
    )


def pre_query_with_system(chat_template: str, system_prompt: str, bos_token: str | None = None,
                          eos_token: str | None = None) -> str:
    """The pre-query template with a system turn (for controlled synthesis, paper section 5)."""
    try:
        text = _render(chat_template, [{"role": "system", "content": system_prompt},
                                       {"role": "user", "content": U1}], False, bos_token, eos_token)
    except Exception as e:  # e.g. Gemma's template raises on a system role
        raise ValueError(f"this chat template cannot render a system turn ({e}); a control system "
                         "prompt needs a model whose template has one") from None
    if system_prompt not in text or U1 not in text:
        raise ValueError("this chat template drops the system turn; a control system prompt has no effect")
    return text[: text.index(U1)]


def from_tokenizer(tokenizer, model_id: str | None = None) -> Template:
    return derive(getattr(tokenizer, "chat_template", None), tokenizer.bos_token, tokenizer.eos_token,
                  model_id=model_id)


def stop_token_ids(tokenizer, stop_strings) -> list[int]:
    """Ids of the stop strings that are single tokens of the vocabulary (fast to stop on)."""
    encoded = ((s, tokenizer(s, add_special_tokens=False)["input_ids"]) for s in stop_strings)
    return sorted({enc[0] for s, enc in encoded if len(enc) == 1 and tokenizer.decode(enc) == s})
