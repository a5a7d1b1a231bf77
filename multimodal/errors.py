"""The one exception type for bad user input: a file, a line or an argument, and the reason."""

from __future__ import annotations

from pathlib import Path


def a(name: str) -> str:
    """``name`` with its indefinite article, for messages: "an ImageClassifier", "a SpeechRecognizer"."""
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"


class InputError(ValueError):
    """Bad input from the user. Scripts print the message and exit with status 2 instead of a traceback."""

    def __init__(self, reason: str, path: str | Path | None = None, line: int | None = None):
        self.reason, self.path, self.line = reason, path, line
        where = "" if path is None else f"{path}{'' if line is None else f':{line}'}: "
        super().__init__(f"{where}{reason}")
