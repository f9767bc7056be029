"""System prompts that steer what MAGPIE synthesizes (paper section 5 / Figure 15).

Step 1 normally runs with no system prompt (paper App. D.3: one lowers instruction quality).
To synthesize a domain, the pre-query template is rendered *with* a system turn describing the
assistant's job and the users it serves; the model then writes queries of that kind. The prompts
below are ours; set `system_prompt` in a config to use any other (e.g. the paper's exact text).
"""
from __future__ import annotations

CONTROL_PROMPTS = {
    "math": (
        "You are an AI assistant that helps people solve mathematics problems step by step. Users bring "
        "you questions from arithmetic to calculus and proofs, and you explain the reasoning that leads "
        "to each answer."
    ),
    "code": (
        "You are an AI assistant that helps people program. Users ask you to write, explain, review and "
        "debug code in many languages, and you give working code with clear explanations."
    ),
    "translation": (
        "You are an AI assistant that translates text between languages. Users give you passages and "
        "ask for translations that keep the meaning, tone and context of the original."
    ),
}
# Language control: the same idea with the user's language named. The sentence alone is what steering
# (synth/steering.py) adds to any other system turn for its `language` key.
ASSISTANT = "You are a helpful AI assistant."
LANGUAGE_SENTENCE = "The user speaks {language} and writes every message in {language}; you answer in {language}."
LANGUAGE_PROMPT = f"{ASSISTANT} {LANGUAGE_SENTENCE}"
# Translation samples run into multi-line passages: the reference turns the newline stop off for
# them (scripts/magpie_translation.sh) and keeps the first paragraph-bound query with its sanitizer.
NO_NEWLINE_STOP = {"translation"}


def system_prompt_for(control: str | None, system_prompt: str | None) -> str | None:
    """The step-1 system prompt: explicit text wins, then a named control (`math`, `code`,
    `translation`, or `language:<Name>`)."""
    if system_prompt:
        return system_prompt
    if not control:
        return None
    if control.startswith("language:"):
        language = control.split(":", 1)[1].strip()
        if not language:
            raise ValueError("control language:<Name> needs a language, e.g. language:French")
        return LANGUAGE_PROMPT.format(language=language)
    if control not in CONTROL_PROMPTS:
        raise ValueError(f"unknown control {control!r}; choose {', '.join(CONTROL_PROMPTS)} or language:<Name>")
    return CONTROL_PROMPTS[control]
