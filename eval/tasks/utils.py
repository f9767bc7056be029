"""Dataset hook for the repo's tiny lm-eval tasks (`eval/tasks/*.yaml`).

The YAMLs name their data the lm-eval way (`dataset_path: json`, `dataset_kwargs: {data_files: ...}`), but
lm-eval passes `data_files` straight to `datasets.load_dataset`, which resolves a relative path against the
*current working directory*, not the YAML's folder. So the YAMLs also set
`custom_dataset: !function utils.local_json`: lm-eval then calls this function with the task's
`dataset_kwargs` (plus its `metadata`), and we resolve relative paths against this folder. The run works
from any working directory and needs no hub access (the `json` builder ships with `datasets`).
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def _resolve(files):
    if isinstance(files, (str, Path)):
        path = Path(files)
        return str(path if path.is_absolute() else HERE / path)
    if isinstance(files, dict):  # {split: path | [paths]}
        return {split: _resolve(f) for split, f in files.items()}
    return [_resolve(f) for f in files]


def local_json(data_files=None, **_metadata):
    """`datasets.load_dataset("json", data_files=...)` with paths relative to eval/tasks/."""
    import datasets

    if data_files is None:
        raise ValueError("local_json needs dataset_kwargs.data_files in the task YAML")
    resolved = _resolve(data_files)
    for f in _flatten(resolved):
        if not Path(f).is_file():
            raise FileNotFoundError(f"tiny task data file is missing: {f}")
    return datasets.load_dataset("json", data_files=resolved)


def _flatten(files):
    if isinstance(files, str):
        return [files]
    if isinstance(files, dict):
        return [f for v in files.values() for f in _flatten(v)]
    return [f for v in files for f in _flatten(v)]
