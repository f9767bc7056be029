"""Dataset directories and the tag stage's resume rules, on real Parquet (no model needed)."""
import json

import pyarrow.parquet as pq
import pytest

from core import shards, store
from synth.tag import tag_dataset


def _complete(path, rows, config=None, stage="responses"):
    ds = store.DatasetDir(path)
    ds.begin(stage, config or {"x": 1})
    ds.write_shard(0, rows, {"kept": len(rows)})
    ds.finish({"kept": len(rows)})
    return ds


def _rows(n):
    return [{"id": i, "instruction": ["Tell me about cats.", "Explique la photosynthèse, s'il te plaît.",
                                      "Wie spät ist es in Berlin?"][i % 3], "response": "ok",
             "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ok"}]}
            for i in range(n)]


def test_a_run_that_failed_before_its_first_shard_does_not_block_the_retry(tmp_path):
    ds = store.DatasetDir(tmp_path / "o")
    ds.begin("instructions", {"temperature": 5.0})  # say the engine then failed: no shard was written
    m = ds.begin("instructions", {"temperature": 1.0})  # the corrected retry
    assert m["config"] == {"temperature": 1.0} and m["status"] == "running"
    ds.write_shard(0, [{"id": 0}])
    with pytest.raises(store.RunMismatch, match="temperature"):  # with data on disk, another config is refused
        ds.begin("instructions", {"temperature": 2.0})


def test_unreadable_shard_is_named_removed_and_the_run_is_no_longer_complete(tmp_path, caplog):
    ds = store.DatasetDir(tmp_path / "o")
    ds.begin("responses", {"x": 1})
    for k in range(3):
        ds.write_shard(k, [{"id": k}])
    ds.finish({"kept": 3})
    path = ds.shard_path(1)
    path.write_bytes(path.read_bytes()[:40])  # truncated, as a full disk or a killed copy leaves it
    m = ds.begin("responses", {"x": 1})
    assert m["status"] == "running" and not path.exists() and ds.shards() == [0, 2]
    assert str(path) in caplog.text and "written again" in caplog.text
    todo = shards.pending(shards.ShardWork(str(ds.path), None), shards.row_ranges(3, 1))
    assert todo == [(1, (1, 2), 1)]  # exactly the lost shard is redone


def test_a_shard_corrupted_behind_an_intact_footer_is_named_and_redone(tmp_path, caplog):
    """A complete shard damaged in its pages (a flipped byte, a half-copied file): its footer still reads, so only
    the sha256 recorded at finish finds it. Reading it names the shard; running its stage again redoes it."""
    ds = store.DatasetDir(tmp_path / "o")
    ds.begin("responses", {"x": 1})
    for k in range(3):
        ds.write_shard(k, _rows(50), {"kept": 50})
    ds.finish({"kept": 150})
    assert set(ds.manifest()["files"]) == {f"data/part-0000{k}.parquet" for k in range(3)}
    path = ds.shard_path(1)
    data = bytearray(path.read_bytes())
    data[4:44] = b"\x17" * 40  # the first page, not the footer
    path.write_bytes(bytes(data))
    pq.read_metadata(path)  # the footer check alone would pass it
    with pytest.raises(store.CorruptShard, match=f"^shard {path} cannot be read .*run the stage that wrote {ds.path}"):
        ds.records()
    with pytest.raises(store.CorruptShard, match=str(path)):
        list(ds.batches(20))
    assert ds.reusable({"x": 1}) is None
    m = ds.begin("responses", {"x": 1})
    assert m["status"] == "running" and not path.exists() and ds.shards() == [0, 2]
    assert str(path) in caplog.text and "sha256" in caplog.text and "written again" in caplog.text
    todo = shards.pending(shards.ShardWork(str(ds.path), None), shards.row_ranges(150, 50))
    assert [k for k, *_ in todo] == [1]  # that shard alone is redone
    ds.write_shard(1, _rows(50), {"kept": 50})
    ds.finish({"kept": 150})
    assert ds.reusable({"x": 1}) is not None and len(ds.records()) == 150


def test_a_missing_shard_of_a_finished_run_is_redone(tmp_path):
    ds = _complete(tmp_path / "o", _rows(3))
    ds.shard_path(0).unlink()
    assert ds.reusable({"x": 1}) is None
    assert ds.begin("responses", {"x": 1})["status"] == "running"


def test_an_unstarted_directory_is_started_as_new(tmp_path):
    """A run that failed on a full disk before its manifest leaves an empty data/ (and maybe a temporary file):
    once space is freed the same command starts there. Anything else in the folder is still refused."""
    out = tmp_path / "instructions"
    (out / "data").mkdir(parents=True)
    (out / "data" / ".part-00000.parquet.4242.tmp").write_bytes(b"PAR1")
    (out / ".manifest.json.4242.tmp").write_text("{")
    m = store.DatasetDir(out).begin("instructions", {"x": 1})
    assert m["status"] == "running" and sorted(p.name for p in out.rglob("*")) == ["data", "manifest.json"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(store.RunMismatch, match="exists and is not a dataset directory"):
        store.DatasetDir(other).begin("instructions", {"x": 1})


def test_a_killed_write_leaves_no_temporary_file_after_the_next_start(tmp_path):
    """A kill cannot run replace_whole's cleanup: `.sharegpt.jsonl.<pid>.tmp` (123 MB after 3 kills at 120K rows)
    and `.part-k.parquet.<pid>.tmp` stay until the stage starts again, which removes them."""
    ds = store.DatasetDir(tmp_path / "export")
    ds.begin("export", {"x": 1})
    killed = [ds.path / ".sharegpt.jsonl.4242.tmp", ds.data / ".part-00000.parquet.4243.tmp"]
    for p in killed:
        p.write_text("half")
    ds.begin("export", {"x": 1})
    assert not any(p.exists() for p in killed)


def test_identity_follows_the_data_not_only_the_config(tmp_path):
    ds = _complete(tmp_path / "a", _rows(3))
    before = ds.identity()
    _complete(tmp_path / "a", _rows(2))  # rewritten in place under the same config
    assert ds.identity() != before and ds.identity().split(":")[0] == before.split(":")[0]
    with pytest.raises(store.IncompleteInput):
        store.DatasetDir(tmp_path / "missing").identity()


def test_tag_batch_size_is_what_runs_and_part_of_the_resume_key(tmp_path):
    src = _complete(tmp_path / "responses", _rows(25))
    out = tmp_path / "tagged"
    # language's own cap is 4 records per call here; the user's 10 decides the shards (10, 10, 5).
    c = tag_dataset(src.path, out, {"language": {"batch_size": 4}}, batch_size=10, plots=False)
    part = store.DatasetDir(out / "parts" / "language")
    assert c["records"] == 25 and part.shards() == [0, 1, 2]
    assert [pq.read_metadata(part.shard_path(k)).num_rows for k in range(3)] == [10, 10, 5]
    # Kill after shard 0 (its state on disk), then resume with another batch size: refused, never mixed.
    for k in (1, 2):
        part.shard_path(k).unlink()
    m = json.loads((part.path / "manifest.json").read_text())
    (part.path / "manifest.json").write_text(json.dumps({**m, "status": "running"}))
    store.DatasetDir(out).shard_path(0).unlink()
    (out / "manifest.json").write_text(json.dumps({**json.loads((out / "manifest.json").read_text()),
                                                   "status": "running"}))
    with pytest.raises(store.RunMismatch, match="batch_size"):
        tag_dataset(src.path, out, {"language": {"batch_size": 4}}, batch_size=3, plots=False)
    c = tag_dataset(src.path, out, {"language": {"batch_size": 4}}, batch_size=10, plots=False)
    tagged = store.DatasetDir(out).records()
    assert [r["id"] for r in tagged] == list(range(25)) and [r["language"] for r in tagged[:3]] == ["EN", "FR", "DE"]


def test_a_complete_tag_join_is_never_rewritten_and_a_killed_join_is_redone(tmp_path, monkeypatch):
    src = _complete(tmp_path / "responses", _rows(7))
    out = tmp_path / "tagged"
    tag_dataset(src.path, out, {"language": {}}, batch_size=4, shard_rows=3, plots=False)
    joined = store.DatasetDir(out)
    want = joined.records()
    stamp = {k: joined.shard_path(k).stat().st_mtime_ns for k in joined.shards()}

    import synth.tag

    def refuse(*_a, **_k):
        raise AssertionError("a tagger was built for a finished stage")
    monkeypatch.setattr(synth.tag, "get_tagger", refuse)
    again = tag_dataset(src.path, out, {"language": {}}, batch_size=4, shard_rows=3, plots=False)
    assert again["reused"] and {k: joined.shard_path(k).stat().st_mtime_ns for k in joined.shards()} == stamp
    # A kill during the join leaves some joined shards and a running manifest: the rerun loads no tagger
    # (its part is complete) and completes the join whole.
    joined.shard_path(2).unlink()
    m = joined.manifest()
    store.atomic_write_text(out / "manifest.json", json.dumps({**m, "status": "running"}))
    tag_dataset(src.path, out, {"language": {}}, batch_size=4, shard_rows=3, plots=False)
    assert joined.complete and joined.records() == want


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "manifest.json"
    target.mkdir()  # the rename onto a directory fails, as a write on a full or read-only disk would
    with pytest.raises(OSError):
        store.atomic_write_text(target, "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    ds = store.DatasetDir(tmp_path / "d")
    ds.begin("x", {})
    ds.shard_path(0).mkdir()
    with pytest.raises(OSError):
        ds.write_shard(0, [{"id": 1}])
    assert not list(ds.data.glob(".*.tmp"))


def test_a_failed_stage_is_a_failed_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    from core import tracking

    with pytest.raises(RuntimeError):
        with tracking.stage_run("responses", {"x": 1}, tmp_path, "wandb", "magpie-repro-tests", "t"):
            raise RuntimeError("the engine died")
    logs = list(tmp_path.glob("wandb/offline-run-*/logs/debug.log"))
    assert logs and "got exitcode: 1" in logs[0].read_text()


def test_every_shard_layout_key_is_part_of_the_resume_key():
    """A key that decides which items shard k holds must change the config hash, or a resume under another
    value would skip or double items while the manifest says complete."""
    from dataclasses import fields

    from core.config import NON_SEMANTIC, stage_config
    from synth import config

    layout = {f.name for c in config.ALL for f in fields(c) if f.name.endswith(("batch_size", "rounds_per_shard"))}
    assert {"rounds_per_shard", "response_batch_size", "mt_batch_size", "tag_batch_size"} <= layout
    assert not layout & NON_SEMANTIC
    args = [c() for c in config.ALL[:-1]] + [config.RunArgs()]
    base = store.config_hash(stage_config(*args))
    # a model role's hf_batch_size only groups rows inside one generate call
    for key in sorted(k for k in layout if not k.endswith("hf_batch_size")):
        changed = [type(a)(**{**vars(a), key: getattr(a, key) + 1}) if hasattr(a, key) else a for a in args]
        assert store.config_hash(stage_config(*changed)) != base, key


def test_a_stage_records_its_inputs_lineage_and_an_old_run_is_walked_once(tmp_path):
    """begin() records the input's manifest and lineage (what the cards read); a run from before that has none, and
    its inputs are read instead, each directory once even where a manifest names itself as its input."""
    a = store.DatasetDir(tmp_path / "a")
    a.begin("instructions", {"x": 1})
    a.write_shard(0, [{"id": 0}])
    a.finish({"kept": 1})
    b = store.DatasetDir(tmp_path / "b")
    b.begin("responses", {"y": 1}, input=str(a.path))
    assert [m["stage"] for m in b.lineage()] == ["responses", "instructions"]
    assert "files" not in b.manifest()["lineage"][0]  # upstream facts, not its file hashes
    old = json.loads((a.path / "manifest.json").read_text()) | {"input": str(a.path)}  # no lineage; names itself
    (a.path / "manifest.json").write_text(json.dumps(old))
    assert [m["stage"] for m in a.lineage()] == ["instructions"]
