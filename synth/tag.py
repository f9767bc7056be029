"""The tag stage: run the configured taggers over a dataset directory and join their fields.

Each tagger writes its own resumable sub-directory (`<out>/parts/<tagger>/`, shards of `id` plus
its fields), so a crash loses at most one batch of one tagger and a finished tagger is never
run (or even loaded) again. The tagged set (`<out>/data/`) is the input joined with every
tagger's fields; its manifest holds coverage, parse failures and tag distributions, and
`<out>/plots/` the histograms.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from core import procs, shards, steplog, store
from core.engines import too_long_count
from core.engines.vllm import IN_FLIGHT as VLLM_IN_FLIGHT
from core.schema import CATEGORICAL

from .taggers import get_tagger, get_tagger_class


def _part_config(name: str, kwargs: dict, n_records: int, batch_size: int, input_id: str) -> tuple[int, dict]:
    # `batch_size` (tag_batch_size) is what runs: the records per shard and per tag() call. A tagger's own
    # batch_size is the most its model takes in one forward pass; it splits a call into such batches.
    # A tagger that needs every record at once (nearest neighbours) writes one shard.
    needs_all = get_tagger_class(name).batch_size is None
    size = max(n_records, 1) if needs_all else batch_size
    return size, {"tagger": name, "kwargs": kwargs, "shard_size": None if needs_all else size, "input_id": input_id}


def _part_complete(name: str, kwargs: dict, n_records: int, batch_size: int, input_id: str, out_dir) -> bool:
    config = _part_config(name, kwargs, n_records, batch_size, input_id)[1]
    return store.DatasetDir(Path(out_dir) / "parts" / name).reusable(config) is not None


_TAGGERS: dict[str, object] = {}  # this process's taggers (an actor's too), built on their first shard
_BUILDING = threading.Lock()  # shards in flight: the first one builds a tagger (and its engine), once


def _tagger(name: str, kwargs: dict):
    key = json.dumps([name, kwargs], sort_keys=True, default=str)
    with _BUILDING:
        if key not in _TAGGERS:
            t0 = time.perf_counter()
            _TAGGERS[key] = get_tagger(name, **kwargs)
            steplog.fixed(f"tagger {name}", time.perf_counter() - t0)  # its models' loads, for the planner
    return _TAGGERS[key]


def tag_shard(engine, spec: tuple[str, tuple[int, int]], in_dir: str, group: dict[str, dict], out_dir: str):
    """One shard of one tagger's part, spec (tagger name, input rows): `id` and the tagger's fields for those rows,
    and its stats of them. A tagger that `reads` another's fields (reward_difference: base_response) gets them
    from that tagger's part, written before."""
    name, rows = spec
    tagger = _tagger(name, group[name])
    columns = None if tagger.columns is None else ["id", *(c for c in tagger.columns if c != "id")]
    batch = shards.input_rows(in_dir, *rows, columns=columns)
    for other in getattr(tagger, "reads", ()):
        part = store.DatasetDir(Path(out_dir) / "parts" / other)
        theirs = part.rows(*rows, columns=["id", *get_tagger_class(other).fields])
        if [t["id"] for t in theirs] != [r["id"] for r in batch]:
            raise ValueError(f"tagger part {part.path} does not hold rows {rows[0]:,}-{rows[1]:,} of {in_dir}; "
                             "delete it and run the tag stage again")
        batch = [{**r, **t} for r, t in zip(batch, theirs)]
    before, long_before = dict(tagger.stats), too_long_count(getattr(tagger, "engine", None))
    t0 = time.perf_counter()
    tags = tagger.tag(batch)
    out = [{"id": r["id"], **{f: t.get(f) for f in tagger.fields}} for r, t in zip(batch, tags)]
    delta = {s: v - before.get(s, 0) for s, v in tagger.stats.items()}
    # Prompts too long for the tagger's model: left untagged (None), counted here
    delta["prompt_too_long"] = too_long_count(getattr(tagger, "engine", None)) - long_before
    delta["seconds"] = round(time.perf_counter() - t0, 3)  # this tagger's own time (the manifest's per-tagger cost)
    return out, {"stats": delta, "info": json.dumps(tagger.info(), default=str)}


def run_taggers(group: dict[str, dict], in_dir, out_dir, batch_size: int, input_id: str, cluster=None) -> dict:
    """Run the taggers of `group` (name -> kwargs): here, or their shards on `cluster`'s actors (one job for the
    group: an actor loads the group's model once). Returns their part manifests by name."""
    n = store.DatasetDir(in_dir).num_rows()
    waves, parts = [[]], {}  # a tagger that reads another of the group waits for its shards (actors run in parallel)
    for name, kwargs in group.items():
        part = store.DatasetDir(Path(out_dir) / "parts" / name)
        size, config = _part_config(name, kwargs, n, batch_size, input_id)
        if part.begin(f"tag:{name}", config)["status"] == "complete":
            continue
        if set(kwargs.get("reads", ())) & set(parts):
            waves.append([])
        parts[name] = part
        cap = get_tagger_class(name).batch_size
        if cap is not None and size > cap:
            print(f"[tag] {name}: {size} records per shard and call (tag_batch_size); its model takes at most "
                  f"{cap} at a time (the tagger's cap)", file=sys.stderr)
        waves[-1] += [((f"parts/{name}", k), (name, rows), items) for k, rows, items in shards.row_ranges(n, size)]
    if parts:
        tp = max((kw.get("engine_kwargs", kw).get("tensor_parallel_size", 1) for kw in group.values()), default=1)
        work = shards.ShardWork(str(out_dir), tag_shard, args=(str(in_dir), group, str(out_dir)),
                                tensor_parallel_size=tp)
        # On vLLM the taggers of the same rows go in flight together: the three judges' prompts (and the guard's)
        # share the engine's running batch, one pass over the rows, and its prefix cache (core.shards.run).
        on_vllm = "vllm" in _group_models(group)[1]
        in_flight = VLLM_IN_FLIGHT if on_vllm else 1
        order = {name: i for i, name in enumerate(group)}
        try:
            for units in waves:
                units = sorted(units, key=lambda u: (u[1][1][0], order[u[1][0]]))  # by rows, then tagger order
                shards.run(work, units, desc=f"tag {', '.join(parts)}", unit="rec", cluster=cluster,
                           in_flight=in_flight)
        finally:
            _TAGGERS.clear()
    for name, part in parts.items():
        last = part.shards()[-1:]
        info = json.loads(part.shard_meta(last[0]).get("info", "{}")) if last else {}
        part.finish(part.shard_totals().get("stats", {}), fields=list(get_tagger_class(name).fields), tagger_info=info)
    return {name: store.DatasetDir(Path(out_dir) / "parts" / name).manifest() for name in group}


def _models(kwargs: dict) -> tuple[set, set]:
    """The models a tagger's kwargs name, and their engines (a reward or embedding model runs on transformers)."""
    models = {v for k, v in kwargs.items() if k.endswith("model") and v}
    engines = {v for k, v in kwargs.items() if k.endswith("engine") and isinstance(v, str)}
    return models, engines | ({"hf"} if "reward_model" in kwargs or "embedding_model" in kwargs else set())


def plan(taggers: dict[str, dict]) -> dict[str, dict]:
    """The taggers as they run. reward_difference needs two models, the base model (URIAL answers) and the reward
    model, and a process holds one: its answers become the tagger base_response, placed before the taggers next to
    reward_difference that share its reward model (instruct_reward), so that the reward model still loads once.
    reward_difference reads the base answers from base_response's part, and the response's reward from
    instruct_reward's where that ran before it on the same settings (one scoring of each response, not two)."""
    if "reward_difference" not in taggers or "base_response" in taggers:
        return dict(taggers)
    base, own = get_tagger_class("reward_difference").split(taggers["reward_difference"])
    names, reward_models = list(taggers), _models(own)[0]
    at = names.index("reward_difference")
    scored_alike = {k: v for k, v in own.items() if k != "base"}  # instruct_reward's kwargs, if it scores the same
    same = "instruct_reward" in names[:at] and taggers["instruct_reward"] == scored_alike
    own["reads"] = ["base_response", *(["instruct_reward"] if same else [])]
    while at > 0 and _models(taggers[names[at - 1]])[0] & reward_models:
        at -= 1
    items = [(name, own if name == "reward_difference" else taggers[name]) for name in names]
    return dict(items[:at] + [("base_response", base)] + items[at:])


def model_groups(taggers: dict[str, dict]) -> list[dict[str, dict]]:
    """Consecutive taggers that share a model form one group (the three judges: one model load); a tagger that
    loads no model joins the group before it."""
    groups: list[tuple[set, dict]] = []
    for name, kwargs in taggers.items():
        models, _ = _models(kwargs)
        if groups and (not models or groups[-1][0] & models or not groups[-1][0]):
            groups[-1][0].update(models)
            groups[-1][1][name] = kwargs
        else:
            groups.append((set(models), {name: kwargs}))
    return [g for _, g in groups]


def generating_roles(t) -> list:
    """The model roles whose engines the configured taggers generate with (judge, guard, base), from TagArgs."""
    uses = {"judge": {"task_category", "difficulty", "input_quality"}, "guard": {"llama_guard_2"},
            "base": {"reward_difference"}}
    return [getattr(t, f"{prefix}_role")() for prefix, names in uses.items() if names & set(t.taggers)]


def shares_engine(t, role) -> bool:
    """Whether the tag stage can run on `role`'s engine in the process that holds it (synth.stages.segments): every
    model the taggers generate with is that role's, same model and settings (tiny: SmolLM2 on vLLM for the generator
    and the taggers), on vLLM (an hf model on a CPU stays in the run's process anyway), and every other model group
    needs no process of its own (an hf model on a CPU). Then the engine is built once for the whole run."""
    def settings(r):
        return {k: v for k, v in r.engine_kwargs().items() if k != "gpu_memory_utilization"}

    roles = generating_roles(t)
    if role is None or role.engine != "vllm" or not roles or any(settings(r) != settings(role) for r in roles):
        return False
    return not any(procs.isolate(*_group_models(group)[1]) and not _on_held(group, (role.model,))
                   for group in model_groups(plan(tagger_kwargs(t))))


def _group_models(group: dict[str, dict]) -> tuple[set, set]:
    """The models a model group's taggers name, and their engines."""
    models, engines = set(), set()
    for kw in group.values():
        m, e = _models(kw)
        models, engines = models | m, engines | e
    return models, engines


def _on_held(group: dict[str, dict], held) -> bool:
    """Whether `group` runs here on the vLLM engines of the `held` models: all its models are held, and its other
    engines need no process of their own (an hf model on a CPU)."""
    models, engines = _group_models(group)
    return bool(held) and models <= set(held) and not procs.isolate(*(engines - {"vllm"}))


def tag_dataset(in_dir, out_dir, taggers: dict[str, dict], batch_size: int = 256, shard_rows: int = 10_000,
                plots: bool = True, cluster=None, held: tuple[str, ...] = ()) -> dict:
    """`taggers`: name -> constructor kwargs, run in order. Returns counts for the summary. `cluster` (a
    core.cluster.Cluster): the model groups' shards go to its actors; nearest neighbours (all rows at once)
    runs here. `held`: models whose vLLM engine this process holds (lent to the shared engines, synth.stages): a
    group on them runs here, on that engine."""
    src = store.DatasetDir(in_dir)
    input_id = src.identity()
    out = store.DatasetDir(out_dir)
    config = {"taggers": taggers, "batch_size": batch_size, "shard_rows": shard_rows, "input_id": input_id}
    n, planned = src.num_rows(), plan(taggers)
    check_reward_models(planned, n, batch_size, input_id, out_dir)  # before anything is written
    m = out.begin("tagged", config, input=str(in_dir))
    if m["status"] == "complete":  # a finished join is never rewritten in place
        return {**m["counts"], "reused": True}
    t0 = time.perf_counter()
    parts, taggers = {}, planned
    # One process per model group where models need it (procs.isolate): its exit frees the model before the
    # next group's loads. A group whose parts are all complete is read back without a process or a model.
    for group in model_groups(taggers):
        engines = _group_models(group)[1]
        complete = all(_part_complete(name, kw, n, batch_size, input_id, out_dir) for name, kw in group.items())
        batched = all(get_tagger_class(name).batch_size is not None for name in group)
        on_cluster = cluster is not None and batched and not complete
        on_held = _on_held(group, held)
        parts.update(procs.place(run_taggers, group, in_dir, out_dir, batch_size, input_id, engines=tuple(engines),
                                 done=complete, local=on_cluster or on_held, cluster=cluster if on_cluster else None))
    # Join: every record gets every tagger's fields (None where a tagger could not tag it), streamed.
    profile = join_parts(in_dir, out_dir, parts, shard_rows)
    counts = summarize(profile, parts)
    plot_files = []
    if plots:
        from . import stats

        t1 = time.perf_counter()
        plot_files = [str(p) for p in stats.plot_all(profile, Path(out_dir) / "plots")]
        steplog.fixed("plots", time.perf_counter() - t1)  # a dozen figures, whatever the records
    out.finish(counts, taggers_info={n: m.get("tagger_info", {}) for n, m in parts.items()}, plots=plot_files)
    counts["seconds"] = time.perf_counter() - t0
    return counts


def check_reward_models(taggers: dict[str, dict], n: int, batch_size: int, input_id: str, out_dir) -> None:
    """A reward model that cannot load fails here, in seconds, not after the judges' hours (taggers.reward)."""
    from .taggers.reward import check_reward_model

    todo = {(kw["reward_model"], kw.get("trust_remote_code", False)) for name, kw in taggers.items()
            if kw.get("reward_model") and not _part_complete(name, kw, n, batch_size, input_id, out_dir)}
    for model, trust_remote_code in sorted(todo):
        check_reward_model(model, trust_remote_code)


def join_parts(in_dir, out_dir, parts: dict, shard_rows: int):
    """Write `out_dir`'s shards: the rows of `in_dir` in order, each with the fields of every tagger in `parts`
    (name -> part manifest), shard k = rows [k*shard_rows, (k+1)*shard_rows). A part (`<out_dir>/parts/<name>/`,
    `id` + its fields) is written in input order, so the input and the parts are walked in step, shard_rows
    rows at a time: memory holds one output shard whatever the set's size. Returns the joined rows' Profile
    (stats.Profile: counts, tag values and lengths) for the summary and the plots."""
    import pyarrow as pa

    from .stats import Profile

    src, out, profile = store.DatasetDir(in_dir), store.DatasetDir(out_dir), Profile()
    part_dirs = {name: store.DatasetDir(Path(out_dir) / "parts" / name) for name in parts}
    readers = {name: d.batches(shard_rows, ["id", *parts[name]["fields"]]) for name, d in part_dirs.items()}
    k = -1
    # An unfinished join is redone shard by shard, each shard replaced atomically: the join is deterministic
    # (same input, parts and shard_rows: all in the config), so a shard already there gets the same rows.
    for k, table in enumerate(src.batches(shard_rows)):
        for name, m in parts.items():
            part = next(readers[name], None)
            _check_in_step(part, table, k * shard_rows, part_dirs[name], in_dir)
            for f in m["fields"]:
                col = part[f] if f in part.column_names else pa.nulls(table.num_rows)
                i = table.schema.get_field_index(f)
                table = table.set_column(i, f, col) if i >= 0 else table.append_column(f, col)
        out.write_shard(k, table)
        profile.add(table)
    if k < 0:  # no input rows: shard 0 is an empty marker, so the directory is complete
        out.write_shard(0, [])
    for name, reader in readers.items():
        if (extra := next(reader, None)) is not None:
            raise ValueError(f"tagger part {part_dirs[name].path} has rows past the input's {profile.rows:,} "
                             f"(id {extra['id'][0].as_py()!r} first); delete it and run the tag stage again")
    return profile


def _check_in_step(part, table, start: int, part_dir: store.DatasetDir, in_dir) -> None:
    """The part's next rows are the input's rows [start, start + len): the same ids in the same order."""
    if part is not None and part.num_rows == table.num_rows and (
            part["id"].equals(table["id"]) or part["id"].to_pylist() == table["id"].to_pylist()):
        return
    ids, theirs = table["id"].to_pylist(), [] if part is None else part["id"].to_pylist()
    i = next((i for i, (a, b) in enumerate(zip(ids, theirs)) if a != b), min(len(ids), len(theirs)))
    if i < min(len(ids), len(theirs)):
        where = f"has id {theirs[i]!r} at row {start + i:,} where the input {in_dir} has {ids[i]!r}"
    elif len(theirs) < len(ids):
        where = f"ends at row {start + len(theirs):,}, before the input {in_dir}"
    else:
        where = f"goes on past the {start + len(ids):,} rows of the input {in_dir}"
    raise ValueError(f"tagger part {part_dir.path} does not follow its input: it {where}; delete it and run "
                     "the tag stage again")


def summarize(profile, parts: dict) -> dict:
    """The tag manifest's counts from the joined rows' Profile: records, coverage per field (rows with a value),
    each tagger's stats, the distributions of the categorical tags present."""
    counts = {"records": profile.rows, "coverage": {}, "stats": {}, "distributions": {}}
    for name, m in parts.items():
        counts["stats"][name] = m.get("counts", {})
        for f in m["fields"]:
            counts["coverage"][f] = profile.non_null.get(f, 0)
    for f, order in CATEGORICAL.items():
        if f in profile.non_null:  # a column of the joined rows
            counts["distributions"][f] = dict(profile.category_counts(f, order))
    if profile.steer:  # a steered set: the task categories of each steer value ({kind: {value: {category: rows}}})
        counts["task_category_by_steer"] = {
            kind: {str(v): {c: n for c, n in zip(t["categories"], row) if n}
                   for v, row in zip(t["values"], t["counts"])}
            for kind, t in profile.by_steer().items()}
    return counts


# -- the configured taggers ---------------------------------------------------------------------------------
def tagger_table(t) -> dict[str, dict]:
    """Constructor arguments of every tagger, from TagArgs: each model role's engine settings go with it."""
    def settings(role) -> dict:
        kw = role.engine_kwargs()
        kw.pop("model")
        return kw

    judge_role, guard_role, reward_role = t.judge_role(), t.guard_role(), t.reward_role()
    reward = dict(reward_model=reward_role.model, dtype=reward_role.dtype, device=reward_role.device,
                  trust_remote_code=reward_role.trust_remote_code,
                  **({"batch_size": reward_role.hf_batch_size} if reward_role.hf_batch_size else {}))
    base = {}
    if t.base_model:
        base_role = t.base_role()
        base = dict(base_model=base_role.model, base_engine=base_role.engine, engine_kwargs=settings(base_role))
    return {
        **dict.fromkeys(("task_category", "difficulty", "input_quality"), dict(
            judge_model=judge_role.model, judge_engine=judge_role.engine, max_tokens=t.judge_max_tokens,
            prefill=t.judge_prefill, **settings(judge_role))),
        "instruct_reward": reward,
        "reward_difference": {**reward, **base, "base_max_tokens": t.base_max_tokens},
        "llama_guard_2": dict(guard_model=guard_role.model, guard_engine=guard_role.engine, **settings(guard_role)),
        "language": {},
        "min_neighbor_distance": dict(embedding_model=t.embedding_model, k=t.knn_k,
                                      repeat_threshold=t.repeat_threshold, index=t.knn_index, nprobe=t.knn_nprobe),
    }


def tagger_kwargs(t) -> dict[str, dict]:
    """Constructor arguments of each configured tagger, in order."""
    if "reward_difference" in t.taggers and not t.base_model:
        raise ValueError("tagger reward_difference needs base_model (paper: meta-llama/Meta-Llama-3-8B)")
    known = tagger_table(t)
    for name in t.taggers:
        if name not in known:
            raise ValueError(f"unknown tagger {name!r} in taggers; choose from {', '.join(known)} "
                             "(python -m synth taggers)")
    return {name: known[name] for name in t.taggers}
