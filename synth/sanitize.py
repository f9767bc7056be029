"""Instruction checks and cleaning.

`check` is applied to every sampled instruction and names why one is dropped (the counts go to
the manifest and W&B). `clean` reproduces what the reference's sanitizer does for the families it
runs without the newline stop (Llama-3.1/3.3, Gemma-2): there a sample often runs on into an
answer, and the instruction has to be cut out of it.
"""
from __future__ import annotations

import re

# Openings of an assistant reply rather than a user request: a pre-query template sometimes
# leads the model straight into answering (paper section 2 notes responses "immediately").
_RESPONSE_OPENINGS = re.compile(
    r"^(sure[,!.]|certainly[,!.]|of course[,!.]|absolutely[,!.]|i'?d be (happy|glad)|i would be (happy|glad)"
    r"|here('s| is| are) (a|an|the|some|my)\b|as an ai\b|i'?m sorry,? but|i apologi[sz]e"
    r"|hello!? how can i|how (can|may) i (help|assist) you|thank you for (your|reaching))",
    re.I,
)
# Chat-template debris: the model wrote a turn marker as text.
_TEMPLATE_DEBRIS = re.compile(r"<\|[a-z_]+\|>|\[/?INST\]|<start_of_turn>|<end_of_turn>", re.I)

# A reasoning model at the pre-query template often thinks or answers instead of asking (Magpie issue #10): its
# thinking markup where a user's request should be.
_THINKING = re.compile(r"</?think>|<\|channel\|>\s*analysis", re.I)

REASONS = ("empty", "truncated", "response_like", "thinking_instead")


def check(instruction: str, finish_reason: str) -> str | None:
    """The reason to drop an instruction, or None to keep it."""
    text = instruction.strip()
    if not text:
        return "empty"
    if _THINKING.search(text):
        return "thinking_instead"
    if finish_reason == "length":
        return "truncated"  # ran into max_tokens: no complete request
    if _RESPONSE_OPENINGS.match(text) or _TEMPLATE_DEBRIS.search(text):
        return "response_like"
    return None


_LABELS = ["Task", "Prompt", "Original Prompt", "Question", "The Problem", "Problem", "Scenario",
           "Situation", "Context", "Challenge", "Query", "Request", "Instructions", "Instruction",
           "Description", "Descriptions"]
_LABEL_RE = re.compile(
    r"^\s*(?:(?:\*\*|#+\s*)?(?:" + "|".join(map(re.escape, _LABELS)) + r")(?:\*\*)?\s*:(?:\*\*)?"
    r"|Question\s+\d+[:.]|Part\s+\d+:|Q\d+[:.]|\d+\.(?!\d)|[A-Za-z0-9]\))\s*",
    re.I,
)
_ANSWER_RE = re.compile(r"(?:Answers?|The answer is|Correct answer|The correct answer|Answer is|Explanation"
                        r"|Here are some|Solution Approach|Solution)s?:")
_STEP_RE = re.compile(r"#{1,3} Step 1:?")


def strip_label(text: str) -> str:
    return _LABEL_RE.sub("", text, count=1).strip()


def clean(instruction: str) -> str:
    """Reference-style cleaning: drop a leading label, cut at an answer or step marker, then keep
    the text up to the first question mark or, failing that, the first line."""
    text = strip_label(instruction.strip())
    for marker in (_ANSWER_RE, _STEP_RE):
        m = marker.search(text)
        if m:
            return strip_label(text[: m.start()].strip().strip("*").strip())
    if "?" in text:
        text = text.split("?", 1)[0].strip() + "?"
    else:
        text = text.split("\n", 1)[0].strip()
    return strip_label(text.replace("**", "").strip())
