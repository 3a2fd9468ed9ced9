"""The logs pane: the procedure's log documents, instrument errors, why a run stopped."""

from __future__ import annotations

import time

from PyQt6.QtGui import QFont
from PyQt6.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

from labrig.runs.documents import LogDoc

__all__ = ["LogPane"]


class LogPane(QWidget):
    """A read-only, bounded list of time-stamped lines (oldest fall off after ``max_lines``)."""

    def __init__(self, max_lines: int = 5000, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(max_lines)
        self.view.setFont(QFont("monospace", 9))
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def add(self, message: str, level: str = "info", when: float | None = None) -> None:
        """Append a line: ``HH:MM:SS LEVEL   message`` (multi-line messages are indented)."""
        stamp = time.strftime("%H:%M:%S", time.localtime(time.time() if when is None else when))
        lines = str(message).rstrip("\n").split("\n")
        text = f"{stamp} {level.upper():7s} {lines[0]}"
        for extra in lines[1:]:
            text += f"\n{'':17s}{extra}"
        self.view.appendPlainText(text)

    def add_doc(self, doc: LogDoc) -> None:
        """Append a procedure's (or the runner's) log document."""
        self.add(doc.message, doc.level, doc.time)

    def text(self) -> str:
        return self.view.toPlainText()

    def clear(self) -> None:
        self.view.clear()
