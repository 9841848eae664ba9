"""Command line: ``ntkdemo [run] [options]`` and the theory subcommands.

Every error a user can cause ends in one line on stderr and exit code 2; a bug in one
line and exit code 1 (``NTKDEMO_DEBUG=1`` shows its traceback). The ``ntkdemo``
command runs :func:`main` in a child process (:mod:`ntkdemo.supervisor`).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from importlib import metadata

from ..errors import NTKDemoError
from ..process_status import note_interrupt
from . import run, theory
from .options import Parser, UsageError, diagnostics_kept


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The argument parser of every subcommand, and the subcommand names."""
    parser = Parser(
        prog="ntkdemo",
        description=run.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"ntkdemo {metadata.version('ntkdemo')}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = {run.add_command(commands), *theory.add_commands(commands)}
    return parser, names


class Interrupts:
    """Ctrl-C ends a run once, with one line, whatever callback it lands in.

    A KeyboardInterrupt raised while a callback runs (a library's garbage-collection
    hook, say) cannot propagate: Python prints it as "Exception ignored" and goes on, so
    the run would neither stop nor stay quiet. :meth:`unraisable` (the unraisable-
    exception hook) sends SIGINT again instead, which interrupts the run at its next
    step; a SIGINT that lands inside the hook itself is caught there and the re-send
    made again. :meth:`on_signal` raises once per interrupt: a second SIGINT within
    :attr:`REPEAT_SECONDS` of one it raised (the terminal's and a re-sent one arriving
    together) is ignored, so nothing interrupts the one line that ends the run.
    """

    REPEAT_SECONDS = 2.0

    def __init__(self, previous_hook) -> None:
        self.previous_hook = previous_hook
        self.raised_at: float | None = None

    def on_signal(self, number, frame) -> None:
        now = time.monotonic()
        if self.raised_at is None or now - self.raised_at > self.REPEAT_SECONDS:
            self.raised_at = now
            note_interrupt()  # the supervisor stops passing a stop request on
            raise KeyboardInterrupt

    def unraisable(self, unraisable) -> None:
        if unraisable.exc_type is None or not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.previous_hook(unraisable)
            return
        while True:  # until a re-send is under way
            try:
                self.raised_at = None  # that one was lost: the next is raised
                # from another thread, a moment later: sent from here, it would be raised
                # inside this hook, where it would be lost again
                threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
                return
            except KeyboardInterrupt:  # a repeat (the supervisor's) raised in this hook:
                continue  # lost too, and the timer may not have started; send again


def attach_negative_values(arguments: list[str]) -> list[str]:
    """Write ``--option -1,3`` as ``--option=-1,3`` so a negative value reaches its check.

    argparse takes a value that starts with ``-`` (``-1,3``, ``-inf``, ``-1e3``) for an
    option and answers "expected one argument"; attached with ``=``, the option's own
    check runs and says what is wrong with the value.
    """
    attached: list[str] = []
    for token in arguments:
        previous = attached[-1] if attached else ""
        if (
            previous.startswith("--")
            and "=" not in previous
            and re.match(r"-(\d|\.\d|inf|nan)", token, re.IGNORECASE)
        ):
            attached[-1] = f"{previous}={token}"
        else:
            attached.append(token)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntkdemo``; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser, names = build_parser()
    if not arguments or (
        arguments[0] not in names and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "run")
    interrupts = Interrupts(sys.unraisablehook)
    sys.unraisablehook = interrupts.unraisable
    watched = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, interrupts.on_signal) if watched else None
    try:
        options = parser.parse_args(attach_negative_values(arguments))
        with diagnostics_kept() as diagnostics:
            options.diagnostics = diagnostics
            return options.handler(options)
    except (UsageError, NTKDemoError) as exc:
        print(f"ntkdemo: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        sys.stdout = open(os.devnull, "w")
        return 1
    except KeyboardInterrupt:
        print("ntkdemo: interrupted; --out holds the previous set of files", file=sys.stderr)
        return 130
    except MemoryError:
        advice = (
            "lower --max-memory below the free memory, or use fewer images"
            if arguments[0] == "run"
            else "ask for less: fewer images, smaller --widths or fewer points"
        )
        print(f"ntkdemo: error: ran out of memory; {advice}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not a user error: one line, the traceback on request
        if os.environ.get("NTKDEMO_DEBUG"):
            raise
        print(
            f"ntkdemo: internal error: {type(exc).__name__}: {exc}; please report it "
            "(NTKDEMO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        sys.unraisablehook = interrupts.previous_hook
        if watched:
            signal.signal(signal.SIGINT, previous_handler)
