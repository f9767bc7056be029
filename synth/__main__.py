"""`python -m synth <verb> --config recipes/configs/synth/<profile>.yaml [--key value ...]`

Verbs (each reads and writes dataset directories under --output_dir):
  instructions   step 1: sample instructions from the pre-query template  -> instructions/
  responses      step 2: answer them with the chat template               -> responses/
  multiturn      extend conversations with follow-up turns                -> multiturn/
  tag            task category, difficulty, quality, reward, safety,
                 language, nearest-neighbour distance                     -> tagged/
  filter         a paper Table 5 preset or an SQL condition               -> filtered/
  export         TRL messages Parquet, ShareGPT JSONL, dataset card       -> export/
  preferences    DPO pairs: pick instructions from tagged/, sample k=5 answers each, score them with a
                 reward model, chosen = best, rejected = worst (stages preference_prompts, preferences,
                 preference_scores, preference_pairs)             -> preferences/{prompts,samples,scored,export}/
  run            the config's `stages`, in order (what recipes/*.sh call)
  plan           forecast the job's time and GPU-hours per stage from a short calibration run of it
                 (--calibrate N instructions; default: one shard's, at least 64)
  template       print the derived pre-query template, stops, stop ids, end of turn, flags and overrides of
                 --model (its tokenizer only: no weights load), or of --chat_template_file F (a
                 tokenizer_config.json, chat_template.json or .jinja); --json for JSON
  taggers        list the taggers: fields, models (from --config if given), model batch cap
  presets        list the filter presets: conditions, cut, size, source
  report RUN     one static HTML page of a run folder (an alias of `python -m report RUN`) -> RUN/report/
  <verb> --help  every config key with its default's source

Every value is checked before a model loads or a file is written. A run killed at any point resumes
when started again with the same config.
"""
from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys

from core.cli import die
from core.cluster import ClusterError
from core.store import IncompleteInput, RunMismatch, write_error

from .config import parse
from .filters import PRESETS
from .instructions import resolve_template
from .stages import STAGES, VERB_STAGES, Context, run
from .tag import tagger_table
from .taggers import get_tagger_class

VERBS = (*STAGES, "run", "plan", "template", "taggers", "presets", "report")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in VERBS:
        die(f"unknown verb {argv[0]!r}; choose {', '.join(VERBS)}")
    verb, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verb == "presets":
        return _list_presets()
    if verb == "report":  # the run report is a package above this one: the command is handed over to it
        return subprocess.call([sys.executable, "-m", "report", *rest])
    if verb == "plan":
        return _plan(rest)
    if verb == "template":
        return _template(rest)
    try:
        parsed = parse(rest)
    except ValueError as e:  # bad YAML, unknown key, bad value: one line that says where, no usage dump
        die(str(e))
    c = Context(*parsed)
    try:
        if verb == "taggers":
            return _list_taggers(c.targs)
        return run(list(VERB_STAGES.get(verb, [verb])) if verb in STAGES else list(c.run.stages), c)
    except OSError as e:  # a read-only or full filesystem, an output_dir that is a file
        die(write_error(e, c.run.output_dir))
    except (RunMismatch, IncompleteInput, ImportError, ValueError, ClusterError) as e:
        die(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    finally:
        c.close()


def _template(rest: list[str]) -> int:
    """The template a run of this config would sample from, derived from the model's tokenizer (no weights load) or
    from --chat_template_file; what to check before a run on a new model (README: Your model)."""
    from types import SimpleNamespace

    from core import templates
    from core.cluster import DriverView
    from core.engines.base import EngineInfo

    as_json, file = "--json" in rest, None
    rest = [a for a in rest if a != "--json"]
    if "--chat_template_file" in rest[:-1]:
        i = rest.index("--chat_template_file")
        file, rest = rest[i + 1], rest[:i] + rest[i + 2:]
    try:
        c = Context(*parse(rest))
    except ValueError as e:
        die(str(e))
    margs, iargs = c.margs, c.iargs
    try:
        if file is not None:
            config = templates.read_chat_template_file(file)
            view = SimpleNamespace(tokenizer=templates.tokenizer_from_config(config), info=EngineInfo("file", file))
            source = f"{file}" + ("" if config.get("added_tokens_decoder") or config.get("added_tokens")
                                  else " (no special tokens in it: no stop ids)")
        else:
            view, source = DriverView(margs.role()), f"the tokenizer of {margs.model}"
        tpl, stops = resolve_template(view, margs, iargs)
        ids = templates.stop_token_ids(view.tokenizer, stops)
        answer_ids = templates.stop_token_ids(view.tokenizer, tpl.response_stop_strings)
    except (OSError, ValueError, ImportError) as e:  # no such model or file, no chat template, a bad flag
        die(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    finally:
        c.close()
    if as_json:
        print(json.dumps({**tpl.to_dict(), "instruction_stops": stops, "instruction_stop_ids": ids,
                          "response_stop_ids": answer_ids}, indent=2, ensure_ascii=False))
        return 0
    flags = {**tpl.template_kwargs}
    if flags.get("tools"):  # the tools by name: their schemas are in --json
        flags["tools"] = [t["function"]["name"] for t in flags["tools"]]
    rows = [
        ("model", margs.model), ("chat template", source),
        ("flags", ", ".join(f"{k}={v!r}" for k, v in flags.items()) or "none (the template's defaults)"),
        ("date", f"{tpl.template_date} (template_date)" if tpl.template_date else "the template reads none"),
        ("pre_query_template", repr(tpl.pre_query_template)),
        ("post_query_template", repr(tpl.post_query_template)),
        ("mt_append_template", repr(tpl.mt_append_template)),
        ("end of turn", repr(tpl.end_of_turn)),
        ("instruction stops", f"{stops} ids {ids}" + ("  ('\\n': the newline stop)" if "\n" in stops else "")),
        ("response stops", f"{list(tpl.response_stop_strings)} ids {answer_ids}"),
        ("sanitize", str(tpl.sanitize)),
        ("reasoning", tpl.reasoning_format or "none: answers carry no reasoning markup"),
        ("tool calls", tpl.tool_format or "none: the template renders no tool calls"),
        ("override", tpl.family or "none: as the template renders"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for note in tpl.notes:
        print(f"{'note':<{width}}  {note}")
    return 0


def _plan(rest: list[str]) -> int:
    from .plan import plan, text

    calibrate = None
    if "--calibrate" in rest[:-1]:
        i = rest.index("--calibrate")
        calibrate, rest = rest[i + 1], rest[:i] + rest[i + 2:]
        if not calibrate.isdigit() or int(calibrate) < 1:
            die(f"--calibrate must be a positive number of instructions, got {calibrate!r}")
    try:
        p = plan(rest, int(calibrate) if calibrate else None)
    except (ValueError, RuntimeError) as e:
        die(str(e).splitlines()[0])
    print(text(p))
    return 0


def _list_taggers(targs) -> int:
    for name, kwargs in tagger_table(targs).items():
        cls = get_tagger_class(name)
        param = inspect.signature(cls).parameters.get("batch_size")
        batch = param.default if param is not None else cls.batch_size
        cap = "all records at once" if cls.batch_size is None else f"model batch <= {batch}"
        models = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k.endswith(("model", "engine"))) or "no model"
        print(f"{'on' if name in targs.taggers else '  '} {name:<22} fields: {', '.join(cls.fields)}")
        print(f"   {'':<22} {cap}; {models}")
    print("(on: in this config's taggers)")
    return 0


def _list_presets() -> int:
    for p in PRESETS.values():
        size = "all rows" if p.cut is None else f"{p.cut} {p.size:,}"
        print(f"{p.name:<24} {size:<18} {p.source}")
        for cond in p.conditions:
            print(f"{'':<27}{cond}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
