"""Writing files so that a failed write (a full disk, a kill) never destroys or half-writes one.

Every record, checkpoint and result is written to a temporary file in the same directory and renamed
over the old one: a rename within one filesystem is atomic, so readers see the old file or the new one.
(Lightning's own checkpoint writer stages in the system temp directory and copies across filesystems,
which truncates the destination when the disk fills during the copy.)
"""

import io
import json
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` on success, removed on failure."""
    path = Path(path)
    # Process and thread both in the name: two writers of one path never share a temporary file.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (and durably: fsync before the rename).

    An OSError names `path` itself (a full disk's error from write() names no file, and the
    temporary file's name would mean nothing to the user).
    """
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, data: dict) -> None:
    """Write standard JSON atomically: NaN and infinities become null (standard parsers reject them)."""
    write_text(path, json.dumps(_standard(data), indent=2, default=str, allow_nan=False) + "\n")


def _standard(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _standard(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard(v) for v in value]
    return value


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but a failed save leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a disk error then surfaces as an OSError with its errno
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(Path(path), buffer.getvalue())
