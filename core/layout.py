"""The run folder: every folder a recipe writes under `runs/<recipe>/`, named once.

    instructions/  responses/  multiturn/  tagged/  filtered/  export/      synth stages (dataset directories)
    preferences/{prompts,samples,scored,export}/                             the DPO pairs (synth preferences)
    sft/  dpo/                                                               train.sft, train.dpo
    eval/  eval_dpo/                                                         python -m eval run (one per model)
    report/index.html  table.md  wandb/                                      python -m report, eval table, W&B

The stage table, the report, the paper table and recipes/bootstrap.sh (`run_sft`, `run_dpo`, `run_eval`,
`run_report`, which spell the same names in shell) read these names; `python -m core.layout RUN` prints them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

FOLDERS = {
    "instructions": "instructions", "responses": "responses", "multiturn": "multiturn", "tagged": "tagged",
    "filtered": "filtered", "export": "export",
    "pref_prompts": "preferences/prompts", "pref_samples": "preferences/samples",
    "pref_scored": "preferences/scored", "pref_export": "preferences/export",
    "sft": "sft", "dpo": "dpo", "eval": "eval", "eval_dpo": "eval_dpo",
    "report": "report", "table": "table.md", "wandb": "wandb",
}


@dataclass(frozen=True)
class RunLayout:
    """`RunLayout(root).tagged` -> root/tagged, and so on for every name of FOLDERS."""
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def __getattr__(self, name: str) -> Path:
        if name in FOLDERS:
            return self.root / FOLDERS[name]
        raise AttributeError(f"a run folder has no {name!r}; its folders: {', '.join(FOLDERS)}")

    def evals(self) -> list[Path]:
        """The evaluation folders of the run (eval/, eval_dpo/, ...): those holding a results.json."""
        return sorted(p for p in self.root.glob("eval*") if (p / "results.json").exists())


if __name__ == "__main__":
    layout = RunLayout(sys.argv[1] if len(sys.argv) > 1 else "runs/<recipe>")
    for key in FOLDERS:
        print(f"{key:<14} {getattr(layout, key)}")
