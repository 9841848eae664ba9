"""What a supervised run tells its supervisor, should it die without a word.

The command line runs each job in a child process (:mod:`ntkdemo.supervisor`). A child
killed by a signal cannot explain itself, so as it goes it leaves facts in a folder the
supervisor named in ``$NTKDEMO_STATUS_DIR``: the stage it is in and the memory plan's
estimate (``status.json``), and, on a native crash, Python's ``faulthandler`` dump of
where it was (``fault.txt``). Outside a supervised run every function here does nothing.

Tests make a child fail on purpose with ``NTKDEMO_TEST_FAULT=STAGE:SIGNAL`` (e.g.
``solve:SIGSEGV``): on entering ``STAGE`` the child sends itself ``SIGNAL``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
from pathlib import Path
from typing import Any

STATUS_DIR_VARIABLE = "NTKDEMO_STATUS_DIR"
TEST_FAULT_VARIABLE = "NTKDEMO_TEST_FAULT"
STATUS_FILE = "status.json"
FAULT_FILE = "fault.txt"
INTERRUPT_FILE = "interrupted"


def supervised_folder() -> Path | None:
    """The folder of this run's status files, or None outside a supervised run."""
    folder = os.environ.get(STATUS_DIR_VARIABLE)
    return Path(folder) if folder else None


def watch_for_crashes() -> None:
    """On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT, dump the crashing thread's Python stack.

    It goes to ``fault.txt`` in the status folder; the handle stays open for the life of
    the process, as ``faulthandler`` requires.
    """
    folder = supervised_folder()
    if folder is not None:
        faulthandler.enable(file=open(folder / FAULT_FILE, "w"), all_threads=False)


def record(stage: str, **facts: Any) -> None:
    """Note that the run has entered ``stage`` (with ``facts``, JSON values) for the supervisor.

    Facts accumulate: a later stage keeps the facts of earlier ones unless it replaces them.
    """
    folder = supervised_folder()
    if folder is None:
        return
    path = folder / STATUS_FILE
    status = read_status(folder)
    status.update(facts, stage=stage)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(status))
    os.replace(temporary, path)
    _inject_test_fault(stage)


def note_interrupt() -> None:
    """Tell the supervisor that this run has taken its stop request (it stops re-sending)."""
    folder = supervised_folder()
    if folder is not None:
        (folder / INTERRUPT_FILE).touch()


def interrupt_noted(folder: Path) -> bool:
    """Whether the child supervised through ``folder`` has taken a stop request."""
    return (folder / INTERRUPT_FILE).exists()


def read_status(folder: Path) -> dict[str, Any]:
    """The facts a child left in ``folder`` (empty if none)."""
    try:
        return dict(json.loads((folder / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def _inject_test_fault(stage: str) -> None:
    """Send this process the signal ``$NTKDEMO_TEST_FAULT`` names for ``stage`` (tests only)."""
    wanted, _, name = os.environ.get(TEST_FAULT_VARIABLE, "").partition(":")
    if wanted == stage and name:
        os.kill(os.getpid(), signal.Signals[name])
