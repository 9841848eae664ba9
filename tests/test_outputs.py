"""Result files are replaced as one set: old or new, whole, whatever stops the run."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import command, tiny
from ntkdemo import outputs
from ntkdemo.cli import main
from ntkdemo.errors import InvalidParameterError
from ntkdemo.outputs import OutputSet

NAMES = ("metrics.json", "predictions.png", "confusion.png", "spectrum.png")


def snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in NAMES}


def arguments(dataset: Path, out: Path, seed: int) -> list[str]:
    return ["--dataset", str(dataset), "--out", str(out), "--quiet", "--seed", str(seed)] + [
        "--train-per-class",
        "6",
        "--test-per-class",
        "4",
    ]


def test_a_set_replaces_the_old_one_and_leaves_nothing_behind(tmp_path):
    first = OutputSet(tmp_path)
    first.write_json("a.json", {"run": 1})
    first.write_bytes("only-in-first.txt", b"1")
    first.commit()
    second = OutputSet(tmp_path)
    second.write_json("a.json", {"run": 2})
    second.commit()
    assert json.loads((tmp_path / "a.json").read_text()) == {"run": 2}
    assert not (tmp_path / "only-in-first.txt").exists()  # not in the set shown now
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ntkdemo", "a.json"]
    assert len(list((tmp_path / ".ntkdemo" / "sets").iterdir())) == 1


def test_a_failed_write_keeps_the_old_set(tmp_path, monkeypatch):
    first = OutputSet(tmp_path)
    first.write_json("a.json", {"run": 1})
    first.commit()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    second = OutputSet(tmp_path)
    monkeypatch.setattr(outputs, "open", full_disk, raising=False)
    with pytest.raises(InvalidParameterError, match="no space left on device.*unchanged"):
        second.write_json("a.json", {"run": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"run": 1}


def test_one_writer_at_a_time(tmp_path):
    holder = OutputSet(tmp_path)
    with pytest.raises(InvalidParameterError, match="another ntkdemo run is writing"):
        OutputSet(tmp_path)
    holder.abandon()
    OutputSet(tmp_path).abandon()  # free again


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        result = OutputSet(tmp_path)
        result.write_bytes("f.txt", b"x")
        result.commit()
    finally:
        os.umask(previous)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == mode


def test_an_empty_out_is_refused(capsys):
    assert main(["--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "stage",
    [f"write {name}" for name in NAMES] + ["write commit", "write tidy"],
)
def test_a_kill_at_any_step_of_the_write_leaves_one_whole_set(tiny_dataset, tmp_path, stage):
    out = tmp_path / "out"
    assert main(arguments(tiny_dataset, out, seed=0)) == 0
    old = snapshot(out)
    killed = subprocess.run(
        [sys.executable, "-m", "ntkdemo", *arguments(tiny_dataset, out, seed=1)],
        env={**os.environ, "NTKDEMO_TEST_FAULT": f"{stage}:SIGKILL"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 137, killed.stderr
    now = snapshot(out)
    seed = json.loads(now["metrics.json"])["arguments"]["seed"]
    if seed == 0:
        assert now == old
    else:
        assert seed == 1 and all(now[name] != old[name] for name in ("predictions.png",))
        assert stage in ("write commit", "write tidy")  # only after the swap
    assert main(arguments(tiny_dataset, out, seed=2)) == 0  # the next run tidies up
    assert json.loads((out / "metrics.json").read_text())["arguments"]["seed"] == 2
    assert len(list((out / ".ntkdemo" / "sets").iterdir())) == 1


def test_each_subcommand_keeps_the_others_results(tmp_path):
    run = OutputSet(tmp_path, "run")
    run.write_json("metrics.json", {"run": 1})
    run.write_bytes("log.txt", b"x")
    run.commit()
    dynamics = OutputSet(tmp_path, "dynamics")
    dynamics.write_json("dynamics.json", {"t": 1})
    dynamics.commit()
    again = OutputSet(tmp_path, "dynamics")
    again.write_json("dynamics.json", {"t": 2})
    again.commit()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"run": 1}
    assert (tmp_path / "log.txt").read_bytes() == b"x"
    assert json.loads((tmp_path / "dynamics.json").read_text()) == {"t": 2}
    assert len(list((tmp_path / ".ntkdemo" / "sets").iterdir())) == 2  # one per scope
    rerun = OutputSet(tmp_path, "run")  # a new run set drops only the run's old files
    rerun.write_json("metrics.json", {"run": 2})
    rerun.commit()
    assert not (tmp_path / "log.txt").exists()
    assert json.loads((tmp_path / "dynamics.json").read_text()) == {"t": 2}


def test_run_then_a_theory_command_keeps_both(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    for arguments in (
        tiny(tiny_dataset, out, "--quiet"),
        ["dynamics", *tiny(tiny_dataset, out, "--quiet", "--points", "3")],
    ):
        done = subprocess.run(command(*arguments), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert (out / "metrics.json").is_file() and (out / "dynamics.json").is_file()


def test_result_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        result = OutputSet(tmp_path)
        result.write_json("metrics.json", {})
        result.commit()
    finally:
        os.umask(previous)
    folder = (tmp_path / ".ntkdemo" / "current-run").resolve()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "metrics.json").stat().st_mode) == 0o644


def test_a_folder_named_like_a_result_is_one_clear_error_and_the_old_set_stays(tmp_path):
    from ntkdemo.errors import InvalidParameterError

    first = OutputSet(tmp_path)
    first.write_json("metrics.json", {"run": 1})
    first.commit()
    (tmp_path / "confusion.png").mkdir()
    second = OutputSet(tmp_path)
    second.write_json("metrics.json", {"run": 2})
    second.write_bytes("confusion.png", b"png")
    with pytest.raises(InvalidParameterError, match="already holds a folder named 'confusion.png'"):
        second.commit()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"run": 1}
    OutputSet(tmp_path).abandon()  # the lock was released
