"""The ``ntkdemo`` command: a thin parent that runs the job in a child and reads how it ended.

A process that dies of a native crash (a segmentation fault inside BLAS, say) or is
killed by the operating system (its out-of-memory killer) prints nothing itself; the
shell shows ``Segmentation fault`` or ``Killed`` at best. So ``ntkdemo`` starts
``python -m ntkdemo`` again as a child with the same arguments, standard streams and
environment, waits, and if the child died of a signal prints one line saying what
happened, where, and what to do, and exits with ``128 + signal number`` (139 for
SIGSEGV, 137 for SIGKILL), the shell's convention. The child leaves the facts this
needs (stage, memory plan, crash location) through :mod:`ntkdemo.process_status`.

Result files are only written at the end of a run, and replaced as one set
(:mod:`ntkdemo.outputs`), so a run that dies leaves ``--out`` with the old set or the
new one, whole.

Signals: Ctrl-C reaches the child directly (it shares the terminal's process group) and
ends it with its own one-line message and exit 130. A SIGINT sent to the parent alone
(``kill -INT``, ``subprocess.send_signal``, an IDE's stop button, ``timeout -s INT``) is
passed on, and passed on again every :data:`INTERRUPT_RESEND_SECONDS` until the child
notes that it took it (:func:`~ntkdemo.process_status.note_interrupt`): the child ignores
SIGINT until its command line is loaded, and a repeat of one it took within two seconds
(the terminal's and the forwarded one arriving together), so it stops once, with one
line. One pressed in the first fraction of a second of the parent's own interpreter
start is Python's to report. SIGTERM and SIGHUP sent to the parent are passed on to the
child. On Linux the child
asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``), so a parent
killed with SIGKILL takes its child along and nothing is written after; the status
folders such a parent leaves are removed by the next ``ntkdemo``.

Known native crashes are avoided before they happen: OpenBLAS's ``SkylakeX`` kernels
(which it picks on AMD CPUs with AVX-512) crash in multi-threaded Cholesky from about
16,000 rows, so on such a CPU the child gets ``OPENBLAS_CORETYPE=Haswell`` unless the
user set ``OPENBLAS_CORETYPE`` (:func:`blas_environment`; about the same speed).

This module imports nothing heavy: the parent stays small and starts fast.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .process_status import FAULT_FILE, STATUS_DIR_VARIABLE, interrupt_noted, read_status
from .units import format_bytes

CRASH_SIGNALS = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGILL: "illegal instruction",
    signal.SIGFPE: "floating-point exception",
    signal.SIGABRT: "abort",
}
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
INTERRUPT_RESEND_SECONDS = 1.0
"""How often a SIGINT sent to the parent is passed on again until the child has taken it."""
STATUS_PREFIX = "ntkdemo-status-"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntkdemo`` and ``python -m ntkdemo``; returns the exit code.

    Inside the child (``$NTKDEMO_STATUS_DIR`` set) it runs :func:`ntkdemo.cli.main`.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    _replace_closed_streams()
    if os.environ.get(STATUS_DIR_VARIABLE):
        from .cli import main as run_in_this_process
        from .process_status import watch_for_crashes

        if not os.environ.get("NTKDEMO_DEBUG"):
            watch_for_crashes()
        try:
            return run_in_this_process(arguments)
        except KeyboardInterrupt:  # after the command had said its line: nothing more
            return 130
        finally:  # the run has ended: an interrupt still on its way changes nothing
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _remove_orphaned_status_folders(Path(tempfile.gettempdir()))
        folder = Path(tempfile.mkdtemp(prefix=f"{STATUS_PREFIX}{os.getpid()}-"))
    except KeyboardInterrupt:  # Ctrl-C before the child exists
        print("ntkdemo: interrupted; --out was left as it was", file=sys.stderr)
        return 130
    try:
        return_code = _run_child(arguments, folder)
        if return_code >= 0:
            return return_code
        number = -return_code
        print(f"ntkdemo: error: {explain_signal(number, folder)}", file=sys.stderr, flush=True)
        return 128 + number
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_child(arguments: list[str], folder: Path) -> int:
    """Run ``python -m ntkdemo ARGUMENTS`` with the status folder; its return code."""
    environment = {
        **os.environ,
        **blas_environment(os.environ, _read_cpuinfo()),
        STATUS_DIR_VARIABLE: str(folder),
    }
    # Ignored before the child starts, so the child starts ignoring it too (Python keeps
    # an ignored SIGINT ignored) until its command line installs its own handler: a
    # Ctrl-C while its interpreter and libraries load is not a traceback. Once the child
    # exists, a SIGINT to the parent is passed on (again until the child takes it).
    previous_interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen(
        [sys.executable, "-m", "ntkdemo", *arguments],
        env=environment,
        preexec_fn=_die_with_parent(os.getpid()),
    )
    previous = {number: signal.getsignal(number) for number in FORWARDED_SIGNALS}
    for number in FORWARDED_SIGNALS:
        signal.signal(number, lambda received, _frame: child.send_signal(received))
    stop_requested: list[bool] = []

    def pass_interrupt_on(_number, _frame) -> None:
        stop_requested.append(True)
        child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, pass_interrupt_on)
    try:
        while True:
            try:
                return child.wait(timeout=INTERRUPT_RESEND_SECONDS)
            except subprocess.TimeoutExpired:
                if stop_requested and not interrupt_noted(folder):
                    child.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous_interrupt)
        for number, handler in previous.items():
            signal.signal(number, handler)


def blas_environment(environ: Mapping[str, str], cpuinfo: str) -> dict[str, str]:
    """The BLAS settings the child needs on this CPU that the user has not made.

    OpenBLAS picks its ``SkylakeX`` kernels on any CPU with AVX-512, and on AMD CPUs with
    AVX-512 (Zen 4 and later) its multi-threaded Cholesky (``dpotrf``) crashes from about
    16,000 rows; its ``Haswell`` kernels run there at about the same speed. So on an AMD
    CPU with AVX-512 this returns ``{"OPENBLAS_CORETYPE": "Haswell"}``, unless
    ``environ`` already sets ``OPENBLAS_CORETYPE`` (the user's choice stands).

    Parameters
    ----------
    environ : Mapping of str to str
        The environment the child would inherit.
    cpuinfo : str
        The text of ``/proc/cpuinfo`` (empty where there is none: nothing is set).

    Returns
    -------
    dict of str to str
        Variables to add to the child's environment (possibly none).
    """
    if "OPENBLAS_CORETYPE" in environ:
        return {}
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())
        if key.strip() in ("vendor_id", "flags")
    )
    amd = fields.get("vendor_id") == "AuthenticAMD"
    avx512 = "avx512f" in fields.get("flags", "").split()
    return {"OPENBLAS_CORETYPE": "Haswell"} if amd and avx512 else {}


def _read_cpuinfo() -> str:
    """``/proc/cpuinfo``, or an empty string where the system has none."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _die_with_parent(parent: int):
    """A ``preexec_fn`` asking Linux to SIGKILL the child when ``parent`` dies (else None)."""
    if not sys.platform.startswith("linux"):
        return None

    def arrange() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arrange


def _remove_orphaned_status_folders(temporary: Path) -> None:
    """Remove status folders of supervisors that died without tidying (SIGKILL)."""
    for folder in temporary.glob(f"{STATUS_PREFIX}*-*"):
        owner = folder.name[len(STATUS_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _process_exists(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _replace_closed_streams() -> None:
    """Give a closed standard stream (``2>&-``) the null device, so writes go nowhere.

    The descriptor itself is filled too, so no file opened later takes number 2 and
    receives the child's messages.
    """
    for number in (0, 1, 2):
        try:
            os.fstat(number)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != number:
                os.dup2(null, number)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def explain_signal(number: int, folder: Path) -> str:
    """One line: what signal ``number`` did to the run, where, and what to do.

    Parameters
    ----------
    number : int
        The signal that ended the child.
    folder : pathlib.Path
        The child's status folder (see :mod:`ntkdemo.process_status`).
    """
    status = read_status(folder)
    name = signal.Signals(number).name
    outputs = (
        "--out shows the previous set of files or the new one, whole"
        if str(status.get("stage", "")).startswith("write")
        else "--out was left as it was"
    )
    if number in CRASH_SIGNALS:
        where = _crash_location(folder / FAULT_FILE)
        return (
            f"the run crashed ({name}, {CRASH_SIGNALS[signal.Signals(number)]}) in native "
            f"code{where}; {_blas_advice()}; {outputs}"
        )
    if number == signal.SIGKILL:
        return (
            f"the run was killed ({name}), most likely by the operating system for lack of "
            f"memory; {_memory_advice(status)}; {outputs}"
        )
    return f"the run was stopped by {name}; {outputs}"


def _crash_location(fault_file: Path) -> str:
    """`` called from FILE line N (FUNCTION)``: the innermost Python frame faulthandler saw."""
    try:
        dump = fault_file.read_text(errors="replace")
    except OSError:
        return ""
    frame = re.search(r'File "([^"]+)", line (\d+) in (\S+)', dump)
    if frame is None:
        return ""
    path = Path(frame.group(1))
    short = "/".join(path.parts[-3:]) if "site-packages" in path.parts else path.name
    return f" called from {short} line {frame.group(2)} ({frame.group(3)})"


def _blas_advice() -> str:
    """The BLAS libraries loaded by numpy and scipy, and the known workaround for OpenBLAS."""
    try:
        import numpy  # noqa: F401  (loads numpy's BLAS)
        import scipy.linalg  # noqa: F401  (loads scipy's)
        from threadpoolctl import threadpool_info

        libraries = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    except Exception:  # the report must not fail where the run did
        libraries = []
    if not libraries:
        return "a BLAS or LAPACK routine is the usual cause; try another numpy/scipy build"
    described = ", ".join(
        f"{info.get('internal_api')} {info.get('version')} "
        f"({info.get('architecture') or 'unknown'} kernels, {Path(info['filepath']).name})"
        for info in libraries
    )
    advice = f"BLAS in use: {described}"
    if any(info.get("internal_api") == "openblas" for info in libraries):
        chosen = os.environ.get("OPENBLAS_CORETYPE")
        advice += (
            "; some OpenBLAS kernels crash on some CPUs: run again with "
            "OPENBLAS_CORETYPE=Haswell"
            + (f" (now {chosen})" if chosen else "")
            + ", or install numpy and scipy built on another BLAS (e.g. MKL)"
        )
    return advice


def _memory_advice(status: dict) -> str:
    """What the memory plan expected, and how to ask for less."""
    peak, allowed = status.get("planned_peak_bytes"), status.get("allowed_bytes")
    if peak is None or allowed is None:
        return "free memory or use fewer images (--train-per-class), and set --max-memory"
    return (
        f"the memory plan expected a peak of about {format_bytes(peak)} of the "
        f"{format_bytes(allowed)} it allowed; other programs may have taken the rest: "
        "free memory, or set --max-memory lower (the plan then picks a leaner solver or "
        "says what fits)"
    )
