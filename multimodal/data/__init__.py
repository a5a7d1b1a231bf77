"""Data modules, generators and readers; ``find_files`` is what the image and audio readers share."""

from __future__ import annotations

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
