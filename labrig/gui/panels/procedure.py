"""Choose a registered procedure, fill in its parameters, start, pause, resume and abort it.

The form is generated from the procedure's declared parameters (:meth:`Procedure.parameters`):
a line edit for numbers and text (units shown beside it; "10 mV" is accepted where the unit is
V), a check box for booleans, a drop-down for choices. The tooltip gives the range and the help
text. Every entry is checked with the parameter's own ``validate()``, so the form refuses exactly
what the procedure would refuse, with the same message (it names the value and the range);
Start stays disabled while any entry is refused.

The panel only presents: it emits ``start_requested``, ``pause_requested``,
``resume_requested`` and ``abort_requested``; the main window runs the procedure and reports the
state back with :meth:`ProcedurePanel.set_state`.
"""

from __future__ import annotations

from typing import Any

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from labrig.procedures.base import (
    BoolParameter,
    ChoiceParameter,
    FloatParameter,
    IntegerParameter,
    Parameter,
    ParameterError,
    Procedure,
    procedure_registry,
)

__all__ = ["ParameterForm", "ProcedurePanel"]

FORM_SOURCE = "procedure form"
_BAD_STYLE = "QLineEdit { background: #ffd6d6; }"


def _format_default(parameter: Parameter[Any]) -> str:
    value = parameter.default
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


def _tooltip(parameter: Parameter[Any]) -> str:
    lines = [f"{parameter.label} ({parameter.name})"]
    if isinstance(parameter, FloatParameter | IntegerParameter):
        low = "-inf" if parameter.minimum is None else f"{parameter.minimum:g}"
        high = "inf" if parameter.maximum is None else f"{parameter.maximum:g}"
        lines.append(f"range [{low}, {high}] {parameter.units}".rstrip())
    elif parameter.units:
        lines.append(f"units: {parameter.units}")
    if isinstance(parameter, ChoiceParameter):
        lines.append("one of: " + ", ".join(str(c) for c in parameter.choices))
    if parameter.default is not None:
        lines.append(f"default: {_format_default(parameter)} {parameter.units}".rstrip())
    if parameter.help:
        lines.append(parameter.help)
    return "\n".join(lines)


class ParameterForm(QWidget):
    """Entries for one procedure class's parameters, validated as they are edited."""

    validity_changed = pyqtSignal(bool)

    def __init__(
        self,
        procedure_class: type[Procedure],
        presets: dict[str, str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``presets``: initial text for some entries instead of the default (the station)."""
        super().__init__(parent)
        self.procedure_class = procedure_class
        self.parameters = procedure_class.parameters()
        self.editors: dict[str, QWidget] = {}
        self.errors: dict[str, str] = {}
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for name, parameter in self.parameters.items():
            editor = self._editor(parameter)
            editor.setToolTip(_tooltip(parameter))
            self.editors[name] = editor
            label = QLabel(parameter.label + ("" if not parameter.required else " *"))
            label.setToolTip(_tooltip(parameter))
            if parameter.units and not isinstance(parameter, ChoiceParameter | BoolParameter):
                row = QHBoxLayout()
                row.setContentsMargins(0, 0, 0, 0)
                row.addWidget(editor, 1)
                row.addWidget(QLabel(parameter.units))
                layout.addRow(label, row)
            else:
                layout.addRow(label, editor)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00000;")
        layout.addRow(self.message)
        for name, text in (presets or {}).items():
            if name in self.parameters:
                self.set_text(name, text)
        for name in self.parameters:
            self._check(name)

    def _editor(self, parameter: Parameter[Any]) -> QWidget:
        name = parameter.name
        if isinstance(parameter, BoolParameter):
            box = QCheckBox()
            box.setChecked(bool(parameter.default))
            box.toggled.connect(lambda _=False, n=name: self._check(n))
            return box
        if isinstance(parameter, ChoiceParameter):
            combo = QComboBox()
            for choice in parameter.choices:
                combo.addItem(str(choice), choice)
            if parameter.default is not None:
                combo.setCurrentIndex(list(parameter.choices).index(parameter.default))
            combo.currentIndexChanged.connect(lambda _=0, n=name: self._check(n))
            return combo
        edit = QLineEdit(_format_default(parameter))
        if parameter.required:
            edit.setPlaceholderText("required")
        edit.textChanged.connect(lambda _="", n=name: self._check(n))
        return edit

    def raw_value(self, name: str) -> object:
        """What the entry holds, before validation (text, a bool, or the chosen value)."""
        editor = self.editors[name]
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QComboBox):
            return editor.currentData()
        assert isinstance(editor, QLineEdit)
        return editor.text().strip()

    def set_text(self, name: str, value: object) -> None:
        """Set an entry as a user would (text for line edits; bool or choice otherwise)."""
        editor = self.editors[name]
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QComboBox):
            index = editor.findText(str(value))
            if index < 0:
                raise ValueError(f"{value!r} is not a choice of {name!r}")
            editor.setCurrentIndex(index)
        else:
            assert isinstance(editor, QLineEdit)
            editor.setText(str(value))

    def _check(self, name: str) -> None:
        was_valid = not self.errors
        parameter = self.parameters[name]
        raw = self.raw_value(name)
        problem = ""
        if raw == "" and parameter.required:
            problem = f"parameter {name!r}: a value is required"
        elif raw != "":
            try:
                parameter.validate(raw, source=FORM_SOURCE)
            except ParameterError as exc:
                problem = str(exc)
        editor = self.editors[name]
        if problem:
            self.errors[name] = problem
        else:
            self.errors.pop(name, None)
        if isinstance(editor, QLineEdit):
            editor.setStyleSheet(_BAD_STYLE if problem else "")
        self.message.setText("\n".join(self.errors.values()))
        if was_valid != (not self.errors):
            self.validity_changed.emit(not self.errors)

    def is_valid(self) -> bool:
        return not self.errors

    def values(self) -> dict[str, object]:
        """Entries to pass to the procedure class (empty optional text: the default)."""
        found: dict[str, object] = {}
        for name in self.parameters:
            raw = self.raw_value(name)
            if raw != "":
                found[name] = raw
        return found

    def build(self) -> Procedure:
        """A procedure instance from the entries; raises :class:`ParameterError` if refused."""
        if self.errors:
            first = next(iter(self.errors.values()))
            raise ParameterError("form", "", first)
        return self.procedure_class(**self.values())


class ProcedurePanel(QGroupBox):
    """Procedure choice, its parameter form, the run buttons and the run state."""

    start_requested = pyqtSignal()
    pause_requested = pyqtSignal()
    resume_requested = pyqtSignal()
    abort_requested = pyqtSignal()

    def __init__(self, presets: dict[str, str] | None = None, parent: QWidget | None = None):
        """``presets``: initial text of entries every procedure may have (e.g. ``station``)."""
        super().__init__("Procedure", parent)
        self.presets = dict(presets or {})
        self.classes: dict[str, type[Procedure]] = {}
        self.form: ParameterForm | None = None
        self.combo = QComboBox()
        self.combo.currentIndexChanged.connect(self._choose)
        self.description = QLabel("")
        self.description.setWordWrap(True)
        self.description.setStyleSheet("color: #555;")
        self.form_host = QVBoxLayout()
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.abort_button = QPushButton("Abort")
        self.start_button.clicked.connect(self.start_requested.emit)
        self.pause_button.clicked.connect(self._pause_clicked)
        self.abort_button.clicked.connect(self.abort_requested.emit)
        self.state_label = QLabel()
        self.state_label.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.abort_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.combo)
        layout.addWidget(self.description)
        layout.addLayout(self.form_host)
        layout.addLayout(buttons)
        layout.addWidget(self.state_label)
        self.state = "idle"
        self._paused = False
        self.reload()
        self.set_state("idle")

    # ---- procedures ---------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the procedure registry (keeps the current choice if it still exists)."""
        current = self.combo.currentText()
        self.classes = dict(procedure_registry())
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(list(self.classes))
        self.combo.blockSignals(False)
        if current in self.classes:
            self.select(current)
        elif self.classes:
            self.combo.setCurrentIndex(0)
            self._choose()

    def select(self, name: str) -> None:
        """Show the form of procedure ``name``; raises KeyError naming the registered ones."""
        if name not in self.classes:
            known = ", ".join(self.classes) or "none"
            raise KeyError(f"no procedure registered as {name!r} (registered: {known})")
        index = self.combo.findText(name)
        if index == self.combo.currentIndex() and self.form is not None:
            return
        self.combo.setCurrentIndex(index)  # _choose runs through the signal

    def _choose(self) -> None:
        name = self.combo.currentText()
        if self.form is not None:
            self.form_host.removeWidget(self.form)
            self.form.setParent(None)
            self.form.deleteLater()
            self.form = None
        cls = self.classes.get(name)
        if cls is None:
            self.description.setText("No procedures are registered.")
            self._update_buttons()
            return
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        self.description.setText(" ".join(doc.split()))
        self.form = ParameterForm(cls, self.presets)
        self.form.validity_changed.connect(lambda _ok: self._update_buttons())
        self.form_host.addWidget(self.form)
        self._update_buttons()

    @property
    def procedure_class(self) -> type[Procedure] | None:
        return self.form.procedure_class if self.form is not None else None

    # ---- state --------------------------------------------------------------------------

    def _pause_clicked(self) -> None:
        if self._paused:
            self.resume_requested.emit()
        else:
            self.pause_requested.emit()

    def set_state(self, state: str, detail: str = "") -> None:
        """Show the run state: idle, running, paused, stopping, or finished (with detail)."""
        self.state = state
        self._paused = state == "paused"
        colours = {
            "idle": "#555",
            "running": "#1f6fb4",
            "paused": "#b07800",
            "stopping": "#b05000",
        }
        colour = colours.get(state, "#555")
        if state == "finished":
            colour = "#2c8a2c" if detail.startswith("success") else "#b00000"
        text = f"State: {state}" + (f": {detail}" if detail else "")
        self.state_label.setText(text)
        self.state_label.setStyleSheet(f"color: {colour}; font-weight: bold;")
        self._update_buttons()

    def _update_buttons(self) -> None:
        active = self.state in ("running", "paused", "stopping")
        cls = self.procedure_class
        can_start = (not active) and self.form is not None and self.form.is_valid()
        self.start_button.setEnabled(can_start)
        self.combo.setEnabled(not active)
        if self.form is not None:
            self.form.setEnabled(not active)
        pausable = cls is not None and cls.supports_pause
        self.pause_button.setVisible(pausable)
        self.pause_button.setEnabled(pausable and self.state in ("running", "paused"))
        self.pause_button.setText("Resume" if self._paused else "Pause")
        self.abort_button.setEnabled(self.state in ("running", "paused"))
