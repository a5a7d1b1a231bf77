"""Writing what users asked for: each file appears whole or not at all, and a path that cannot be written (a
folder, a path under a file, a full or read-only disk) is an InputError naming it, never a traceback."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from multimodal.errors import InputError


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def output_folder(path: str | Path, create: bool = True) -> Path:
    """``path`` as a folder to write into, created with its parents (or only checked, if not ``create``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("cannot write into it: a file, not a folder", path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"cannot create the folder ({existing} is a file)", path)
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder ({_reason(e)})", path) from None
    return path


def output_file(path: str | Path) -> Path:
    """``path`` checked as a file to write, its folder created: commands check it before their long work."""
    path = Path(path)
    if path.is_dir():
        raise InputError("cannot write the file: a folder of that name exists", path)
    output_folder(path.parent)
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends it is flushed to disk and renamed onto
    ``path``. If anything fails, the temporary file is removed, ``path`` keeps what it held, and an OSError
    becomes an InputError naming ``path``."""
    path = output_file(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:
        raise InputError(f"cannot write the file ({_reason(e)})", path) from None
    finally:
        temporary.unlink(missing_ok=True)
