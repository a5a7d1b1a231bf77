"""Data modules, generators and readers; ``find_files`` is what the image and audio readers share, ``read_text``
what every reader of a text file users give shares (pairs files, manifests, class and template lists, configs)."""

from __future__ import annotations

import codecs
from pathlib import Path

from multimodal.errors import InputError


def find_files(root: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """root itself when it is a file, else every file under it with one of ``suffixes``, sorted;
    InputError when root is missing."""
    root = Path(root)
    if not root.exists():
        raise InputError("no such file or folder", root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def read_text(path: str | Path, what: str) -> str:
    """A text file users give, one way everywhere: UTF-8, a leading byte-order mark (which spreadsheet programs
    and Windows editors write) dropped. InputError naming the file for a missing file, a folder, a file that
    cannot be read, or bytes that are not UTF-8 (the line and byte offset of the first). ``what`` names the
    file in messages: "pairs", "manifest", "class" …"""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"a folder, not a {what} file", path)
    if not path.is_file():
        raise InputError(f"no such {what} file", path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the {what} file ({e.strerror or type(e).__name__})", path) from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise InputError(f"not a UTF-8 text file: byte 0x{data[offset]:02x} at offset {offset} ({e.reason}); "
                         f"save the {what} file as UTF-8", path, line) from None


def split_lines(text: str) -> list[str]:
    """The lines of a text as files number them: split at \\n, \\r\\n or \\r only (``str.splitlines`` also splits
    at characters that JSON strings may hold, such as U+2028), without their line ends."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
