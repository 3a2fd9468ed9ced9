"""Stanford Research Systems SR860 lock-in amplifier (500 kHz).

Implements the :class:`~instruments.roles.LockIn` role. The SR860 is not SCPI-structured (flat
mnemonics such as ``FREQ``, ``OFLT``, ``SNAP?``) but answers the IEEE 488.2 common commands.
It has no error queue: a refused command sets bits of the standard event status register,
so settings are followed by ``*ESR?`` and an execution (bit 4) or command (bit 5) error raises
:class:`~instruments.errors.InstrumentReportedError`.

Enumerated settings are written as their integer index (the instrument accepts index or
keyword and always answers with the index). The capture buffer is read as little-endian
float32 blocks (``CAPTUREGET?``).

Example::

    lockin = SR860("TCPIP0::192.168.1.40::INSTR", visa_library="@py")
    lockin.configure(frequency_hz=920.0, time_constant_s=0.1, current_input=True)
    x, y = lockin.read_xy()
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pymeasure.instruments import Instrument
from pymeasure.instruments.validators import strict_discrete_set

from instruments.common import (
    ErrorCheckingMixin,
    bool_validator,
    choice_control,
    choice_validator,
    format_number,
    jsonable,
    parse_bool,
    query_binary_values,
    range_control,
    strict_float_range,
    strict_int_range,
    visa_kwargs,
)

# Setting limits that configure() also checks before it writes anything.
FREQUENCY_HZ = (1e-3, 500e3)
HARMONICS = (1, 99)
PHASE_DEG = (-360000.0, 360000.0)
#: ``OFLT`` index -> time constant in s: {1, 3} x 10^(i//2 - 6), 1 us .. 30 ks.
TIME_CONSTANTS_S: tuple[float, ...] = tuple(
    float(f"{1 if i % 2 == 0 else 3}e{i // 2 - 6}") for i in range(22)
)
#: ``SCAL`` index -> full-scale sensitivity in V: {1, 0.5, 0.2} x 10^(-(i//3)), 1 V .. 1 nV.
SENSITIVITIES_V: tuple[float, ...] = tuple(
    float(f"{('1', '0.5', '0.2')[i % 3]}e{-(i // 3)}") for i in range(28)
)
#: In current mode the same index means 1e-6 A per V of the voltage table: 1 uA .. 1 fA.
SENSITIVITIES_A: tuple[float, ...] = tuple(
    float(f"{('1', '0.5', '0.2')[i % 3]}e{-(i // 3) - 6}") for i in range(28)
)
#: ``OUTP?``/``SNAP?`` parameter indices.
PARAMETERS: dict[str, int] = {
    "X": 0,
    "Y": 1,
    "R": 2,
    "THETA": 3,
    "IN1": 4,
    "IN2": 5,
    "IN3": 6,
    "IN4": 7,
    "XNOISE": 8,
    "YNOISE": 9,
    "OUT1": 10,
    "OUT2": 11,
    "PHASE": 12,
    "SAMP": 13,
    "LEVEL": 14,
    "FINT": 15,
    "FEXT": 16,
}
#: ``*ESR?`` bits that mean a command failed, with what they mean.
ESR_ERROR_BITS: dict[int, str] = {
    1: "input queue overflow",
    3: "output queue overflow",
    4: "execution error: parameter out of range or not allowed",
    5: "command error: illegal command or syntax",
}
#: Largest ``CAPTUREGET?`` request in kB.
CAPTURE_CHUNK_KB = 64
#: The capture buffer's size in kB.
CAPTURE_BUFFER_KB = 4096
_REL = 1e-9


def _nearest_at_or_above(value: float, table: tuple[float, ...], what: str) -> int:
    """Index of the smallest table entry >= ``value`` (table in any order)."""
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{what} {value!r}: must be a positive finite number")
    candidates = [i for i, entry in enumerate(table) if entry >= value * (1 - _REL)]
    if not candidates:
        raise ValueError(f"{what} {value:g} is beyond the largest allowed {max(table):g}")
    return min(candidates, key=lambda i: table[i])


def _even_kb(value: Any, values: tuple[int, int]) -> int:
    number = strict_int_range(value, values)
    if number % 2:
        raise ValueError(f"capture length {number} kB: must be even (the buffer has 2 kB blocks)")
    return number


def _parameter_index(name: str | int) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        if name in PARAMETERS.values():
            return name
    elif isinstance(name, str) and name.strip().upper() in PARAMETERS:
        return PARAMETERS[name.strip().upper()]
    raise ValueError(f"parameter {name!r}: one of {list(PARAMETERS)} or 0..16")


class SR860(ErrorCheckingMixin, Instrument):
    """Stanford Research Systems SR860 lock-in amplifier.

    :param adapter: VISA resource name or PyMeasure adapter.
    :param name: name used in logs and error messages.
    :param kwargs: passed to the VISA adapter (e.g. ``visa_library="@py"``, ``timeout``).
    """

    #: ``CAPTUREGET?`` blocks are read without a trailing line feed (as other SR86x drivers).
    capture_block_terminated = False

    # ------------------------------------------------------------------ reference
    reference_source = choice_control(
        "RSRC?",
        "RSRC %d",
        """Control the reference source: 'INT', 'EXT', 'DUAL' or 'CHOP' (str).""",
        {"INT": 0, "EXT": 1, "DUAL": 2, "CHOP": 3},
        mapped=True,
    )

    frequency = range_control(
        "FREQ?",
        "FREQ %s",
        """Control the reference frequency in Hz (float, 1 mHz to 500 kHz). Reads the external
        frequency when the reference is external.""",
        *FREQUENCY_HZ,
    )

    sine_amplitude = range_control(
        "SLVL?",
        "SLVL %s",
        """Control the sine-out amplitude in V (float, 0 to 2 V).""",
        0.0,
        2.0,
    )

    sine_offset = range_control(
        "SOFF?",
        "SOFF %s",
        """Control the sine-out DC level in V (float, -5 to 5 V).""",
        -5.0,
        5.0,
    )

    harmonic = range_control(
        "HARM?",
        "HARM %d",
        """Control the detection harmonic (int, 1 to 99).""",
        *HARMONICS,
        integer=True,
    )

    phase = range_control(
        "PHAS?",
        "PHAS %s",
        """Control the reference phase shift in degrees (float, -360000 to 360000).""",
        *PHASE_DEG,
    )

    # ------------------------------------------------------------------ filter
    time_constant_index = range_control(
        "OFLT?",
        "OFLT %d",
        """Control the time constant by index (int, 0 = 1 us to 21 = 30 ks; see
        ``TIME_CONSTANTS_S``).""",
        0,
        len(TIME_CONSTANTS_S) - 1,
        integer=True,
    )

    filter_slope = Instrument.control(
        "OFSL?",
        "OFSL %d",
        """Control the low-pass filter slope in dB/octave (int, 6, 12, 18 or 24).""",
        validator=strict_discrete_set,
        values={6: 0, 12: 1, 18: 2, 24: 3},
        map_values=True,
        check_set_errors=True,
    )

    sync_filter = Instrument.control(
        "SYNC?",
        "SYNC %d",
        """Control the synchronous filter (bool).""",
        validator=bool_validator,
        set_process=int,
        get_process=parse_bool,
        cast=str,
        check_set_errors=True,
    )

    sensitivity_index = range_control(
        "SCAL?",
        "SCAL %d",
        """Control the sensitivity by index (int, 0 = 1 V / 1 uA to 27 = 1 nV / 1 fA; see
        ``SENSITIVITIES_V``, ``SENSITIVITIES_A``).""",
        0,
        len(SENSITIVITIES_V) - 1,
        integer=True,
    )

    # ------------------------------------------------------------------ input
    input_mode = choice_control(
        "IVMD?",
        "IVMD %d",
        """Control the signal input: 'VOLT' (voltage) or 'CURR' (current) (str).""",
        {"VOLT": 0, "CURR": 1},
        mapped=True,
    )

    current_gain = choice_control(
        "ICUR?",
        "ICUR %d",
        """Control the current-input gain: '1MEG' (1 MOhm, 1 uA) or '100MEG' (100 MOhm,
        10 nA) (str).""",
        {"1MEG": 0, "100MEG": 1},
        mapped=True,
    )

    input_range = Instrument.control(
        "IRNG?",
        "IRNG %d",
        """Control the voltage-input range in V (float, 1, 0.3, 0.1, 0.03 or 0.01).""",
        validator=strict_discrete_set,
        values={1.0: 0, 0.3: 1, 0.1: 2, 0.03: 3, 0.01: 4},
        map_values=True,
        check_set_errors=True,
    )

    input_coupling = choice_control(
        "ICPL?",
        "ICPL %d",
        """Control the voltage-input coupling: 'AC' or 'DC' (str).""",
        {"AC": 0, "DC": 1},
        mapped=True,
    )

    # ------------------------------------------------------------------ outputs
    x = Instrument.measurement("OUTP? 0", """Measure X in V (A in current mode) (float).""")
    y = Instrument.measurement("OUTP? 1", """Measure Y in V (A in current mode) (float).""")
    magnitude = Instrument.measurement(
        "OUTP? 2", """Measure R in V (A in current mode), RMS (float)."""
    )
    theta = Instrument.measurement("OUTP? 3", """Measure theta in degrees (float).""")

    input_level = Instrument.measurement(
        "ILVL?",
        """Measure the input signal-strength bar (int, 0 to 4; 4 = input overload).""",
        get_process=lambda v: int(v),
    )

    lockin_status = Instrument.measurement(
        "LIAS?",
        """Get (and clear) the latched lock-in status register (int; bit 3 reference unlock,
        bit 4 input overload, bits 0, 1, 8-11 output-scale overloads).""",
        get_process=lambda v: int(v),
    )

    overload_status = Instrument.measurement(
        "CUROVLDSTAT?",
        """Get the present (not latched) overload state (int; bit 4 = input range).""",
        get_process=lambda v: int(v),
    )

    # ------------------------------------------------------------------ capture buffer
    capture_length_kb = Instrument.control(
        "CAPTURELEN?",
        "CAPTURELEN %d",
        """Control the capture buffer length in kB (int, even, 2 to 4096; 256 float points per
        kB).""",
        validator=_even_kb,
        values=(2, CAPTURE_BUFFER_KB),
        get_process=lambda v: int(v),
        check_set_errors=True,
    )

    capture_config = choice_control(
        "CAPTURECFG?",
        "CAPTURECFG %d",
        """Control what each capture sample holds: 'X', 'XY', 'RT' or 'XYRT' (str).""",
        {"X": 0, "XY": 1, "RT": 2, "XYRT": 3},
        mapped=True,
    )

    capture_rate_max = Instrument.measurement(
        "CAPTURERATEMAX?",
        """Measure the largest capture rate in Hz allowed by the time constant (float).""",
    )

    capture_rate = Instrument.measurement(
        "CAPTURERATE?", """Measure the capture rate in Hz (float)."""
    )

    capture_rate_exponent = Instrument.setting(
        "CAPTURERATE %d",
        """Set the capture rate as ``capture_rate_max / 2**n`` (int n, 0 to 20).""",
        validator=strict_int_range,
        values=(0, 20),
        check_set_errors=True,
    )

    capture_status = Instrument.measurement(
        "CAPTURESTAT?",
        """Get the capture state (int; bit 0 capturing, bit 1 triggered, bit 2 wrapped).""",
        get_process=lambda v: int(v),
    )

    capture_bytes = Instrument.measurement(
        "CAPTUREBYTES?",
        """Measure the number of bytes captured so far (int).""",
        get_process=lambda v: int(v),
    )

    def __init__(self, adapter: Any, name: str = "SR860", **kwargs: Any) -> None:
        super().__init__(adapter, name, includeSCPI=False, **visa_kwargs(kwargs, timeout_ms=5_000))

    # ------------------------------------------------------------------ common commands
    def reset(self) -> None:
        """Reset to defaults (``*RST``)."""
        self.write("*RST")

    def clear(self) -> None:
        """Clear the status registers (``*CLS``)."""
        self.write("*CLS")

    @property
    def event_status(self) -> int:
        """Get (and clear) the standard event status register (``*ESR?``, int)."""
        return int(float(self.ask("*ESR?")))

    def read_error_entries(self) -> list[tuple[int, str]]:
        """Read ``*ESR?``; one entry ``(bit value, meaning)`` per error bit set."""
        status = self.event_status
        return [(1 << bit, text) for bit, text in ESR_ERROR_BITS.items() if status & (1 << bit)]

    def check_errors(self, context: str | None = None) -> None:
        """Read ``*ESR?``; raise ``InstrumentReportedError`` on an execution or command error
        (or a queue overflow). The code is the bit value (16 = EXE, 32 = CMD)."""
        super().check_errors(context)

    # ------------------------------------------------------------------ time constant, scale
    @property
    def time_constant_s(self) -> float:
        """Control the time constant in s (float, 1 us to 30 ks). Setting picks the nearest
        allowed value at or above the request and raises beyond 30 ks."""
        return TIME_CONSTANTS_S[self.time_constant_index]

    @time_constant_s.setter
    def time_constant_s(self, seconds: float) -> None:
        self.time_constant_index = _nearest_at_or_above(
            float(seconds), TIME_CONSTANTS_S, "time constant (s)"
        )

    @property
    def sensitivity_v(self) -> float:
        """Control the full-scale sensitivity in V for voltage input (float, 1 nV to 1 V).
        Setting picks the smallest full scale at or above the request."""
        return SENSITIVITIES_V[self.sensitivity_index]

    @sensitivity_v.setter
    def sensitivity_v(self, volts: float) -> None:
        self.sensitivity_index = _nearest_at_or_above(
            float(volts), SENSITIVITIES_V, "sensitivity (V)"
        )

    @property
    def sensitivity_a(self) -> float:
        """Control the full-scale sensitivity in A for current input (float, 1 fA to 1 uA).
        Setting picks the smallest full scale at or above the request."""
        return SENSITIVITIES_A[self.sensitivity_index]

    @sensitivity_a.setter
    def sensitivity_a(self, amperes: float) -> None:
        self.sensitivity_index = _nearest_at_or_above(
            float(amperes), SENSITIVITIES_A, "sensitivity (A)"
        )

    # ------------------------------------------------------------------ readings
    def snap(self, *parameters: str | int) -> list[float]:
        """Read 2 or 3 parameters at one instant (``SNAP?``), e.g. ``snap("X", "Y")``.

        Parameters are names of ``PARAMETERS`` ('X', 'Y', 'R', 'THETA', 'FINT', ...) or
        indices 0..16. Returns floats in the order asked.
        """
        if not 2 <= len(parameters) <= 3:
            raise ValueError(f"SNAP? takes 2 or 3 parameters, got {len(parameters)}")
        indices = [_parameter_index(p) for p in parameters]
        reply = self.ask("SNAP? " + ",".join(str(i) for i in indices))
        values = [float(v) for v in reply.strip().split(",")]
        if len(values) != len(indices):
            raise ValueError(f"SNAP? reply {reply!r}: expected {len(indices)} values")
        return values

    def read_xy(self) -> tuple[float, float]:
        """X and Y at one instant (``SNAP? 0,1``), in V (or A in current mode)."""
        x, y = self.snap("X", "Y")
        return x, y

    def read_r_theta(self) -> tuple[float, float]:
        """R (RMS, V or A) and theta (degrees) at one instant (``SNAP? 2,3``)."""
        r, theta = self.snap("R", "THETA")
        return r, theta

    # ------------------------------------------------------------------ capture
    def start_capture(self, continuous: bool = False, trigger: str = "IMM") -> None:
        """Start capturing: one-shot (or continuous, wrapping), starting immediately ('IMM'),
        on a hardware trigger ('TRIG') or one sample per trigger ('SAMP')."""
        start = {"IMM": 0, "TRIG": 1, "SAMP": 2}[choice_validator(trigger, ("IMM", "TRIG", "SAMP"))]
        self.write(f"CAPTURESTART {int(bool(continuous))},{start}")
        self.check_errors()

    def stop_capture(self) -> None:
        """Stop capturing (``CAPTURESTOP``)."""
        self.write("CAPTURESTOP")
        self.check_errors()

    def get_capture(self, offset_kb: int, length_kb: int) -> npt.NDArray[np.float32]:
        """Read ``length_kb`` (1..64) kB of the stopped capture buffer from ``offset_kb`` as
        float32 values, interleaved as ``capture_config`` says (``CAPTUREGET?``)."""
        offset = strict_int_range(offset_kb, (0, CAPTURE_BUFFER_KB - 1))
        length = strict_int_range(length_kb, (1, CAPTURE_CHUNK_KB))
        data = query_binary_values(
            self,
            f"CAPTUREGET? {offset},{length}",
            "<f4",
            terminated=self.capture_block_terminated,
        )
        return data.astype(np.float32)

    def read_capture(self, length_kb: int) -> npt.NDArray[np.float32]:
        """Read the first ``length_kb`` kB of the stopped capture buffer, in 64 kB requests."""
        total = strict_int_range(length_kb, (1, CAPTURE_BUFFER_KB))
        chunks = []
        for offset in range(0, total, CAPTURE_CHUNK_KB):
            chunks.append(self.get_capture(offset, min(CAPTURE_CHUNK_KB, total - offset)))
        return np.concatenate(chunks)

    # ------------------------------------------------------------------ role
    def configure(
        self,
        frequency_hz: float,
        time_constant_s: float,
        reference: Literal["internal", "external"] = "internal",
        current_input: bool = False,
        harmonic: int = 1,
        phase_deg: float = 0.0,
    ) -> None:
        """Set the reference, time constant (nearest allowed at or above) and input mode.

        Everything is validated before the first write; ``*ESR?`` is checked at the end.
        """
        sources = {"internal": 0, "external": 1}
        if reference not in sources:
            raise ValueError(f"reference {reference!r}: 'internal' or 'external'")
        frequency = strict_float_range(frequency_hz, FREQUENCY_HZ)
        tc_index = _nearest_at_or_above(float(time_constant_s), TIME_CONSTANTS_S, "time constant")
        harm = strict_int_range(harmonic, HARMONICS)
        phase = strict_float_range(phase_deg, PHASE_DEG)
        self.write(f"RSRC {sources[reference]}")
        self.write(f"FREQ {format_number(frequency)}")
        self.write(f"HARM {harm}")
        self.write(f"PHAS {format_number(phase)}")
        self.write(f"IVMD {1 if current_input else 0}")
        self.write(f"OFLT {tc_index}")
        self.check_errors(context="configure")

    def snapshot(self) -> dict[str, object]:
        """Every setting this driver knows, JSON-serialisable."""
        names = (
            "reference_source",
            "frequency",
            "sine_amplitude",
            "sine_offset",
            "harmonic",
            "phase",
            "time_constant_s",
            "filter_slope",
            "sync_filter",
            "sensitivity_index",
            "input_mode",
            "current_gain",
            "input_range",
            "input_coupling",
        )
        settings: dict[str, object] = {"identity": self.identity}
        settings.update({name: getattr(self, name) for name in names})
        return jsonable(settings)  # type: ignore[no-any-return]

    def safe_state(self) -> None:
        """Sine output quiet: amplitude and its DC level to 0 V (the DC level alone can hold
        up to 5 V on the output)."""
        self.sine_amplitude = 0.0
        self.sine_offset = 0.0
