"""Write folders so a crash leaves either the old one or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` to disk."""
    for file in folder.rglob("*"):
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())


def swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` by the complete folder ``staging`` (same file system) with renames.

    If a crash strikes between the two renames, ``<out>.old`` holds the previous folder.
    """
    staging.chmod(0o755)  # mkdtemp makes it private; models are read by a service user
    fsync_tree(staging)
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A private folder beside ``out`` to build in: swapped in for ``out`` when the block
    ends without error (see :func:`swap_in`), removed whatever happens."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield staging
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
