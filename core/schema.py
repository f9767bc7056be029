"""The record schema: every column name and label set the project uses, in one place.

Records use TRL's conversational format (`messages`) plus the fields of the reference release
(Magpie-Align's datasets), in the release's column order. The judge writes the label sets below;
the filter ranks the ordinal ones; export and the stats read the same lists.
"""
from __future__ import annotations

# The reference release's label sets (unitag.py); ordinal sets lowest first.
TASK_CATEGORIES = (
    "Information seeking", "Reasoning", "Planning", "Editing", "Coding & Debugging", "Math",
    "Role playing", "Data analysis", "Creative writing", "Advice seeking", "Brainstorming", "Others",
)
DIFFICULTY_LEVELS = ("very easy", "easy", "medium", "hard", "very hard")
QUALITY_LEVELS = ("very poor", "poor", "average", "good", "excellent")
LEVELS: dict[str, tuple[str, ...]] = {"input_quality": QUALITY_LEVELS, "difficulty": DIFFICULTY_LEVELS}

# Tag columns, in the release's order.
TAGS = ("task_category", "other_task_category", "difficulty", "intent", "knowledge", "input_quality",
        "quality_explanation", "instruct_reward", "reward_model", "reward_difference", "llama_guard_2", "language",
        "min_neighbor_distance", "repeat_count", "min_similar_conversation_id")
# The release's columns: what export writes (those present) after `messages`. `steer` is ours: what steered a
# record's step 1 (synth/steering.py), a struct with a field per kind in STEER_KINDS that the run used. So are the
# reasoning and tool-call columns (core/answer.py): `reasoning` (a thinking model's thinking, kept out of `messages`),
# `reasoning_closed` (false: it never ended, so there is no answer), `tools` (the tools offered, JSON) and `tool_calls`
# (the answer's calls, TRL's {type, function: {name, arguments}}).
REASONING_COLUMNS = ("reasoning", "reasoning_closed")
TOOL_COLUMNS = ("tools", "tool_calls")
COLUMNS = ("id", "instruction", "response", "messages", "pre_query_template", "gen_input_configs",
           "gen_response_configs", "steer") + REASONING_COLUMNS + TOOL_COLUMNS + TAGS
STEER_KINDS = ("prefill", "system", "persona", "topic", "language")
# Tags with a small set of values: distributions in the manifest, the card and the plots, with their
# display order (empty: by count).
CATEGORICAL: dict[str, tuple[str, ...]] = {
    "task_category": TASK_CATEGORIES, "difficulty": DIFFICULTY_LEVELS, "input_quality": QUALITY_LEVELS,
    "llama_guard_2": ("safe",), "language": (),
}
