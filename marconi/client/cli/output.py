"""
Where the results of the C{marconi} command go: tables and lines for
people, JSON for scripts, and a progress bar on a terminal.
"""

import json
import shutil
from typing import Any, Iterable, Optional, Sequence, TextIO

from marconi.client.models import compactJSON as dumps

MESSAGE_HEADERS = ("ID", "AGE", "TTL", "TAGS", "BODY")


def plural(count: int, word: str) -> str:
    """
    C{"1 message"}, C{"2 messages"}.
    """
    return f"{count} {word}{'s' if count != 1 else ''}"


class Output:
    """
    Where results go: tables for people, JSON for scripts.

    With C{--json}, a single result is one JSON document and a collection
    is JSON lines (one document per line), so that long listings and
    C{tail} stream.
    """

    def __init__(self, asJSON: bool, out: TextIO, err: TextIO) -> None:
        self.asJSON = asJSON
        self.out = out
        self.err = err

    def document(self, value: Any) -> None:
        self.out.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")

    def line(self, value: Any) -> None:
        self.out.write(dumps(value) + "\n")
        self.out.flush()

    def text(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def result(self, document: Any, text: str) -> None:
        """
        One result: C{document} with C{--json}, else the sentence C{text}.
        """
        if self.asJSON:
            self.document(document)
        else:
            self.text(text)

    def messages(self, messages: Iterable[Any], empty: Optional[str] = None) -> None:
        """
        Messages as JSON lines, or as a table; C{empty} is said on stderr
        when there are none to tabulate.
        """
        if self.asJSON:
            for m in messages:
                self.line(m.toJSON())
            return
        rows = list(_messageRows(messages))
        if rows or empty is None:
            self.table(MESSAGE_HEADERS, rows)
        else:
            self.note(empty)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        cells = [[_cell(v) for v in row] for row in rows]
        if not cells:
            return
        if self.out.isatty():
            width = shutil.get_terminal_size().columns
            cells = [row[:-1] + [_fit(row[-1], width, row, headers)] for row in cells]
        widths = [
            max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)
        ]
        for row in [list(headers), *cells]:
            padded = [v.ljust(widths[i]) for i, v in enumerate(row[:-1])]
            self.out.write("  ".join(padded + [row[-1]]).rstrip() + "\n")
        self.out.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return dumps(value)


def _fit(last: str, width: int, row: Sequence[str], headers: Sequence[str]) -> str:
    """
    Cut the last column so a row fits the terminal.
    """
    used = sum(
        max(len(v), len(h)) + 2 for v, h in zip(row[:-1], headers[:-1], strict=False)
    )
    room = max(width - used, 20)
    return last if len(last) <= room else last[: room - 1] + "…"


def _messageRows(messages: Iterable[Any]) -> Iterable[list]:
    for m in messages:
        yield [m.id, f"{m.age}s", f"{m.ttl}s", ",".join(m.tags) or "-", dumps(m.body)]


class Progress:
    """
    A progress bar on a terminal's stderr; nothing when stderr is not a
    terminal.
    """

    def __init__(self, stream: TextIO, label: str, total: Optional[int]) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = bool(total) and stream.isatty()
        self._shown = -1

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.enabled or not self.total:
            return
        fraction = min(self.done / self.total, 1.0)
        step = int(fraction * 200)
        if step == self._shown:
            return
        self._shown = step
        width = 30
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total} {fraction:4.0%}"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._shown >= 0:
            self.stream.write("\n")
            self.stream.flush()
