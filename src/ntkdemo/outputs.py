"""A run's result files, replaced as one set: old or new, never a mix, never half-written.

Layout of an output folder ``OUT`` (``SCOPE`` is the subcommand: ``run``, ``curve``, ...)::

    OUT/metrics.json  -> .ntkdemo/current-run/metrics.json   (one link per file name)
    OUT/.ntkdemo/current-SCOPE -> sets/SCOPE.set-<id>         (the set now shown)
    OUT/.ntkdemo/sets/SCOPE.set-<id>/metrics.json, *.png, ... (each set, written whole)
    OUT/.ntkdemo/lock                                         (held by the run writing)

A run writes its files into a new set folder; only when all are written does it point
``current-SCOPE`` at it, by renaming a new link over the old one: one atomic step, so a
crash, a kill or a Ctrl-C at any moment leaves the old set or the new one, whole. Each
subcommand has its own scope, so ``ntkdemo run`` then ``ntkdemo dynamics`` into one folder
keeps both results: a set replaces only the files of its own scope. The lock (``flock``)
keeps two runs from writing one folder at once; the run that holds it removes what an
interrupted run of the same scope left behind. Files and set folders get the permissions
the umask allows, as any other program's.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path

from .errors import InvalidParameterError
from .process_status import record

STATE_FOLDER = ".ntkdemo"
FREE_BYTES_NEEDED = 20_000_000  # a set is a few MB; checked before any computing


class OutputSet:
    """The result files of one run in folder ``path`` (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The output folder; created if needed.
    scope : str, default "run"
        The subcommand writing; a set replaces only the files of its own scope.

    Raises
    ------
    InvalidParameterError
        If ``path`` is empty, cannot be written, has too little free space, or another
        run is writing to it.
    """

    def __init__(self, path: str | os.PathLike, scope: str = "run"):
        if not str(path).strip():
            raise InvalidParameterError(
                "--out is empty; name a folder for the results, e.g. --out ntkdemo-out"
            )
        self.path = Path(path)
        state = self.path / STATE_FOLDER
        try:
            (state / "sets").mkdir(parents=True, exist_ok=True)
            lock = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o666)
            free = shutil.disk_usage(state).free
        except OSError as exc:
            raise InvalidParameterError(
                f"cannot write to --out {str(self.path)!r} ({exc.strerror or exc}); "
                "choose a writable folder"
            ) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            raise InvalidParameterError(
                f"another ntkdemo run is writing to --out {str(self.path)!r}; wait for it to "
                "finish or choose another folder"
            ) from None
        self._release = weakref.finalize(self, os.close, lock)
        if free < FREE_BYTES_NEEDED:
            self._release()
            raise InvalidParameterError(
                f"no space left on the device of --out {str(self.path)!r} "
                f"({free / 1e6:.1f} MB free); free some space or choose another folder"
            )
        self._state = state
        self._scope = scope
        self._current = f"current-{scope}"
        self._remove_leftovers()
        try:
            self._staging = Path(tempfile.mkdtemp(prefix=f"{scope}.new-", dir=state / "sets"))
        except OSError as exc:  # no inodes left, say
            self._release()
            raise InvalidParameterError(
                f"cannot write to --out {str(self.path)!r} ({exc.strerror or exc}); free some "
                "space or choose another folder"
            ) from None
        self._names: list[str] = []

    def __str__(self) -> str:
        return str(self.path)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Add file ``name`` with content ``data`` to the new set."""
        record(f"write {name}")
        try:
            with open(self._staging / name, "wb") as stream:
                stream.write(data)
        except OSError as exc:
            self.abandon()
            if exc.errno == errno.ENOSPC:
                raise InvalidParameterError(
                    f"no space left on device while writing {name} to --out "
                    f"{str(self.path)!r}; its files are unchanged: free some space or "
                    "choose another folder"
                ) from None
            raise
        self._names.append(name)

    def write_json(self, name: str, payload: dict) -> None:
        """Add ``payload`` as indented, key-sorted JSON."""
        self.write_bytes(name, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())

    def save_figure(self, name: str, figure) -> None:
        """Add a matplotlib ``Figure`` rendered to PNG."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        self.write_bytes(name, buffer.getvalue())

    def commit(self) -> None:
        """Show the new set in place of the old one (one atomic rename), then tidy up.

        Raises
        ------
        InvalidParameterError
            If ``--out`` holds something of its own under one of the set's names (a
            folder named ``metrics.json``, say), or the links cannot be made (no space or
            no inodes left); the old set is then shown as it was.
        """
        for name in self._names:
            if (self.path / name).exists() and not (self.path / name).is_symlink():
                self.abandon()
                raise InvalidParameterError(
                    f"--out {str(self.path)!r} already holds a {_kind(self.path / name)} named "
                    f"{name!r} that ntkdemo did not write; move it away or choose another "
                    "folder"
                )
        umask = os.umask(0)
        os.umask(umask)
        try:
            for name in self._names:
                os.chmod(self._staging / name, 0o666 & ~umask)
            os.chmod(self._staging, 0o777 & ~umask)  # mkdtemp made it 0700
            final = self._staging.with_name(
                self._staging.name.replace(f"{self._scope}.new-", f"{self._scope}.set-", 1)
            )
            self._staging.rename(final)
            self._staging = final  # what abandon() removes, until the swap below
            for name in self._names:  # links for new names first: they dangle until the swap
                self._link(self.path / name, Path(STATE_FOLDER) / self._current / name)
            record("write commit")
            self._link(self._state / self._current, Path("sets") / final.name)
        except OSError as exc:
            self.abandon()
            raise InvalidParameterError(
                f"cannot write the results to --out {str(self.path)!r} ({exc.strerror or exc}); "
                "the files shown there are unchanged: free some space or choose another folder"
            ) from None
        record("write tidy")
        ours = f"{STATE_FOLDER}{os.sep}{self._current}{os.sep}"
        for entry in self.path.iterdir():  # links to files the new set does not have
            if entry.is_symlink() and not entry.exists() and os.readlink(entry).startswith(ours):
                entry.unlink()
        self._remove_leftovers()
        self._release()

    def abandon(self) -> None:
        """Drop the new set (after a failure); the old one stays as it was."""
        shutil.rmtree(self._staging, ignore_errors=True)
        self._release()

    @staticmethod
    def _link(path: Path, target: Path) -> None:
        """Make ``path`` a symbolic link to ``target``, replacing what is there atomically."""
        if path.is_symlink() and os.readlink(path) == str(target):
            return
        temporary = path.with_name(f".{path.name}.link-{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target)
        os.replace(temporary, path)

    def _remove_leftovers(self) -> None:
        """Remove this scope's sets other than its current one, and temporary links."""
        current = self._state / self._current
        shown = Path(os.readlink(current)).name if current.is_symlink() else None
        for entry in (self._state / "sets").iterdir():
            if entry.name.startswith(f"{self._scope}.") and entry.name != shown:
                if entry != getattr(self, "_staging", None):
                    shutil.rmtree(entry, ignore_errors=True)
        for folder in (self.path, self._state):
            for entry in folder.glob(".*.link-*"):
                entry.unlink(missing_ok=True)


def _kind(path: Path) -> str:
    return "folder" if path.is_dir() else "file"


def prepare_out_dir(path: str | os.PathLike, scope: str = "run") -> OutputSet:
    """Open the output folder for a new set of ``scope``'s results (see :class:`OutputSet`)."""
    return OutputSet(path, scope)
