"""Station values that no comparison can guard (issue 13, item 4): NaN and infinities are
refused everywhere, and a device's absolute maximum beyond the DAC's hardware range is refused;
the error names the file, the key, the value and the range."""

from __future__ import annotations

import pytest

from labrig.errors import StationError
from labrig.station import load_station, parse_station


def text(name: str) -> str:
    return load_station(name).text


def refused(station_text: str) -> str:
    with pytest.raises(StationError) as err:
        parse_station(station_text, "lab.toml")
    return str(err.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_absolute_max_v_must_be_finite(value: str) -> None:
    message = refused(text("sim-dnpu").replace("absolute_max_v = 1.6", f"absolute_max_v = {value}"))
    assert "lab.toml" in message and "dnpu.absolute_max_v" in message
    assert value.lstrip("+") in message and "(0, 10] V" in message


def test_absolute_max_v_beyond_the_dac_hardware_range_is_refused() -> None:
    message = refused(text("sim-dnpu").replace("absolute_max_v = 1.6", "absolute_max_v = 15"))
    assert "lab.toml" in message and "dnpu.absolute_max_v" in message
    assert "15.0 V" in message and "[-10, 10] V" in message and "qdevil_qdac2" in message


def test_absolute_max_v_must_be_positive() -> None:
    message = refused(text("sim-dnpu").replace("absolute_max_v = 1.6", "absolute_max_v = -1.0"))
    assert "dnpu.absolute_max_v" in message and "-1.0" in message


@pytest.mark.parametrize(
    ("station", "old", "new", "key"),
    [
        ("sim-dnpu", "max_v = 0.7", "max_v = nan", "channels[0].max_v"),
        ("sim-dnpu", "min_v = -1.3", "min_v = -inf", "channels[0].min_v"),
        ("sim-dnpu", "max_slew_v_per_s = 1000.0", "max_slew_v_per_s = inf", "max_slew_v_per_s"),
        ("sim-dnpu", "safe_v = 0.0", "safe_v = nan", "channels[0].safe_v"),
        ("sim-dnpu", "tia_gain_na_per_v = 100.0", "tia_gain_na_per_v = inf", "tia_gain_na_per_v"),
        ("sim-dnpu", "[[-1.2, 0.6], [-1.2, 0.6]", "[[-1.2, nan], [-1.2, 0.6]", "activation"),
        ("sim-reservoir", "bias_v = 0.0", "bias_v = nan", "reservoir.bias_v"),
        ("sim-reservoir", "node_duration_s", "node_duration_s = inf\n#", "node_duration_s"),
    ],
)
def test_nan_and_infinity_are_refused_everywhere(
    station: str, old: str, new: str, key: str
) -> None:
    original = text(station)
    assert old in original
    message = refused(original.replace(old, new, 1))
    assert "lab.toml" in message and key in message, message
    assert "nan" in message or "inf" in message


def test_a_nan_limit_never_reaches_the_rig() -> None:
    # Before: max_v = nan passed "min_v < max_v" checks by failing them silently... and every
    # later comparison against it was False, so a limit check passed any voltage.
    message = refused(text("sim-dnpu").replace("max_v = 0.7", "max_v = nan", 1))
    assert "not a finite number" in message and "[-10, 10] V" in message
