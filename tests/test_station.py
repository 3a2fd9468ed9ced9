"""Station files: built-ins load, bad files are refused with the file, key and problem named."""

from __future__ import annotations

import json
import re

import pytest

from instruments.errors import LimitError
from labrig.cli import main
from labrig.errors import StationError
from labrig.station import load_station, parse_station, served_station_text


def builtin_text(name: str) -> str:
    return load_station(name).text


def test_builtin_dnpu_station_wires_dac_channel_k_plus_1_to_electrode_k() -> None:
    st = load_station("sim-dnpu")
    assert st.dnpu is not None
    assert st.dnpu.electrode_channels == (1, 2, 3, 4, 5, 6, 7)
    for k in range(7):
        assert st.wiring[f"dnpu.e{k}"] == f"dac.ch{k + 1}"
    assert st.wiring["scope.ch1"] == "dnpu.tia"
    assert len(st.dnpu.lockins) >= 5
    assert all(st.wiring[f"{name}.in"] == "dnpu.tia" for name in st.dnpu.lockins)
    assert st.dnpu.control_electrodes == (2, 3, 4, 5, 6)
    # every electrode limit stays inside the device's absolute maximum
    for ch in st.channels:
        assert max(abs(ch.limits.min_v), abs(ch.limits.max_v)) <= st.dnpu.absolute_max_v


def test_builtin_reservoir_station_wiring() -> None:
    st = load_station("sim-reservoir")
    assert st.reservoir is not None
    assert st.wiring == {
        "reservoir.rf": "awg.ch1",
        "reservoir.bias": "dac.ch1",
        "scope.ch1": "reservoir.pd",
        "scope.ext": "awg.sync",
    }


def test_unknown_key_is_named() -> None:
    text = builtin_text("sim-dnpu").replace("[dnpu]\n", "[dnpu]\nvoltage_typo = 3\n")
    with pytest.raises(StationError, match=r"\[dnpu\].*unknown key.*voltage_typo"):
        parse_station(text, "my.toml")


def test_limits_beyond_hardware_are_refused() -> None:
    text = builtin_text("sim-reservoir").replace("max_v = 5.0", "max_v = 12.0")
    with pytest.raises(StationError) as err:
        parse_station(text, "wide.toml")
    msg = str(err.value)
    assert "wide.toml" in msg and "channels[0]" in msg and "12.0" in msg and "10.0" in msg


def test_limits_beyond_device_absolute_maximum_are_refused() -> None:
    text = builtin_text("sim-dnpu").replace("max_v = 0.7", "max_v = 1.7", 1)
    with pytest.raises(StationError, match=r"absolute maximum 1.6 V"):
        parse_station(text, "hot.toml")


def test_activation_range_outside_safety_limits_is_refused() -> None:
    text = builtin_text("sim-dnpu").replace(
        "[[-1.2, 0.6], [-1.2, 0.6]", "[[-1.5, 0.6], [-1.2, 0.6]"
    )
    with pytest.raises(StationError, match=r"activation_ranges_v\[0\].*-1.5"):
        parse_station(text, "ranges.toml")


def test_bad_resource_is_refused() -> None:
    text = builtin_text("sim-dnpu").replace(
        'resource = "TCPIP0::dac.labrig::5025::SOCKET"\nvisa_library = "@labrig"',
        'resource = "not a resource"\nvisa_library = "@py"',
    )
    with pytest.raises(StationError, match=r"instruments.dac.resource.*not a resource"):
        parse_station(text, "res.toml")


def test_malformed_toml_and_missing_file() -> None:
    with pytest.raises(StationError, match="not valid TOML"):
        parse_station("[station\nname=", "broken.toml")
    with pytest.raises(StationError, match="no such file"):
        load_station("/nonexistent/station.toml")


def test_channel_limits_check_names_value_limit_and_source() -> None:
    st = load_station("sim-dnpu")
    lim = st.limits_for("dac", 1)
    assert lim is not None
    with pytest.raises(LimitError) as err:
        lim.check(1.8)
    msg = str(err.value)
    assert "electrode 0" in msg and "1.8" in msg and "0.7" in msg and "sim-dnpu" in msg
    with pytest.raises(LimitError):
        lim.check(float("nan"))


def test_served_station_keeps_limits_and_wiring() -> None:
    st = load_station("sim-dnpu")
    names = [*st.instruments, "bench"]
    resources = {n: f"TCPIP0::127.0.0.1::{6000 + i}::SOCKET" for i, n in enumerate(names)}
    served = parse_station(served_station_text(st, resources), "served.toml")
    assert not served.simulated_in_process
    assert served.instruments["bench"].model == "labrig_bench"
    assert served.wiring == st.wiring
    assert [c.limits.max_v for c in served.channels] == [c.limits.max_v for c in st.channels]
    assert served.instruments["dac"].resource == resources["dac"]


def test_cli_station_check(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["station", "check", "sim-dnpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "ok" and out["rig"] == "dnpu" and len(out["channels"]) == 7
    bad = tmp_path / "bad.toml"
    bad.write_text(builtin_text("sim-dnpu").replace('rig = "dnpu"', 'rig = "optical"'))
    assert main(["station", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"bad.toml: \[station.rig\]: must be 'dnpu' or 'reservoir'", err)


@pytest.mark.parametrize(
    ("station", "old", "new", "named"),
    [
        (
            "sim-dnpu",
            "electrode_channels = [1, 2, 3, 4, 5, 6, 7]",
            "electrode_channels = [1.9, 2, 3, 4, 5, 6, 7]",
            r"dnpu\.electrode_channels.*integers",
        ),
        (
            "sim-dnpu",
            "electrode_channels = [1, 2, 3, 4, 5, 6, 7]",
            "electrode_channels = [1, 1, 3, 4, 5, 6, 7]",
            r"dnpu\.electrode_channels.*repeats",
        ),
        (
            "sim-dnpu",
            "input_electrodes = [0, 1]",
            "input_electrodes = [0, 0]",
            r"dnpu\.input_electrodes.*repeats",
        ),
        (
            "sim-dnpu",
            "digitizer_channel = 1",
            "digitizer_channel = 9",
            r"dnpu\.digitizer_channel.*9.*outside 1\.\.4",
        ),
        ("sim-dnpu", "marker_output = 1", "marker_output = 0", r"dnpu\.marker_output.*0.*1\.\.5"),
        (
            "sim-dnpu",
            "tia_gain_na_per_v = 100.0",
            "tia_gain_na_per_v = -100.0",
            r"dnpu\.tia_gain_na_per_v.*-100",
        ),
        (
            "sim-dnpu",
            "tia_gain_na_per_v = 100.0",
            'tia_gain_na_per_v = "1e2"',
            r"dnpu\.tia_gain_na_per_v.*must be a number",
        ),
        ("sim-reservoir", "node_count = 100", "node_count = 0", r"reservoir\.node_count.*0"),
        ("sim-reservoir", "bias_v = 0.0", "bias_v = 7.0", r"reservoir\.bias_v.*7\.0.*-5\.0"),
    ],
)
def test_bad_rig_values_are_refused_with_the_key_named(
    station: str, old: str, new: str, named: str
) -> None:
    text = builtin_text(station)
    assert old in text
    with pytest.raises(StationError, match=named) as err:
        parse_station(text.replace(old, new), "lab.toml")
    assert "lab.toml" in str(err.value)


def test_tia_rails_come_from_the_station_or_the_read_out_model() -> None:
    from labrig.physics.noise import TiaParams

    dnpu = load_station("sim-dnpu").dnpu
    assert dnpu is not None and dnpu.tia_saturation_v == TiaParams().saturation_v
    text = builtin_text("sim-dnpu").replace(
        "tia_bandwidth_hz = 3000.0", "tia_bandwidth_hz = 3000.0\ntia_saturation_v = 10.0"
    )
    rig = parse_station(text, "lab.toml").dnpu
    assert rig is not None and rig.tia_saturation_v == 10.0
