"""Station files: which instruments, where they are, what they may do, and how they are wired.

A station is a TOML file. It is read once into frozen dataclasses; nothing in it is evaluated.
Unknown keys, malformed resources and limits beyond what the hardware (or the device's absolute
maximum) allows are refused with a :class:`~labrig.errors.StationError` naming the file and key.

Example (the built-in ``sim-dnpu`` station is a complete one)::

    [station]
    name = "my-dnpu"
    rig = "dnpu"                       # "dnpu" or "reservoir"

    [instruments.dac]
    model = "qdevil_qdac2"
    resource = "TCPIP0::192.168.1.20::5025::SOCKET"
    visa_library = "@py"               # "@py" real hardware or a served bench; "@labrig" in-process

    [[channels]]                       # every DAC channel the procedures may drive
    instrument = "dac"
    channel = 1
    label = "electrode 0"
    min_v = -1.2                       # tighten only: within the hardware and device maximum
    max_v = 0.6
    max_slew_v_per_s = 1000.0
    safe_v = 0.0

    [dnpu]                              # the rig's roles (see DnpuRig / ReservoirRig)
    electrode_channels = [1, 2, 3, 4, 5, 6, 7]
    ...

    [wiring]                            # cables: "input port" = "output port"
    "scope.ch1" = "dnpu.tia"

    [bench]                             # only for stations simulated by labrig
    seed = 0
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from instruments.errors import ChannelLimits
from labrig.errors import StationError
from labrig.physics.noise import DacNoiseParams, TiaParams

Rig = Literal["dnpu", "reservoir"]


@dataclass(frozen=True)
class ModelInfo:
    """What labrig knows of one instrument model: driver, emulator, hardware range."""

    key: str
    role: Literal["awg", "digitizer", "dac", "lockin", "bench"]
    driver: str  # "module:Class"
    emulator: str  # "module:Class"
    channel_count: int = 0
    hardware_min_v: float = -math.inf
    hardware_max_v: float = math.inf
    hardware_max_slew_v_per_s: float = math.inf


MODELS: dict[str, ModelInfo] = {
    m.key: m
    for m in (
        ModelInfo(
            "keysight_33500b",
            "awg",
            "instruments.keysight_33500b:Keysight33500B",
            "labrig.sim.keysight_33500b:Keysight33500BEmulator",
            channel_count=2,
            hardware_min_v=-5.0,
            hardware_max_v=5.0,
        ),
        ModelInfo(
            "keysight_infiniivision",
            "digitizer",
            "instruments.keysight_infiniivision:KeysightInfiniiVision",
            "labrig.sim.keysight_infiniivision:InfiniiVisionEmulator",
            channel_count=4,
        ),
        ModelInfo(
            "qdevil_qdac2",
            "dac",
            "instruments.qdevil_qdac2:QDac2",
            "labrig.sim.qdevil_qdac2:QDac2Emulator",
            channel_count=24,
            hardware_min_v=-10.0,
            hardware_max_v=10.0,
            hardware_max_slew_v_per_s=2e7,
        ),
        ModelInfo(
            "srs_sr860",
            "lockin",
            "instruments.srs_sr860:SR860",
            "labrig.sim.srs_sr860:SR860Emulator",
        ),
        # The virtual bench's own endpoint (clock, voltage log, faults); only on simulated rigs.
        ModelInfo(
            "labrig_bench",
            "bench",
            "labrig.sim.control:BenchClient",
            "labrig.sim.control:BenchControlEmulator",
        ),
    )
}

IN_PROCESS = "@labrig"


@dataclass(frozen=True)
class InstrumentSpec:
    name: str
    model: str
    resource: str
    visa_library: str

    @property
    def info(self) -> ModelInfo:
        return MODELS[self.model]

    @property
    def in_process(self) -> bool:
        return self.visa_library == IN_PROCESS


@dataclass(frozen=True)
class ChannelSpec:
    instrument: str
    channel: int
    limits: ChannelLimits


@dataclass(frozen=True)
class DnpuRig:
    """Roles on a DNPU rig: electrode k (0..6) is driven by DAC channel ``electrode_channels[k]``.

    ``activation_ranges_v`` are the training ranges; they lie inside the channels' safety limits.
    """

    dac: str
    electrode_channels: tuple[int, ...]
    input_electrodes: tuple[int, ...]
    activation_ranges_v: tuple[tuple[float, float], ...]
    digitizer: str
    digitizer_channel: int
    marker_output: int
    lockins: tuple[str, ...]
    tia_gain_na_per_v: float
    tia_bandwidth_hz: float
    tia_saturation_v: float  # the TIA output's rails, V
    absolute_max_v: float

    @property
    def control_electrodes(self) -> tuple[int, ...]:
        return tuple(
            k for k in range(len(self.electrode_channels)) if k not in self.input_electrodes
        )


@dataclass(frozen=True)
class ReservoirRig:
    """Roles on an optoelectronic delay-reservoir rig."""

    awg: str
    awg_channel: int
    bias_dac: str
    bias_channel: int
    digitizer: str
    digitizer_channel: int
    node_count: int
    node_duration_s: float
    bias_v: float
    # The optics as measured on this rig (labrig.calibration file, resolved against the station
    # file's folder); None: procedures measure what they need at start-up.
    calibration: Path | None = None


@dataclass(frozen=True)
class BenchSpec:
    """How labrig simulates this station (absent for real hardware)."""

    seed: int = 0
    pacing: Literal["fast", "realtime"] = "fast"
    device: Literal["dnpu", "reservoir", "rc"] = "dnpu"
    device_seed: int = 0
    surrogate: str | None = None
    resistance_ohm: float = 1e7
    capacitance_f: float = 1e-11
    io_time: bool = True  # charge instrument link time to the bench clock
    # Reservoir optics of the simulated rig (None: the model's defaults). Procedures never read
    # these: they measure the optics (labrig.calibration).
    v_pi: float | None = None
    pd_gain_v_per_w: float | None = None
    feedback_gain: float | None = None
    # The DNPU bench's noise (labrig.physics.noise: TiaParams, DacNoiseParams hold the defaults
    # and their sources): white current noise (nA^2/Hz), the 1/f corner (Hz), the drift (nA/sqrt
    # s, relaxing over drift_tau_s), the DAC's output noise (V/sqrt Hz) and resolution (V).
    current_noise_psd_na2_per_hz: float = TiaParams.current_noise_psd_na2_per_hz
    flicker_corner_hz: float = TiaParams.flicker_corner_hz
    drift_na_per_sqrt_s: float = TiaParams.drift_na_per_sqrt_s
    drift_tau_s: float = TiaParams.drift_tau_s
    dac_noise_v_per_sqrt_hz: float = DacNoiseParams.noise_v_per_sqrt_hz
    dac_lsb_v: float = DacNoiseParams.lsb_v


@dataclass(frozen=True)
class Station:
    name: str
    rig: Rig
    source: str
    text: str
    instruments: Mapping[str, InstrumentSpec]
    channels: tuple[ChannelSpec, ...]
    wiring: Mapping[str, str]
    dnpu: DnpuRig | None = None
    reservoir: ReservoirRig | None = None
    bench: BenchSpec | None = None
    description: str = ""
    #: ``[station] ramp_into_range``: at takeover, ramp a channel found outside its limits into
    #: range (at its slew limit) instead of refusing to start.
    ramp_into_range: bool = False

    @property
    def simulated_in_process(self) -> bool:
        return any(spec.in_process for spec in self.instruments.values())

    def limits_for(self, instrument: str, channel: int) -> ChannelLimits | None:
        for spec in self.channels:
            if spec.instrument == instrument and spec.channel == channel:
                return spec.limits
        return None


# --------------------------------------------------------------------------------------- loading
BUILTIN = ("sim-dnpu", "sim-reservoir")


def builtin_station_path(name: str) -> Path:
    ref = resources.files("labrig.stations").joinpath(f"{name}.toml")
    return Path(str(ref))


def load_station(name_or_path: str | Path) -> Station:
    """Load a built-in station by name (``sim-dnpu``, ``sim-reservoir``) or a TOML file by path."""
    text_name = str(name_or_path)
    if text_name in BUILTIN:
        path = builtin_station_path(text_name)
        source = f"built-in station '{text_name}'"
    else:
        path = Path(name_or_path)
        source = str(path)
        if not path.is_file():
            known = ", ".join(BUILTIN)
            raise StationError(source, "", f"no such file (built-in stations: {known})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StationError(source, "", f"cannot read: {exc}") from exc
    return parse_station(text, source)


def parse_station(text: str, source: str = "<string>") -> Station:
    """Parse and validate station TOML ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StationError(source, "", f"not valid TOML: {exc}") from exc
    return _Parser(source).station(data, text)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> StationError:
        return StationError(self.source, key, problem)

    def table(self, data: Any, key: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, got {type(data).__name__}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise self.fail(key, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        missing = sorted(required - set(data))
        if missing:
            raise self.fail(key, f"missing required key(s) {missing}")
        return data

    def typed(
        self,
        data: dict[str, Any],
        key: str,
        name: str,
        kind: type | tuple[type, ...],
        span: str = "",
    ) -> Any:
        """``data[name]`` of type ``kind`` (an integer is a float too); a float must be finite.
        ``span`` says what range the value may take (for the error message)."""
        value = data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf; no station value may be either (a NaN limit passes every
            # comparison, so every voltage would pass the check)
            allowed = f"; allowed: {span}" if span else ""
            raise self.fail(f"{key}.{name}", f"{value!r} is not a finite number{allowed}")
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(f"{key}.{name}", f"must be {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(f"{key}.{name}", f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def number(
        self,
        data: dict[str, Any],
        key: str,
        name: str,
        default: float,
        low: float,
        high: float = math.inf,
        *,
        integer: bool = False,
    ) -> Any:
        """``data[name]`` (or ``default``) as an integer or a number within ``[low, high]``."""
        if name not in data:
            return default
        if math.isfinite(high):
            span = f"{low:g}..{high:g}"
        else:
            span = f">= {low:g}" if math.isfinite(low) else "any finite number"
        value = self.typed(data, key, name, int if integer else float, span)
        if not low <= value <= high:
            raise self.fail(f"{key}.{name}", f"{value!r} is outside {span}")
        return value

    def distinct_ints(
        self, data: dict[str, Any], key: str, name: str, default: tuple[int, ...] | None
    ) -> tuple[int, ...]:
        """An array of distinct integers (``default`` if absent and not required)."""
        if name not in data and default is not None:
            return default
        items = self.typed(data, key, name, list)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            raise self.fail(f"{key}.{name}", f"must be an array of integers, got {items!r}")
        if len(set(items)) != len(items):
            raise self.fail(f"{key}.{name}", f"repeats a value: {items!r}")
        return tuple(items)

    def channel_of(
        self,
        data: dict[str, Any],
        key: str,
        name: str,
        instrument: str,
        instruments: Mapping[str, InstrumentSpec],
        default: int = 1,
    ) -> int:
        """A channel number of ``instrument``, checked against its channel count."""
        count = max(instruments[instrument].info.channel_count, 1)
        return int(self.number(data, key, name, default, 1, count, integer=True))

    def station(self, data: dict[str, Any], text: str) -> Station:
        top = self.table(
            data,
            "",
            {"station", "instruments", "channels", "wiring", "dnpu", "reservoir", "bench"},
            {"station", "instruments"},
        )
        head = self.table(
            top["station"],
            "station",
            {"name", "rig", "description", "ramp_into_range"},
            {"name", "rig"},
        )
        name = self.typed(head, "station", "name", str)
        rig = self.typed(head, "station", "rig", str)
        if rig not in ("dnpu", "reservoir"):
            raise self.fail("station.rig", f"must be 'dnpu' or 'reservoir', got {rig!r}")
        instruments = self.instruments(top["instruments"])
        channels = self.channels(top.get("channels", []), instruments)
        wiring = self.wiring(top.get("wiring", {}))
        dnpu = reservoir = None
        if rig == "dnpu":
            if "dnpu" not in top:
                raise self.fail("dnpu", "a station with rig = 'dnpu' needs a [dnpu] table")
            dnpu = self.dnpu(top["dnpu"], instruments, channels)
        else:
            if "reservoir" not in top:
                raise self.fail("reservoir", "a station with rig = 'reservoir' needs [reservoir]")
            reservoir = self.reservoir(top["reservoir"], instruments, channels)
        bench = self.bench(top["bench"]) if "bench" in top else None
        if any(s.in_process for s in instruments.values()) and bench is None:
            raise self.fail("bench", f"instruments with visa_library = '{IN_PROCESS}' need [bench]")
        return Station(
            name=name,
            rig=rig,
            source=self.source,
            text=text,
            instruments=instruments,
            channels=channels,
            wiring=wiring,
            dnpu=dnpu,
            reservoir=reservoir,
            bench=bench,
            description=str(head.get("description", "")),
            ramp_into_range=(
                self.typed(head, "station", "ramp_into_range", bool)
                if "ramp_into_range" in head
                else False
            ),
        )

    def instruments(self, data: Any) -> dict[str, InstrumentSpec]:
        if not isinstance(data, dict) or not data:
            raise self.fail("instruments", "must be a non-empty table of instruments")
        out: dict[str, InstrumentSpec] = {}
        for name, entry in data.items():
            key = f"instruments.{name}"
            if not name.replace("_", "").replace("-", "").isalnum():
                raise self.fail(key, "instrument names use letters, digits, '-' and '_' only")
            t = self.table(entry, key, {"model", "resource", "visa_library"}, {"model", "resource"})
            model = self.typed(t, key, "model", str)
            if model not in MODELS:
                raise self.fail(f"{key}.model", f"unknown model {model!r}; known: {sorted(MODELS)}")
            resource = self.typed(t, key, "resource", str)
            visa_library = str(t.get("visa_library", "@py"))
            self.check_resource(f"{key}.resource", resource, visa_library)
            out[name] = InstrumentSpec(name, model, resource, visa_library)
        return out

    def check_resource(self, key: str, resource: str, visa_library: str) -> None:
        if visa_library == IN_PROCESS:
            return
        from pyvisa import rname

        try:
            rname.parse_resource_name(resource)
        except rname.InvalidResourceName as exc:
            raise self.fail(key, f"{resource!r} is not a VISA resource name: {exc}") from exc

    def channels(
        self, data: Any, instruments: Mapping[str, InstrumentSpec]
    ) -> tuple[ChannelSpec, ...]:
        if not isinstance(data, list):
            raise self.fail("channels", "must be an array of tables ([[channels]])")
        out: list[ChannelSpec] = []
        seen: set[tuple[str, int]] = set()
        for i, entry in enumerate(data):
            key = f"channels[{i}]"
            t = self.table(
                entry,
                key,
                {"instrument", "channel", "label", "min_v", "max_v", "max_slew_v_per_s", "safe_v"},
                {"instrument", "channel", "min_v", "max_v", "max_slew_v_per_s"},
            )
            inst = self.typed(t, key, "instrument", str)
            if inst not in instruments:
                raise self.fail(f"{key}.instrument", f"no instrument named {inst!r}")
            info = instruments[inst].info
            if info.role != "dac":
                raise self.fail(
                    f"{key}.instrument",
                    f"{inst!r} is a {info.role} ({info.key}); limited channels are DAC channels",
                )
            channel = self.typed(t, key, "channel", int)
            if not 1 <= channel <= max(info.channel_count, 1):
                raise self.fail(
                    f"{key}.channel", f"{channel} outside 1..{info.channel_count} for {info.key}"
                )
            if (inst, channel) in seen:
                raise self.fail(key, f"{inst} channel {channel} is listed twice")
            seen.add((inst, channel))
            hw = f"[{info.hardware_min_v:g}, {info.hardware_max_v:g}] V, the {info.key} range"
            min_v = self.typed(t, key, "min_v", float, hw)
            max_v = self.typed(t, key, "max_v", float, hw)
            slew_span = f"(0, {info.hardware_max_slew_v_per_s:g}] V/s"
            slew = self.typed(t, key, "max_slew_v_per_s", float, slew_span)
            safe_v = (
                self.typed(t, key, "safe_v", float, "within min_v..max_v") if "safe_v" in t else 0.0
            )
            if not min_v < max_v:
                raise self.fail(key, f"min_v ({min_v} V) must be below max_v ({max_v} V)")
            if min_v < info.hardware_min_v or max_v > info.hardware_max_v:
                raise self.fail(
                    key,
                    f"limits [{min_v}, {max_v}] V exceed the {info.key} hardware range "
                    f"[{info.hardware_min_v}, {info.hardware_max_v}] V (limits can only tighten)",
                )
            if not 0 < slew <= info.hardware_max_slew_v_per_s:
                raise self.fail(
                    f"{key}.max_slew_v_per_s",
                    f"{slew} V/s outside (0, {info.hardware_max_slew_v_per_s:g}] V/s",
                )
            if not min_v <= safe_v <= max_v:
                raise self.fail(f"{key}.safe_v", f"{safe_v} V outside [{min_v}, {max_v}] V")
            label = str(t.get("label", f"{inst} channel {channel}"))
            limits = ChannelLimits(
                min_v, max_v, slew, safe_v, label=label, source=f"{self.source} [{key}]"
            )
            out.append(ChannelSpec(inst, channel, limits))
        return tuple(out)

    def wiring(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise self.fail("wiring", 'must be a table of "input.port" = "output.port"')
        out: dict[str, str] = {}
        for dst, src in data.items():
            if not isinstance(src, str) or "." not in src or "." not in dst:
                raise self.fail(f"wiring.{dst}", f'use "part.port" on both sides, got {src!r}')
            out[str(dst)] = src
        return out

    def role(
        self,
        data: dict[str, Any],
        key: str,
        name: str,
        instruments: Mapping[str, InstrumentSpec],
        role: str,
    ) -> str:
        inst = self.typed(data, key, name, str)
        if inst not in instruments:
            raise self.fail(f"{key}.{name}", f"no instrument named {inst!r}")
        if instruments[inst].info.role != role:
            raise self.fail(
                f"{key}.{name}", f"{inst!r} is a {instruments[inst].info.role}, not a {role}"
            )
        return inst

    def dnpu(
        self,
        data: Any,
        instruments: Mapping[str, InstrumentSpec],
        channels: tuple[ChannelSpec, ...],
    ) -> DnpuRig:
        key = "dnpu"
        t = self.table(
            data,
            key,
            {
                "dac",
                "electrode_channels",
                "input_electrodes",
                "activation_ranges_v",
                "digitizer",
                "digitizer_channel",
                "marker_output",
                "lockins",
                "tia_gain_na_per_v",
                "tia_bandwidth_hz",
                "tia_saturation_v",
                "absolute_max_v",
            },
            {"dac", "electrode_channels", "activation_ranges_v", "digitizer", "absolute_max_v"},
        )
        dac = self.role(t, key, "dac", instruments, "dac")
        digitizer = self.role(t, key, "digitizer", instruments, "digitizer")
        tia = TiaParams()  # the defaults of the read-out chain
        electrodes = self.distinct_ints(t, key, "electrode_channels", None)
        count = max(instruments[dac].info.channel_count, 1)
        for ch in electrodes:
            if not 1 <= ch <= count:
                raise self.fail(f"{key}.electrode_channels", f"{ch} is outside 1..{count}")
        inputs = self.distinct_ints(t, key, "input_electrodes", (0, 1))
        for k in inputs:
            if not 0 <= k < len(electrodes):
                raise self.fail(f"{key}.input_electrodes", f"electrode {k} does not exist")
        lockins = tuple(self.typed(t, key, "lockins", list)) if "lockins" in t else ()
        for name in lockins:
            if name not in instruments or instruments[name].info.role != "lockin":
                raise self.fail(f"{key}.lockins", f"{name!r} is not a lock-in of this station")
        dac_info = instruments[dac].info
        hardware = max(abs(dac_info.hardware_min_v), abs(dac_info.hardware_max_v))
        absolute = self.typed(
            t, key, "absolute_max_v", float, f"(0, {hardware:g}] V ({dac_info.key} hardware)"
        )
        if not 0.0 < absolute <= hardware:
            raise self.fail(
                f"{key}.absolute_max_v",
                f"{absolute!r} V is outside (0, {hardware:g}] V, the {dac_info.key} hardware "
                f"range [{dac_info.hardware_min_v:g}, {dac_info.hardware_max_v:g}] V",
            )
        raw_ranges = self.typed(t, key, "activation_ranges_v", list)
        if len(raw_ranges) != len(electrodes):
            raise self.fail(
                f"{key}.activation_ranges_v",
                f"{len(raw_ranges)} ranges for {len(electrodes)} electrodes",
            )
        ranges: list[tuple[float, float]] = []
        for k, pair in enumerate(raw_ranges):
            finite = isinstance(pair, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in pair
            )
            if not (finite and len(pair) == 2 and float(pair[0]) < float(pair[1])):
                raise self.fail(
                    f"{key}.activation_ranges_v[{k}]",
                    f"need [low, high] (finite numbers, low < high, within electrode {k}'s "
                    f"limits), got {pair!r}",
                )
            ranges.append((float(pair[0]), float(pair[1])))
        for k, ch in enumerate(electrodes):
            lim = next(
                (c.limits for c in channels if c.instrument == dac and c.channel == ch), None
            )
            if lim is None:
                raise self.fail(
                    "channels", f"electrode {k} (DAC channel {ch}) has no [[channels]] limits"
                )
            if max(abs(lim.min_v), abs(lim.max_v)) > absolute:
                raise self.fail(
                    "channels",
                    f"electrode {k} limits [{lim.min_v}, {lim.max_v}] V exceed the device's "
                    f"absolute maximum {absolute} V ([dnpu].absolute_max_v)",
                )
            lo, hi = ranges[k]
            if lo < lim.min_v or hi > lim.max_v:
                raise self.fail(
                    f"{key}.activation_ranges_v[{k}]",
                    f"[{lo}, {hi}] V lies outside electrode {k}'s safety limits "
                    f"[{lim.min_v}, {lim.max_v}] V",
                )
        return DnpuRig(
            dac=dac,
            electrode_channels=electrodes,
            input_electrodes=inputs,
            activation_ranges_v=tuple(ranges),
            digitizer=digitizer,
            digitizer_channel=self.channel_of(t, key, "digitizer_channel", digitizer, instruments),
            marker_output=self.number(t, key, "marker_output", 1, 1, 5, integer=True),
            lockins=lockins,
            tia_gain_na_per_v=self.number(t, key, "tia_gain_na_per_v", tia.gain_na_per_v, 1e-12),
            tia_bandwidth_hz=self.number(t, key, "tia_bandwidth_hz", tia.bandwidth_hz, 1e-12),
            tia_saturation_v=self.number(t, key, "tia_saturation_v", tia.saturation_v, 1e-12),
            absolute_max_v=absolute,
        )

    def reservoir(
        self,
        data: Any,
        instruments: Mapping[str, InstrumentSpec],
        channels: tuple[ChannelSpec, ...],
    ) -> ReservoirRig:
        key = "reservoir"
        t = self.table(
            data,
            key,
            {
                "awg",
                "awg_channel",
                "bias_dac",
                "bias_channel",
                "digitizer",
                "digitizer_channel",
                "node_count",
                "node_duration_s",
                "bias_v",
                "calibration",
            },
            {"awg", "bias_dac", "digitizer"},
        )
        bias_dac = self.role(t, key, "bias_dac", instruments, "dac")
        bias_channel = self.channel_of(t, key, "bias_channel", bias_dac, instruments)
        lim = next(
            (c.limits for c in channels if c.instrument == bias_dac and c.channel == bias_channel),
            None,
        )
        bias_v = self.number(t, key, "bias_v", 0.0, -math.inf)
        if lim is None:
            raise self.fail("channels", f"the bias channel {bias_dac}:{bias_channel} has no limits")
        if not lim.min_v <= bias_v <= lim.max_v:
            raise self.fail(
                f"{key}.bias_v",
                f"{bias_v} V is outside the bias channel's limits [{lim.min_v}, {lim.max_v}] V",
            )
        awg = self.role(t, key, "awg", instruments, "awg")
        digitizer = self.role(t, key, "digitizer", instruments, "digitizer")
        return ReservoirRig(
            awg=awg,
            awg_channel=self.channel_of(t, key, "awg_channel", awg, instruments),
            bias_dac=bias_dac,
            bias_channel=bias_channel,
            digitizer=digitizer,
            digitizer_channel=self.channel_of(t, key, "digitizer_channel", digitizer, instruments),
            node_count=self.number(t, key, "node_count", 100, 1, integer=True),
            node_duration_s=self.number(t, key, "node_duration_s", 1e-6, 1e-12),
            bias_v=bias_v,
            calibration=self.calibration_path(t, key),
        )

    def calibration_path(self, t: dict[str, Any], key: str) -> Path | None:
        if "calibration" not in t:
            return None
        raw = Path(self.typed(t, key, "calibration", str))
        if raw.is_absolute():
            return raw
        here = Path(self.source)
        return (here.parent if here.is_file() else Path.cwd()) / raw

    def bench(self, data: Any) -> BenchSpec:
        key = "bench"
        t = self.table(
            data,
            key,
            {
                "seed",
                "pacing",
                "device",
                "device_seed",
                "surrogate",
                "resistance_ohm",
                "capacitance_f",
                "io_time",
                "v_pi",
                "pd_gain_v_per_w",
                "feedback_gain",
                *_BENCH_NOISE_KEYS,
            },
            set(),
        )
        pacing = self.typed(t, key, "pacing", str) if "pacing" in t else "fast"
        if pacing not in ("fast", "realtime"):
            raise self.fail("bench.pacing", f"must be 'fast' or 'realtime', got {pacing!r}")
        device = self.typed(t, key, "device", str) if "device" in t else "dnpu"
        if device not in ("dnpu", "reservoir", "rc"):
            raise self.fail("bench.device", f"must be 'dnpu', 'reservoir' or 'rc', got {device!r}")
        return BenchSpec(
            seed=self.number(t, key, "seed", 0, 0, integer=True),
            pacing=pacing,  # type: ignore[arg-type]
            device=device,  # type: ignore[arg-type]
            device_seed=self.number(t, key, "device_seed", 0, 0, integer=True),
            surrogate=self.typed(t, key, "surrogate", str) if "surrogate" in t else None,
            resistance_ohm=self.number(t, key, "resistance_ohm", 1e7, 1e-12),
            capacitance_f=self.number(t, key, "capacitance_f", 1e-11, 0.0),
            io_time=self.typed(t, key, "io_time", bool) if "io_time" in t else True,
            v_pi=self.number(t, key, "v_pi", 4.0, 1e-3) if "v_pi" in t else None,
            pd_gain_v_per_w=(
                self.number(t, key, "pd_gain_v_per_w", 1e3, 1e-6)
                if "pd_gain_v_per_w" in t
                else None
            ),
            feedback_gain=(
                self.number(t, key, "feedback_gain", 2.0, 0.0) if "feedback_gain" in t else None
            ),
            **{
                name: self.number(t, key, name, getattr(BenchSpec, name), minimum)
                for name, minimum in _BENCH_NOISE_KEYS.items()
            },
        )


# The [bench] noise keys and their smallest allowed values (a time constant must be > 0).
_BENCH_NOISE_KEYS = {
    "current_noise_psd_na2_per_hz": 0.0,
    "flicker_corner_hz": 0.0,
    "drift_na_per_sqrt_s": 0.0,
    "drift_tau_s": 1e-6,
    "dac_noise_v_per_sqrt_hz": 0.0,
    "dac_lsb_v": 0.0,
}


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "an array",
        bool: "true/false",
    }
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


# --------------------------------------------------------------------------------------- writing
def served_station_text(station: Station, resources: Mapping[str, str]) -> str:
    """The station as seen from a client of a bench served over TCP (``labrig sim serve``).

    Same wiring, limits and roles; every instrument (and the bench's own endpoint) reached through
    pyvisa-py at the served resources.
    """
    data = tomllib.loads(station.text)
    data.pop("bench", None)
    instruments = data["instruments"]
    for name, resource in resources.items():
        if name in instruments:
            instruments[name]["resource"] = resource
            instruments[name]["visa_library"] = "@py"
        else:
            model = "labrig_bench" if name == "bench" else None
            if model is None:
                continue
            instruments[name] = {"model": model, "resource": resource, "visa_library": "@py"}
    data["station"]["description"] = (
        f"{station.name} served by 'labrig sim serve' (generated from {station.source})"
    )
    return dump_toml(data)


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write the subset of TOML station files use (tables, arrays of tables, scalars, arrays)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    def key(k: str) -> str:
        return k if k.replace("_", "").replace("-", "").isalnum() else scalar(k)

    def table(prefix: str, t: Mapping[str, Any], header: str | None) -> None:
        plain = {k: v for k, v in t.items() if not isinstance(v, dict) and not _is_table_array(v)}
        if header is not None and (plain or not t):
            lines.append(f"\n{header}")
        for k, v in plain.items():
            lines.append(f"{key(k)} = {scalar(v)}")
        for k, v in t.items():
            name = f"{prefix}.{key(k)}" if prefix else key(k)
            if isinstance(v, dict):
                table(name, v, f"[{name}]")
            elif _is_table_array(v):
                for item in v:
                    table(name, item, f"[[{name}]]")

    table("", data, None)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
