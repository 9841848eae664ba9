"""The command never dies silently: crashes and kills end in one line; any account can run it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import ntkdemo
from conftest import command, tiny
from ntkdemo.supervisor import blas_environment

SOURCE = Path(ntkdemo.__file__).resolve().parent


def run_command(*arguments: str, env: dict | None = None, cwd: Path | None = None):
    """``python -m ntkdemo ARGUMENTS`` as a user runs it, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "ntkdemo", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def tiny_run(dataset: Path, out: Path) -> list[str]:
    return ["--dataset", str(dataset), "--train-per-class", "4", "--test-per-class", "2"] + [
        "--out",
        str(out),
        "--quiet",
    ]


@pytest.fixture
def old_out(tmp_path) -> Path:
    """An --out folder holding the files of an earlier run (stand-ins)."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("metrics.json", "predictions.png", "confusion.png", "spectrum.png"):
        (out / name).write_text(f"old {name}")
    return out


def assert_untouched(out: Path) -> None:
    for name in ("metrics.json", "predictions.png", "confusion.png", "spectrum.png"):
        assert (out / name).read_text() == f"old {name}"


def test_a_native_crash_is_one_line_naming_blas_and_the_workaround(tiny_dataset, old_out):
    done = run_command(
        *tiny_run(tiny_dataset, old_out), env={"NTKDEMO_TEST_FAULT": "compute:SIGSEGV"}
    )
    assert done.returncode == 139, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("ntkdemo: error: ")
    assert "crashed (SIGSEGV, segmentation fault) in native code called from" in done.stderr
    assert "BLAS in use:" in done.stderr
    if "openblas" in done.stderr:
        assert "OPENBLAS_CORETYPE=Haswell" in done.stderr
    assert "--out was left as it was" in done.stderr
    assert_untouched(old_out)


def test_a_kill_names_the_memory_plan_and_max_memory(tiny_dataset, old_out):
    done = run_command(*tiny_run(tiny_dataset, old_out), env={"NTKDEMO_TEST_FAULT": "plan:SIGKILL"})
    assert done.returncode == 137, done.stderr
    assert done.stderr.count("\n") == 1
    assert "killed (SIGKILL)" in done.stderr and "the memory plan expected a peak of" in done.stderr
    assert "--max-memory" in done.stderr
    assert_untouched(old_out)


def test_exit_codes_and_output_pass_through_the_supervisor(tiny_dataset, tmp_path):
    bad = run_command("--train-per-class", "0", "--out", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "--train-per-class: must be >= 1, got 0" in bad.stderr
    good = run_command(*tiny_run(tiny_dataset, tmp_path / "out"))
    assert good.returncode == 0 and good.stderr == "" and good.stdout == ""
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_runs_where_no_cache_can_be_written(tiny_dataset, tmp_path):
    """A read-only install run by an account without a writable home: numba cannot cache
    (no ``__pycache__`` beside the sources, no user cache folder), so the kernels compile
    in memory. Root may write anywhere, so the package is copied where ``__pycache__`` is
    a file (a folder cannot be made there) and the home and cache folders lie under
    ``/dev/null``."""
    copy = tmp_path / "site" / "ntkdemo"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "__pycache__").write_text("not a folder")
    env = {
        "PYTHONPATH": str(copy.parent),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/dev/null/home",
        "XDG_CACHE_HOME": "/dev/null/cache",
    }
    env_without_cache = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env_without_cache.update(env)
    probe = subprocess.run(
        [sys.executable, "-c", "import ntkdemo.kernels as k; print(k.__file__)"],
        capture_output=True,
        text=True,
        env=env_without_cache,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(copy / "kernels" / "__init__.py")
    for arguments in (["--version"], tiny_run(tiny_dataset, tmp_path / "out")):
        done = subprocess.run(
            [sys.executable, "-m", "ntkdemo", *arguments],
            capture_output=True,
            text=True,
            env=env_without_cache,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # matplotlib's cache warnings went to log.txt
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert "matplotlib" in (tmp_path / "out" / "log.txt").read_text()


def test_a_stop_request_to_the_process_itself_ends_the_run(fashion_mnist, old_out):
    """``kill -INT PID`` (an IDE's stop button, ``timeout -s INT``) to the command's own
    process, not its group: passed on to the child, exit 130 within seconds, one line,
    ``--out`` as it was, no child left."""
    import signal
    import time

    import psutil

    command = subprocess.Popen(
        [sys.executable, "-m", "ntkdemo", "--dataset", str(fashion_mnist)]
        + ["--train-per-class", "all", "--test-per-class", "10", "--architecture", "myrtle5"]
        + ["--out", str(old_out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in command.stdout:  # the run has started its hours-long kernel
            if line.startswith("kernel: about"):
                break
        children = psutil.Process(command.pid).children(recursive=True)
        assert children, "the command runs its job in a child"
        time.sleep(1.0)
        command.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        code = command.wait(timeout=60)
        assert time.monotonic() - stopped < 20
        err = command.stderr.read()
    finally:
        command.kill()
    assert code == 130
    assert err.strip() == "ntkdemo: interrupted; --out holds the previous set of files"
    assert_untouched(old_out)
    assert not any(child.is_running() for child in children)


AMD_AVX512 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512dq\n"


AMD_AVX2 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2\n"


INTEL_AVX512 = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f\n"


@pytest.mark.parametrize(
    "cpuinfo, environ, expected",
    [
        (AMD_AVX512, {}, {"OPENBLAS_CORETYPE": "Haswell"}),
        (AMD_AVX512, {"OPENBLAS_CORETYPE": "Zen"}, {}),  # the user's choice stands
        (AMD_AVX2, {}, {}),
        (INTEL_AVX512, {}, {}),
        ("", {}, {}),  # no /proc/cpuinfo
    ],
)
def test_openblas_coretype_is_set_only_on_amd_with_avx512(cpuinfo, environ, expected):
    assert blas_environment(environ, cpuinfo) == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_its_parent_and_writes_nothing(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    parent = subprocess.Popen(
        command(*tiny(tiny_dataset, out, "--quiet")),
        env={**os.environ, "NTKDEMO_TEST_FAULT": "compute:SIGSTOP"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while time.monotonic() < deadline:
            children = psutil.Process(parent.pid).children()
            if children and children[0].status() == psutil.STATUS_STOPPED:
                break
            time.sleep(0.1)
        assert children, "the child never reached the compute stage"
        status_folders = list(Path(tempfile.gettempdir()).glob(f"ntkdemo-status-{parent.pid}-*"))
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, "the child outlived its parent"
    finally:
        parent.kill()
    assert not (out / "metrics.json").exists()
    assert status_folders  # left by the killed parent, removed by the next run
    done = subprocess.run(command("--version"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert not any(folder.exists() for folder in status_folders)


def test_closed_stderr_and_full_stdout(tiny_dataset, tmp_path):
    closed = subprocess.run(
        command(*tiny(tiny_dataset, tmp_path / "a", "--quiet")),
        stderr=subprocess.DEVNULL,
        timeout=300,
        preexec_fn=lambda: os.close(2),
    )
    assert closed.returncode == 0
    assert (tmp_path / "a" / "metrics.json").is_file()
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            command(*tiny(tiny_dataset, tmp_path / "b")),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2
    assert done.stderr == (
        "ntkdemo: error: cannot write to standard output (No space left on device); "
        "redirect it elsewhere or use --quiet\n"
    )


def test_a_ctrl_c_landing_inside_the_hook_still_ends_the_run(monkeypatch):
    """The terminal's SIGINT and the supervisor's arrive together: the first is lost in a
    callback, the second is raised inside the hook that re-sends the first (a fresh-clone
    CI run under load: the run went on and exited 0). The hook catches it and still
    re-sends, so the run stops."""
    import threading
    from types import SimpleNamespace

    from ntkdemo.cli.main import Interrupts

    started = []

    class FirstOneInterrupted:  # threading.Timer, with a SIGINT landing in the first
        def __init__(self, delay, function, args):
            if not landed:
                landed.append(True)
                interrupts.on_signal(signal.SIGINT, None)  # raises KeyboardInterrupt
            self.call = (function, args)

        def start(self):
            started.append(self.call)

    landed: list[bool] = []
    monkeypatch.setattr(threading, "Timer", FirstOneInterrupted)
    interrupts = Interrupts(lambda unraisable: None)
    interrupts.unraisable(SimpleNamespace(exc_type=KeyboardInterrupt))
    assert landed and started == [(os.kill, (os.getpid(), signal.SIGINT))]
    assert interrupts.raised_at is None  # so the re-sent SIGINT is raised


def test_a_swallowed_ctrl_c_is_sent_again_and_repeats_are_ignored():
    """A KeyboardInterrupt raised inside a callback (distributed's gc hook, seen under load)
    is 'ignored' by Python; the command's hook sends SIGINT again instead of printing it.
    A second SIGINT just after one was raised is ignored (nothing interrupts the line)."""
    from types import SimpleNamespace

    from ntkdemo.cli.main import Interrupts

    received, passed_on = [], []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        interrupts = Interrupts(passed_on.append)
        with pytest.raises(KeyboardInterrupt):
            interrupts.on_signal(signal.SIGINT, None)
        interrupts.on_signal(signal.SIGINT, None)  # a repeat: ignored
        interrupts.unraisable(SimpleNamespace(exc_type=KeyboardInterrupt))  # that one was lost
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:  # sent again, from a timer
            time.sleep(0.01)
        with pytest.raises(KeyboardInterrupt):
            interrupts.on_signal(signal.SIGINT, None)  # so the re-sent one is raised
        other = SimpleNamespace(exc_type=ValueError)
        interrupts.unraisable(other)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert received == [signal.SIGINT] and passed_on == [other]
