"""Steering step 1: what the aligned model is nudged to write, drawn record by record.

Plain MAGPIE (paper section 2) gives the model nothing but its pre-query template. Four levers steer it; each is
optional and any of them combine:

- `prefill`: a stub put right after the pre-query template, e.g. "Write a Python function that" (MAGPIE-Prefill,
  as KodCode used it for coding questions). The model goes on with the user's own sentence, so the instruction
  is the stub plus what the model wrote.
- `system_prompts`: a system turn drawn from a weighted list (paper section 5 steers a whole run with one system
  prompt, `control`; a list mixes several in one run, in the proportions of its weights).
- `personas`, `topics`: who the user is and what they want to talk about, said in the system turn.
- `language`: the language the user writes in, said in the system turn (section 5's language control).

Every record draws its own choices from its own keys, the round's seed and its sample index (the keys of its
random stream, instructions.round_seed), so a resumed run, another shard layout or a Ray actor draws the same
steer for the same record. Each record keeps what steered it in its `steer` column, e.g.
{"prefill": "Write a Python function that", "persona": "a nurse on night shifts"}: one field per lever in use.
"""
from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import templates
from core.schema import STEER_KINDS

from . import control

# The config keys of synth/config.py's InstructionArgs this module reads; unset, they leave a run as plain MAGPIE.
KEYS = ("prefill", "system_prompts", "personas", "topics", "language")
DATA = Path(__file__).with_name("data")  # the lists shipped with the repo (synth/data/README.md says where from)

# A persona or a topic goes into the system turn, not into the user turn. The pre-query template ends where the
# user's words begin: whatever is put there *is* the user's message, a prefill that the model continues, never a
# description that it acts on. The system turn is the one place before it where a chat model reads whom it is
# serving and about what, which is how section 5 of the paper steers the task; a model that writes the user's
# turn after "You are talking with a retired nurse" writes as that person would.
PERSONA_SENTENCE = "You are talking with {persona}."
TOPIC_SENTENCE = "The conversation is about {topic}."

# A data file in a steering key: `synth/data/personas.yaml`, `prefills.yaml:code` (one group of the file). No
# whitespace, so that an inline text such as "Summarize the notes in todo.txt" stays a text.
_FILE = re.compile(r"^(?P<path>\S+\.(?:ya?ml|json|txt))(?::(?P<group>[\w-]+))?$")


@dataclass(frozen=True)
class Option:
    text: str
    weight: float = 1.0


def _option(item, key: str, where: str) -> Option:
    if isinstance(item, str):
        text, weight = item, 1.0
    elif isinstance(item, dict) and "text" in item and set(item) <= {"text", "weight"}:
        text, weight = item["text"], item.get("weight", 1.0)
    else:
        raise ValueError(f"{key}: entry {item!r} {where}is neither a text nor {{text: ..., weight: ...}}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{key}: entry {item!r} {where}has an empty text")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ValueError(f"{key}: entry {text[:40]!r} {where}has weight {weight!r}; give a positive number")
    return Option(text.strip(), float(weight))


def _resolve(path: str, key: str) -> Path:
    """A data file named in a config: as given (relative to the working directory), else relative to the repo
    (`synth/data/topics.yaml` from anywhere), else in synth/data/ (`topics.yaml`)."""
    for p in (Path(path), Path(__file__).parent.parent / path, DATA / path):
        if p.is_file():
            return p
    raise ValueError(f"{key}: no such file {path} (give a path, or one of synth/data/: "
                     f"{', '.join(sorted(p.name for p in DATA.glob('*.yaml')))})")


def read_file(path: str, group: str | None, key: str) -> list[Option]:
    """The entries of a data file: a YAML/JSON list (texts or {text, weight}), a mapping of group name -> such a
    list (every group, or the one named after a colon), or a .txt file with one text a line (# comments)."""
    import yaml

    p = _resolve(path, key)
    where = f"in {path} "
    if p.suffix == ".txt":
        if group:
            raise ValueError(f"{key}: {path} is a text file, it has no groups (drop :{group})")
        return [_option(line, key, where) for line in p.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{key}: {path} is not valid YAML ({' '.join(str(e).split())[:160]})") from None
    if isinstance(data, dict):
        groups = {k: v for k, v in data.items() if isinstance(v, list)}
        if not groups:
            raise ValueError(f"{key}: {path} holds no list of entries")
        if group is not None:
            if group not in groups:
                raise ValueError(f"{key}: {path} has no group {group!r}; its groups: {', '.join(groups)}")
            data = groups[group]
        else:
            data = [item for items in groups.values() for item in items]
    elif group is not None:
        raise ValueError(f"{key}: {path} is one list, it has no groups (drop :{group})")
    if not isinstance(data, list):
        raise ValueError(f"{key}: {path} holds no list of entries")
    return [_option(item, key, where) for item in data]


def options(value, key: str) -> tuple[Option, ...]:
    """The options of one steering key: data files, texts and {text, weight} entries, in any mix (a YAML list, or
    one value: a single text or file). None: the key is unset."""
    if value is None:
        return ()
    out: list[Option] = []
    for item in [value] if isinstance(value, (str, dict)) else list(value):
        m = _FILE.match(item.strip()) if isinstance(item, str) else None
        out.extend(read_file(m["path"], m["group"], key) if m else [_option(item, key, "")])
    if not out:
        raise ValueError(f"{key}: no entries in {value!r}; give texts, {{text, weight}} entries or a data file")
    return tuple(out)


@dataclass(frozen=True)
class Steering:
    """The options a run draws from, as read (the files' entries, not their names: an edited file is another
    config). `drawn`: the run uses the keys of this module (a prompt per record); otherwise any steer comes from
    `control` / `system_prompt` alone, one system turn for the whole run, rendered once as before."""
    prefill: tuple[Option, ...] = ()
    system: tuple[Option, ...] = ()
    persona: tuple[Option, ...] = ()
    topic: tuple[Option, ...] = ()
    language: str | None = None
    drawn: bool = False
    kinds: tuple[str, ...] = field(init=False)  # the fields of each record's steer, in this order

    def __post_init__(self):
        object.__setattr__(self, "kinds", tuple(k for k in STEER_KINDS if getattr(self, k)))

    @classmethod
    def from_args(cls, a) -> Steering:
        """The steering of an InstructionArgs (or anything with its keys), every value checked."""
        named = (a.control or "").startswith("language:")
        language = a.language.strip() if a.language else None
        if a.language is not None and not language:
            raise ValueError("language: give a language name, e.g. French")
        if a.system_prompts is not None and (a.system_prompt or (a.control and not named)):
            raise ValueError("system_prompts draws a system turn per record; system_prompt / control fix one for the "
                             "whole run: set one of them")
        if a.system_prompt:  # explicit text wins over control, as control.system_prompt_for
            fixed = a.system_prompt
        else:
            fixed = control.system_prompt_for(a.control, None)  # checks the name
            if named:
                if language:
                    raise ValueError(f"control {a.control} and language {language} both name the user's language: "
                                     "set one of them")
                fixed, language = None, a.control.split(":", 1)[1].strip()
        system = options(a.system_prompts, "system_prompts") or ((Option(fixed),) if fixed else ())
        drawn = any(getattr(a, k) is not None for k in KEYS)
        return cls(options(a.prefill, "prefill"), system, options(a.personas, "personas"),
                   options(a.topics, "topics"), language, drawn)

    @property
    def active(self) -> bool:
        return bool(self.kinds)

    def draw(self, seed: int) -> dict[str, str]:
        """One record's steer, a field per kind, drawn (weighted) from `seed` alone."""
        rng, steer = random.Random(seed), {}
        for kind in self.kinds:
            if kind == "language":
                steer[kind] = self.language
                continue
            opts = getattr(self, kind)
            steer[kind] = opts[0].text if len(opts) == 1 else rng.choices(opts, [o.weight for o in opts])[0].text
        return steer

    def to_dict(self) -> dict:
        return {k: [asdict(o) for o in getattr(self, k)] if k != "language" else self.language for k in self.kinds}


def system_text(steer: dict) -> str | None:
    """The system turn a steer asks for: its system prompt (or a plain assistant line when it has none), then a
    sentence for each of persona, topic and language. None: no system turn."""
    extra = [s.format(**{k: steer[k]}) for k, s in (("persona", PERSONA_SENTENCE), ("topic", TOPIC_SENTENCE),
                                                     ("language", control.LANGUAGE_SENTENCE)) if steer.get(k)]
    base = steer.get("system") or (control.ASSISTANT if extra else None)
    return " ".join([base, *extra]) if base else None


@functools.lru_cache(maxsize=4096)  # a run has a few hundred distinct system turns: each rendered once a process
def _with_system(chat_template: str, system: str, bos: str | None, eos: str | None, template_kwargs: str) -> str:
    return templates.pre_query_with_system(chat_template, system, bos, eos, json.loads(template_kwargs) or None)


@dataclass(frozen=True)
class Prompter:
    """What a shard needs to build a steered record's prompt: the steering, the plain pre-query template and the
    chat template that renders a system turn (with its bos/eos and the role's template variables, as JSON: the
    render cache keys on it). It travels to Ray actors as it is."""
    steering: Steering
    pre_query_template: str
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    template_kwargs: str = "{}"

    def __post_init__(self):
        if self.chat_template is None and any(k in self.steering.kinds for k in ("system", "persona", "topic",
                                                                                 "language")):
            raise templates.NoChatTemplate(
                "steering with a system turn (system_prompts, personas, topics, language) needs the model's chat "
                "template; drop pre_query_template, or steer with prefill alone")

    def pre_query(self, steer: dict) -> str:
        """The record's pre-query template: the plain one, or the one with the steer's system turn."""
        system = system_text(steer)
        if system is None:
            return self.pre_query_template
        return _with_system(self.chat_template, system, self.bos_token, self.eos_token, self.template_kwargs)

    def prompt(self, steer: dict) -> tuple[str, str]:
        """(the record's pre-query template, the prompt the engine completes: the template, then any prefill)."""
        pre_query = self.pre_query(steer)
        return pre_query, pre_query + steer.get("prefill", "")


def label(text: str | None, width: int = 60) -> str:
    """A steer's value short enough for a table row or a chart axis."""
    if text is None:
        return "(none)"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
