"""Write result files atomically: a temporary name in the same folder, then a rename.

An interrupted run thus leaves each file either as it was or as the new run wrote
it, never half-written.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from .errors import InvalidParameterError


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that it is a writable folder.

    Raises
    ------
    InvalidParameterError
        If it exists as a file or cannot be written.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".ntkdemo-probe-")
        probe.close()
    except OSError as exc:
        raise InvalidParameterError(
            f"cannot write to --out {str(folder)!r} ({exc.strerror or exc}); "
            "choose a writable folder"
        ) from None
    return folder


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented, key-sorted JSON, atomically."""
    write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def save_figure(figure, path: Path) -> None:
    """Render a matplotlib ``Figure`` to PNG and write it atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())
