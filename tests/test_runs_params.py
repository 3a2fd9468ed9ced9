"""Procedure parameters and unit parsing: strict, with messages that name value and range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labrig.errors import ProcedureError
from labrig.procedures.base import (
    BoolParameter,
    ChoiceParameter,
    FloatParameter,
    IntegerParameter,
    ParameterError,
    Procedure,
    StrParameter,
    get_procedure_class,
    register_procedure,
)
from labrig.units import UnitError, format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "units", "expected"),
    [
        ("10 mV", "V", 0.01),
        ("10mV", "V", 0.01),
        ("-1.5e-3 V", "V", -1.5e-3),
        ("2.5 kHz", "Hz", 2500.0),
        ("50 ms", "s", 0.05),
        ("2 min", "s", 120.0),
        ("30 µV", "V", 30e-6),
        ("30 μV", "V", 30e-6),
        ("30 uV", "V", 30e-6),
        ("100 nA/V", "A/V", 100e-9),
        ("10 MΩ", "Ohm", 10e6),
        ("0.3", "V", 0.3),
        (0.3, "V", 0.3),
        (7, "", 7.0),
    ],
)
def test_parse_quantity_scales_prefixes(text: str | float, units: str, expected: float) -> None:
    assert parse_quantity(text, units) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "units"),
    [("10 mA", "V"), ("ten volts", "V"), ("10 V", ""), ("nan", "V"), ("10 xV", "V"), ("", "V")],
)
def test_parse_quantity_refuses_wrong_units(text: str, units: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_quantity(text, units, source="station 'bench'")
    assert repr(text) in str(info.value)
    assert "station 'bench'" in str(info.value)


@pytest.mark.parametrize("value", [0.01, -3.3e-7, 2500.0, 1.23456e9, 4.7e-12])
def test_format_quantity_round_trips(value: float) -> None:
    for units in ("V", "Hz", "A"):
        assert parse_quantity(format_quantity(value, units), units) == pytest.approx(value)
    assert format_quantity(0.01, "V") == "10 mV"


class Sweep(Procedure):
    name = "test-sweep"
    amplitude_v = FloatParameter("Amplitude", units="V", default=0.03, minimum=0.0, maximum=0.1)
    points = IntegerParameter("Points", default=11, minimum=2, maximum=1000)
    fast = BoolParameter("Fast", default=False)
    optimiser = ChoiceParameter("Optimiser", choices=["sgd", "adam"], default="adam")
    label = StrParameter("Label", default="")
    required_hz = FloatParameter("Frequency", units="Hz", minimum=1.0)

    def execute(self) -> None:
        pass


def test_parameters_listed_in_declaration_order_with_descriptions() -> None:
    names = list(Sweep.parameters())
    assert names == ["amplitude_v", "points", "fast", "optimiser", "label", "required_hz"]
    described = Sweep.parameters()["amplitude_v"].describe()
    assert described["units"] == "V" and described["maximum"] == 0.1
    assert Sweep.parameters()["required_hz"].required


def test_values_parse_units_and_types() -> None:
    sweep = Sweep(
        amplitude_v="30 mV", points="25", fast="yes", optimiser=" SGD ", required_hz="1 kHz"
    )
    assert sweep.amplitude_v == pytest.approx(0.03)
    assert sweep.points == 25 and isinstance(sweep.points, int)
    assert sweep.fast is True
    assert sweep.optimiser == "sgd"
    assert sweep.required_hz == 1000.0
    assert Sweep(required_hz=np.float32(5.0), points=np.int64(3)).points == 3
    assert sweep.parameter_values()["amplitude_v"] == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"amplitude_v": "200 mV"}, ["amplitude_v", "200 mV", "[0, 0.1] V"]),
        ({"amplitude_v": -0.5}, ["amplitude_v", "-0.5", "[0, 0.1] V"]),
        ({"amplitude_v": math.nan}, ["amplitude_v", "nan"]),
        ({"amplitude_v": "3 A"}, ["amplitude_v", "'3 A'"]),
        ({"points": 2.5}, ["points", "2.5", "whole number"]),
        ({"points": 1}, ["points", "1", "[2, 1000]"]),
        ({"points": True}, ["points", "True"]),
        ({"fast": "maybe"}, ["fast", "maybe"]),
        ({"optimiser": "rmsprop"}, ["optimiser", "rmsprop", "'sgd', 'adam'"]),
        ({"label": 5}, ["label", "5"]),
        ({"bogus": 1}, ["bogus", "not a parameter"]),
    ],
)
def test_invalid_values_raise_naming_value_and_range(
    kwargs: dict[str, object], fragments: list[str]
) -> None:
    with pytest.raises(ParameterError) as info:
        Sweep(required_hz=10.0, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_required_parameter_is_named() -> None:
    with pytest.raises(ParameterError, match="required_hz"):
        Sweep()


def test_bad_default_fails_at_class_definition() -> None:
    # Python 3.11 wraps errors from __set_name__ in RuntimeError; 3.12+ raises them as they are.
    with pytest.raises((ParameterError, RuntimeError)) as info:

        class Broken(Procedure):
            name = "broken"
            gain = FloatParameter("Gain", default=5.0, maximum=1.0)

    error = info.value if isinstance(info.value, ParameterError) else info.value.__cause__
    assert isinstance(error, ParameterError)
    assert "outside" in str(error) and "5.0" in str(error)


def test_registry_finds_by_name_and_by_import_path() -> None:
    @register_procedure
    class Registered(Procedure):
        name = "test-registered-proc"

    assert get_procedure_class("test-registered-proc") is Registered
    with pytest.raises(ProcedureError, match="nope"):
        get_procedure_class("nope", "no_such_module_xyz:Thing")
    assert get_procedure_class("unregistered", Sweep.import_path()) is Sweep


def test_detached_procedure_collects_events() -> None:
    class Counter(Procedure):
        name = "test-counter"

        def execute(self) -> None:
            buffer = np.zeros(2)
            for i in range(3):
                buffer[:] = i
                self.emit_event({"i": i}, {"buffer": buffer})

    counter = Counter()
    counter.execute()
    assert [e.scalars["i"] for e in counter.detached_events] == [0.0, 1.0, 2.0]
    # arrays are copied: a reused buffer does not overwrite earlier events
    assert counter.detached_events[0].arrays["buffer"].tolist() == [0.0, 0.0]
