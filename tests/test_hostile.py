"""What a hostile user found (issue 19): each bad input ends in one line that names it and says what to do, exit
code 2, no traceback; what a failure leaves behind is repaired by running the same command again."""
import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import EVAL_TINY, ROOT, TINY
from test_export import records

from core import store


def error_line(capsys, main, argv) -> str:
    """Run a CLI's main in this process; assert exit code 2 and one error line, and return it."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@contextmanager
def small_disk(path: Path, *options: str):
    """A real 64 KiB tmpfs at `path` (`ro`: read-only) where this user may mount one (root in a container);
    None elsewhere, and the test then makes the write fail as that disk would."""
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", ",".join(("size=64k", *options)), "tmpfs", str(path)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _synth():
    from synth.__main__ import main

    return main


def _report():
    from report.page import main

    return main


def _eval():
    from eval.__main__ import main

    return main


def _sft():
    from train.sft import main

    return main


@pytest.mark.parametrize("cli, argv", [(_synth, ["run"]), (_eval, ["run"]), (_sft, [])])
def test_a_config_that_is_a_folder(capsys, cli, argv):
    line = error_line(capsys, cli(), [*argv, "--config", str(ROOT / "recipes")])
    assert line.startswith(f"error: config {ROOT / 'recipes'}: is a directory; give a YAML file")


def _run_folder(root: Path) -> Path:
    ds = store.DatasetDir(root / "responses")
    ds.begin("responses", {"x": 1})
    ds.write_shard(0, records(), {"kept": 6})
    ds.finish({"pairs": 6})
    return root


@pytest.mark.parametrize("key", ["--sample", "--map_sample"])
def test_report_refuses_a_negative_count(capsys, tmp_path, key):
    line = error_line(capsys, _report(), [str(_run_folder(tmp_path)), key, "-1"])
    assert line == f"error: {key} -1: give 0 or more rows (0: none)"


@pytest.mark.parametrize("options, code, advice", [
    ((), errno.ENOSPC, "free space or choose another --output"),
    (("ro",), errno.EROFS, "fix the permissions or choose another --output")])
def test_report_output_on_a_full_or_read_only_disk(capsys, tmp_path, monkeypatch, options, code, advice):
    run, disk = _run_folder(tmp_path / "run"), tmp_path / "disk"
    with small_disk(disk, *options) as real:
        if real is None:
            def fail(path, text):
                raise OSError(code, os.strerror(code), str(path))

            monkeypatch.setattr(store, "atomic_write_text", fail)
        line = error_line(capsys, _report(), [str(run), "--output", str(disk / "index.html")])
        assert not list(disk.glob(".*.tmp"))
    assert line.startswith(f"error: {disk}") and f"{os.strerror(code)}; {advice}" in line


def test_a_token_limit_beyond_the_models_context_is_refused_before_generating(capsys, tmp_path):
    argv = ["instructions", "--config", TINY, "--output_dir", str(tmp_path), "--report_to", "none"]
    line = error_line(capsys, _synth(), [*argv, "--max_tokens", "10000000000"])
    assert line == ("error: max_tokens 10000000000 is more than the context of embedded:smollm2-135m-instruct, "
                    "8192 tokens (max_model_len); lower max_tokens")
    assert not list(tmp_path.glob("instructions/data/part-*"))
    # A max_model_len in the config is known before any model loads.
    line = error_line(capsys, _synth(), [*argv, "--max_model_len", "64", "--max_tokens", "128"])
    assert line.startswith("error: max_tokens 128 is more than the context of embedded:smollm2-135m-instruct, 64")


def test_eval_blames_a_bad_value_on_where_it_came_from(capsys, tmp_path):
    line = error_line(capsys, _eval(), ["run", "--config", EVAL_TINY, "--benchmarks", "alpaca_eval", "foo"])
    assert line.startswith("error: command line: benchmarks: unknown benchmark(s) ['foo']")
    config = tmp_path / "bad.yaml"
    text = Path(EVAL_TINY).read_text()
    assert "\nbenchmarks: [" in text
    config.write_text(text.replace("\nbenchmarks: [", "\nbenchmarks: [foo, "))
    line = error_line(capsys, _eval(), ["run", "--config", str(config), "--alpaca_limit", "2"])
    assert line.startswith(f"error: config {config}: benchmarks: unknown benchmark(s) ['foo']")


def test_a_damaged_shard_or_release_file_is_named_and_repaired_by_running_again(capsys, tmp_path):
    """A shard corrupted behind an intact footer was blamed on the run folder ("free space, fix the permissions")
    and rerunning could not repair it; a truncated sharegpt.jsonl was reused as it was."""
    root = tmp_path / "run"
    tagged = store.DatasetDir(root / "tagged")
    tagged.begin("tag", {"taggers": ["judge"]})
    tagged.write_shard(0, records(), {"kept": 6})
    tagged.finish({"records": 6})

    def argv(verb):
        return [verb, "--config", TINY, "--output_dir", str(root), "--report_to", "none"]

    assert _synth()(argv("filter")) == 0
    shard = root / "filtered" / "data" / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[4:44] = b"\x17" * 40
    shard.write_bytes(bytes(data))
    line = error_line(capsys, _synth(), argv("export"))
    assert line.startswith(f"error: shard {shard} cannot be read") and f"wrote {root / 'filtered'} again" in line
    assert _synth()(argv("filter")) == 0  # finds the shard's sha256 changed, and writes it again
    assert _synth()(argv("export")) == 0
    sharegpt = root / "export" / "sharegpt.jsonl"
    whole = sharegpt.read_bytes()
    sharegpt.write_bytes(whole[:len(whole) // 2])
    assert _synth()(argv("export")) == 0 and sharegpt.read_bytes() == whole
