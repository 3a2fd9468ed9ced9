"""The SCPI parser and the emulator base: forms, suffixes, header paths, data types, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from emulator_wire import ask
from sim_contract import ToyEmulator

from labrig.sim.bench import Bench, Fault
from labrig.sim.emulator import ScpiEmulator, garble_bytes
from labrig.sim.scpi import (
    Args,
    CommandTree,
    ScpiError,
    format_block,
    format_nr3,
    parse_message,
    quote_string,
    split_program_messages,
)


@pytest.fixture
def toy() -> ToyEmulator:
    return ToyEmulator()


def errors(emu: ScpiEmulator) -> list[int]:
    codes = []
    while (code := emu.pop_error()[0]) != 0:
        codes.append(code)
    return codes


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "header",
    [
        "FREQ",
        "freq",
        "FREQUENCY",
        "Frequency",
        "SOUR:FREQ",
        "source:frequency",
        "SOUR1:FREQ",
        ":SOURCE1:FREQUENCY",
        ":sour1:freq",
    ],
)
def test_short_and_long_forms_in_any_case(toy: ToyEmulator, header: str) -> None:
    toy.feed(f"{header} 1234.5\n".encode())
    assert toy.freq[0] == 1234.5
    assert float(ask(toy, f"{header}?")) == 1234.5
    assert errors(toy) == []


@pytest.mark.parametrize("header", ["FREQU", "FRE", "SOURC:FREQ", "FREQUENCYX", "SOUR1X:FREQ"])
def test_forms_between_short_and_long_are_undefined(toy: ToyEmulator, header: str) -> None:
    toy.feed(f"{header} 5\n".encode())
    assert errors(toy) == [-113]
    assert toy.freq == [1e3, 1e3]


def test_numeric_suffix_selects_channel_and_defaults_to_one(toy: ToyEmulator) -> None:
    toy.feed(b"SOUR2:FREQ 20;:SOURCE1:FREQ 10;:OUTP2 ON\n")
    assert toy.freq == [10.0, 20.0]
    assert toy.outputs == [False, True]
    toy.feed(b"OUTP ON\n")
    assert toy.outputs == [True, True]
    assert ask(toy, "SOUR2:FREQ?") == "+2.000000000000000E+01"


def test_suffix_out_of_range_is_114(toy: ToyEmulator) -> None:
    toy.feed(b"SOUR3:FREQ 5\n")
    assert errors(toy) == [-114]


def test_header_path_rule(toy: ToyEmulator) -> None:
    # OFFS resolves relative to SOUR2:VOLT:, and AMPL after *CLS still does (common commands
    # leave the path alone); ':' resets to the root.
    toy.feed(b"SOUR2:VOLT:OFFS 1.5;AMPL 2;*CLS;OFFS -1;:OUTP2 1;:FREQ 7\n")
    assert toy.offset == [0.0, -1.0]
    assert toy.volt == [0.1, 2.0]
    assert toy.outputs == [False, True]
    assert toy.freq == [7.0, 1e3]
    # the suffix captured on the path carries to the relative header
    toy.feed(b"SOUR2:FREQ 11;VOLT 3\n")
    assert toy.freq[1] == 11.0 and toy.volt[1] == 3.0
    assert errors(toy) == []


def test_header_path_holds_the_nodes_as_sent_not_skipped_optional_ones() -> None:
    # SOURce#:SINE[:VOLTage]:SPAN sent as sour1:sine:span leaves the path at SOUR1:SINE:, so
    # the next relative header is SOUR1:SINE:TRIG:SOUR (not ...:SINE:VOLTage:TRIG:SOUR).
    from labrig.sim.qdevil_qdac2 import QDac2Emulator

    qdac = QDac2Emulator("q")
    reply = qdac.feed(b"sour1:sine:span 0.2;trig:sour bus\nsyst:err:all?\nsour1:sine:trig:sour?\n")
    assert reply == b'0, "No error"\nbus\n'


def test_relative_header_falls_back_to_root(toy: ToyEmulator) -> None:
    toy.feed(b"SOUR2:FREQ 11;OUTP2 ON;TEXT 'x'\n")
    assert toy.outputs[1] and toy.text == "x"
    assert errors(toy) == []


def test_several_queries_reply_on_one_line(toy: ToyEmulator) -> None:
    reply = toy.feed(b"FREQ 5;FREQ?;*IDN?;:OUTP?;FUNC?\n")
    assert reply == b"+5.000000000000000E+00;labrig,TOY1,0001,1.0;0;SIN\n"


def test_failing_query_sends_no_reply_but_the_others_do(toy: ToyEmulator) -> None:
    assert toy.feed(b"NOPE?\n") == b""
    assert toy.feed(b"FREQ?;NOPE?;OUTP?\n") == b"+1.000000000000000E+03;0\n"
    assert errors(toy) == [-113, -113]


def test_query_of_write_only_and_write_of_query_only_are_undefined(toy: ToyEmulator) -> None:
    toy.feed(b"*RST?\n*IDN\n")
    assert errors(toy) == [-113, -113]


# --------------------------------------------------------------------------- message framing


def test_split_keeps_incomplete_tail() -> None:
    buf = bytearray(b"A 1\nB 2\r\nC 3")
    assert split_program_messages(buf) == [b"A 1", b"B 2"]
    assert buf == b"C 3"
    buf += b"\n"
    assert split_program_messages(buf) == [b"C 3"]
    assert buf == b""


def test_split_ignores_lf_inside_blocks_and_quotes() -> None:
    buf = bytearray(b'DATA #15a\nb\nc;TEXT "x\ny"\nQ #2')
    assert split_program_messages(buf) == [b'DATA #15a\nb\nc;TEXT "x\ny"']
    assert buf == b"Q #2"  # an incomplete block header waits for more bytes


def test_block_with_embedded_lf_fed_byte_by_byte(toy: ToyEmulator) -> None:
    payload = bytes(range(256)) * 3
    message = b"DATA:ARB wave," + format_block(payload) + b";DATA:ARB? 'WAVE'\n"
    replies = b"".join(toy.feed(message[i : i + 1]) for i in range(len(message)))
    assert replies == format_block(payload) + b"\n"
    assert toy.arbs["WAVE"] == payload


def test_incomplete_block_waits_and_device_clear_recovers(toy: ToyEmulator) -> None:
    session = toy.open_session()
    # the block declares 9 bytes: the LF is data, so nothing runs yet
    assert session.feed(b"DATA:ARB w,#19abc\n*IDN?\n") == b""
    session.clear()
    assert session.feed(b"*IDN?\n") == b"labrig,TOY1,0001,1.0\n"


def test_indefinite_block_runs_to_end_of_message(toy: ToyEmulator) -> None:
    toy.feed(b"DATA:ARB w,#0ab;c\n")
    assert toy.arbs["W"] == b"ab;c"


def test_binary_float_block_round_trip(toy: ToyEmulator) -> None:
    values = np.linspace(-1, 1, 10_000, dtype=np.float32)
    toy.feed(b"DATA:ARB big," + format_block(values.tobytes()) + b"\n")
    reply = toy.feed(b"DATA:ARB? big\n")
    header_len = 2 + int(reply[1:2])
    got = np.frombuffer(reply[header_len:-1], dtype=np.float32)
    np.testing.assert_array_equal(got, values)


@pytest.mark.parametrize("block", [b"#12abc", b"#x5abc", b"#", b"#3ab", b"abc"])
def test_malformed_block_is_161(toy: ToyEmulator, block: bytes) -> None:
    toy.feed(b"DATA:ARB w," + block + b"\n")
    assert errors(toy) == [-161]
    assert "W" not in toy.arbs


def test_quoted_strings_with_doubled_quotes_and_separators(toy: ToyEmulator) -> None:
    toy.feed(b'TEXT "say ""hi""; a,b\nc"\n')
    assert toy.text == 'say "hi"; a,b\nc'
    assert ask(toy, "TEXT?") == '"say ""hi""; a,b\nc"'
    toy.feed(b"TEXT 'it''s'\n")
    assert toy.text == "it's"
    assert errors(toy) == []


def test_ascii_number_list(toy: ToyEmulator) -> None:
    toy.feed(b"DATA:LIST 0.5, -1, +1.0E-01,.25,1e0\n")
    assert toy.points == [0.5, -1.0, 0.1, 0.25, 1.0]
    toy.feed(b"DATA:LIST 0.5,2\n")
    assert errors(toy) == [-222]


def test_channel_list(toy: ToyEmulator) -> None:
    toy.feed(b"ROUT:CLOS (@1,3:5,9:7)\n")
    assert toy.closed == [1, 3, 4, 5, 9, 8, 7]
    assert ask(toy, "ROUT:CLOS?") == "1,3,4,5,9,8,7"
    toy.feed(b"ROUT:CLOS (@1,30)\n")
    assert errors(toy) == [-222]


def test_channel_list_after_a_value_stays_one_parameter() -> None:
    (unit,) = parse_message(b"sour:volt 0.2,(@2:5,7)")
    args = Args(unit.params)
    assert len(args) == 2
    assert args.float(0) == 0.2
    assert args.channel_list(1) == [2, 3, 4, 5, 7]


# --------------------------------------------------------------------------- parameter types


def test_numeric_forms_keywords_and_units(toy: ToyEmulator) -> None:
    for text, want in [
        ("1e3", 1e3),
        ("+2.5E+02", 250.0),
        ("MIN", 1e-3),
        ("maximum", 30e6),
        ("DEF", 1e3),
        ("12.5 KHZ", 12.5e3),
        ("3kHz", 3e3),
        ("#H10", 16.0),
    ]:
        toy.feed(f"FREQ {text}\n".encode())
        assert toy.freq[0] == want, text
    assert errors(toy) == []


@pytest.mark.parametrize(
    ("value", "code"),
    [("5e7", -222), ("0", -222), ("abc", -104), ("12 PARSEC", -131), ("", -109), ("1,2", -108)],
)
def test_numeric_errors(toy: ToyEmulator, value: str, code: int) -> None:
    toy.feed(f"FREQ {value}\n".encode())
    assert errors(toy) == [code]
    assert toy.freq[0] == 1e3  # never clipped


def test_missing_parameter_is_109(toy: ToyEmulator) -> None:
    toy.feed(b"FREQ\n")
    assert errors(toy) == [-109]


def test_int_rounds_and_takes_keywords(toy: ToyEmulator) -> None:
    toy.feed(b"COUN 2.6\n")
    assert toy.count == 3
    toy.feed(b"COUN INF\n")
    assert toy.count == -1
    toy.feed(b"COUN 0\n")
    assert errors(toy) == [-222]


@pytest.mark.parametrize(
    ("text", "want"), [("ON", True), ("off", False), ("1", True), ("0", False)]
)
def test_bool(toy: ToyEmulator, text: str, want: bool) -> None:
    toy.feed(f"OUTP {text}\n".encode())
    assert toy.outputs[0] is want


def test_bool_and_enum_refuse_other_words(toy: ToyEmulator) -> None:
    toy.feed(b"OUTP MAYBE\nFUNC TRIANGLE\nFUNC SINU\n")
    assert errors(toy) == [-224, -224, -224]


def test_enum_forms_and_options() -> None:
    args = Args([b"sinusoid", b"squ", b"2", b"THE"])
    assert args.enum(0, ["SINusoid", "SQUare", "ARB"]) == "SINusoid"
    assert args.enum(1, ["SINusoid", "SQUare", "ARB"]) == "SQUare"
    assert args.enum(2, ["INT", "EXT", "DUAL"], allow_index=True) == "DUAL"
    assert args.enum(3, ["X", "THeta"], prefix=True) == "THeta"
    with pytest.raises(ScpiError) as err:
        args.enum(3, ["X", "THeta"])
    assert err.value.code == -224


def test_require_counts_parameters() -> None:
    args = Args([b"1", b"2"], "CMD")
    args.require(1, 2)
    with pytest.raises(ScpiError) as few:
        args.require(3)
    with pytest.raises(ScpiError) as many:
        args.require(0, 1)
    assert (few.value.code, many.value.code) == (-109, -108)


def test_unterminated_string_is_151() -> None:
    with pytest.raises(ScpiError) as err:
        Args([b'"abc']).string(0)
    assert err.value.code == -151


# --------------------------------------------------------------------------- error queue, status


def test_errors_land_in_the_queue_in_order(toy: ToyEmulator) -> None:
    toy.feed(b"BOGUS\nFREQ\nFREQ 1e12\nDATA:ARB w,#12abc\n")
    assert toy.feed(b"SYST:ERR:COUN?\n") == b"4\n"
    replies = [ask(toy, "SYST:ERR?") for _ in range(5)]
    assert [r.split(",")[0] for r in replies] == ["-113", "-109", "-222", "-161", "+0"]
    assert replies[0].startswith('-113,"Undefined header')
    assert replies[-1] == '+0,"No error"'


def test_syst_err_all_drains_the_queue(toy: ToyEmulator) -> None:
    toy.feed(b"X1\nX2\n")
    assert ask(toy, "SYST:ERR:ALL?") == '-113,"Undefined header; X1",-113,"Undefined header; X2"'
    assert ask(toy, "SYST:ERR:ALL?") == '+0,"No error"'


def test_queue_overflow_replaces_last_with_350(toy: ToyEmulator) -> None:
    for _ in range(30):
        toy.feed(b"BOGUS\n")
    codes = errors(toy)
    assert len(codes) == 20
    assert codes[:19] == [-113] * 19 and codes[19] == -350


def test_esr_bits_stb_and_cls(toy: ToyEmulator) -> None:
    toy.feed(b"BOGUS\nFREQ 1e12\n")
    toy.push_error(-410)
    toy.push_error(-310)
    assert ask(toy, "*STB?") == "4"  # error queue not empty
    toy.feed(b"*ESE 32\n")
    assert int(ask(toy, "*STB?")) & 32  # ESB: an enabled event bit is set
    assert ask(toy, "*ESR?") == str(32 | 16 | 4 | 8)
    assert ask(toy, "*ESR?") == "0"  # reading clears
    toy.feed(b"*CLS\n")
    assert ask(toy, "SYST:ERR?") == '+0,"No error"'
    toy.feed(b"*OPC\n")
    assert ask(toy, "*ESR?") == "1"


def test_common_commands(toy: ToyEmulator) -> None:
    toy.feed(b"FREQ 5;*RST\n*TRG\n*TRG;*WAI\n")
    assert toy.freq[0] == 1e3 and toy.triggers == 2
    assert toy.feed(b"*OPC?;*TST?;*SRE 16;*SRE?;*ESE?\n") == b"1;0;16;0\n"
    toy.feed(b"*IDN? 5\n")
    assert errors(toy) == [-108]


def test_handler_bug_is_reported_not_raised() -> None:
    class Buggy(ScpiEmulator):
        def register_commands(self) -> None:
            self.tree.add("BOOM", query=lambda ctx, args: str(1 / 0))

    emu = Buggy("buggy")
    assert emu.feed(b"BOOM?;*OPC?\n") == b"1\n"
    code, message = emu.pop_error()
    assert code == -300 and "ZeroDivisionError" in message


def test_qdac_style_error_format() -> None:
    class Qdac(ToyEmulator):
        error_format = '{code}, "{message}"'

    emu = Qdac()
    assert ask(emu, "syst:err:all?") == '0, "No error"'


def test_sessions_keep_their_own_partial_input(toy: ToyEmulator) -> None:
    a, b = toy.open_session(), toy.open_session()
    assert a.feed(b"FREQ 4") == b""
    assert b.feed(b"*IDN?\n") == b"labrig,TOY1,0001,1.0\n"
    assert a.feed(b"2;FREQ?\n") == b"+4.200000000000000E+01\n"


# --------------------------------------------------------------------------- faults


def test_error_fault_is_queued_and_transport_faults_reported() -> None:
    bench = Bench()
    toy = ToyEmulator("toy", bench)
    bench.faults.add(Fault("error", "toy", at_command=1, code=-310, message="System error"))
    bench.faults.add(Fault("garble", "toy", at_command=2))
    toy.feed(b"FREQ 5\n")
    assert toy.pop_error() == (-310, "System error")
    # the garble fired on a write: it waits for the next message that replies
    (r1,) = toy.feed_with_faults(b"FREQ 6\n")
    assert r1.fault is None and r1.data == b""
    (r2,) = toy.feed_with_faults(b"*IDN?\n")
    assert r2.fault is not None and r2.fault.kind == "garble"
    assert r2.data == b"labrig,TOY1,0001,1.0\n"


def test_garble_keeps_the_terminator_and_breaks_the_text() -> None:
    g = garble_bytes(b"+1.0E+03\n")
    assert g.endswith(b"\n") and g.count(b"\n") == 1
    with pytest.raises(UnicodeDecodeError):
        g.decode("ascii")
    assert garble_bytes(b"\x8a\n").count(b"\n") == 1


# --------------------------------------------------------------------------- tree, formatting


@pytest.mark.parametrize("pattern", ["", "[OPT]", "lower", "A:[B", "FREQ::X", "A#B"])
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        CommandTree().add(pattern, write=lambda ctx, args: None)


def test_tree_override_and_remove(toy: ToyEmulator) -> None:
    toy.tree.add("[SOURce#]:FREQuency", query=lambda ctx, args: "42")
    assert ask(toy, "FREQ?") == "42"
    toy.feed(b"FREQ 9\n")
    assert toy.freq[0] == 9.0  # the write handler was kept
    toy.tree.remove("SYSTem:ERRor[:NEXT]")
    toy.feed(b"SYST:ERR?\n")
    assert toy.pop_error()[0] == -113


def test_suffixes_are_positional_with_none_for_omitted() -> None:
    tree = CommandTree()
    tree.add("[SOURce#]:AWG#:SCALe", write=lambda ctx, args: None)
    _, ctx = tree.resolve("AWG3:SCAL", False)
    assert ctx.suffixes == (None, 3)
    assert ctx.suffix(0) == 1
    _, ctx = tree.resolve("sour7:awg:scale", False)
    assert ctx.suffixes == (7, None)


@pytest.mark.parametrize(
    "x", [1000.0, 0.1, -2.5e-9, 1 / 3, 2.0**-1074, 1.7976931348623157e308, 0.0]
)
def test_format_nr3_round_trips(x: float) -> None:
    text = format_nr3(x)
    assert float(text) == x
    assert text[0] in "+-" and "E" in text


def test_format_nr3_style_and_specials() -> None:
    assert format_nr3(1000.0) == "+1.000000000000000E+03"
    assert float(format_nr3(math.inf)) == 9.9e37
    assert float(format_nr3(-math.inf)) == -9.9e37
    assert float(format_nr3(math.nan)) == 9.91e37


def test_format_block_and_quote() -> None:
    assert format_block(b"") == b"#10"
    assert format_block(b"x" * 12) == b"#212" + b"x" * 12
    assert quote_string('a"b') == '"a""b"'
