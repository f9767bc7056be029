"""The house: imports run one way (report -> {synth, train, eval} -> core), function-level imports included; every
stage writes a folder of the run layout; the preference stages' group names expand in order."""
import ast
import re

import pytest
from conftest import ROOT

PACKAGES = ("core", "synth", "train", "eval", "report")
ALLOWED = {"core": set(), "synth": {"core"}, "train": {"core"}, "eval": {"core"},
           "report": {"core", "synth", "train", "eval"}}


def imports_between_packages() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> where, for every import of one project package by another, at any depth."""
    edges: dict[tuple[str, str], list[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in PACKAGES and top != pkg:
                        edges.setdefault((pkg, top), []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return edges


def test_imports_run_one_way():
    edges = imports_between_packages()
    wrong = {f"{a} -> {b}": where[:3] for (a, b), where in edges.items() if b not in ALLOWED[a]}
    assert not wrong, wrong
    assert ("report", "synth") in edges and ("synth", "core") in edges  # the check sees real imports


def test_no_module_function_strings_name_code_to_run():
    """Work is handed over as function objects (they pickle by reference), never as "module:function" text."""
    target = re.compile(r"""["'](core|synth|train|eval|report)(\.\w+)+:\w+["']""")
    found = [f"{p.relative_to(ROOT)}:{i}" for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if target.search(line)]
    assert not found, found


def test_every_stage_writes_a_folder_of_the_run_layout(tmp_path):
    from core.layout import FOLDERS, RunLayout
    from synth.stages import STAGES

    run = RunLayout(tmp_path)
    for stage in STAGES.values():
        assert stage.out in FOLDERS, stage.name
        assert all(i in STAGES for i in stage.inputs), stage.name
    assert run.pref_scored == tmp_path / "preferences" / "scored" and run.table == tmp_path / "table.md"
    with pytest.raises(AttributeError, match="has no 'taged'"):
        run.taged


def test_preference_group_names_expand_to_their_stages_in_order():
    from synth.stages import VERB_STAGES, expand

    assert expand(["tag", "preferences", "preference_pairs"]) == [
        "tag", "preference_prompts", "preferences", "preference_scores", "preference_pairs"]
    assert expand(["preference_prompts", "preferences"]) == ["preference_prompts", "preferences"]  # each once
    assert list(VERB_STAGES["preferences"]) == expand(["preferences", "preference_pairs"])
