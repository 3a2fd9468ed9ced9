"""Fuzzing the parser: no input crashes an emulator, and it keeps answering afterwards."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_contract import ToyEmulator

from labrig.sim.scpi import Args, ScpiError, split_program_messages

IDN = b"labrig,TOY1,0001,1.0\n"

# Characters SCPI gives meaning to, so the fuzzer hits quotes, blocks, paths and lists often.
SCPI_ALPHABET = st.sampled_from(
    list(b"\n\r\t ;:,?*#\"'()@0123456789.+-eEABCDEFGHIJKLMNOPQRSTUVWXYZsourcefqvlt")
)
SCPI_LIKE = st.lists(SCPI_ALPHABET, max_size=120).map(bytes)
FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _drain_errors(toy: ToyEmulator) -> list[tuple[int, str]]:
    errors = []
    while (error := toy.pop_error())[0] != 0:
        errors.append(error)
    return errors


def _assert_no_handler_crash(errors: list[tuple[int, str]]) -> None:
    # handle_message turns any exception a handler raises into -300 "Device-specific error", so
    # the emulator keeps answering after a handler bug: the queue is where such a bug shows.
    crashes = [e for e in errors if e[0] == -300]
    assert not crashes, f"a command handler raised: {crashes}"


def _still_answers(toy: ToyEmulator) -> None:
    # Input may legitimately be stuck in an open block or quote: device clear recovers, as on
    # a real instrument.
    session = toy.open_session()
    assert session.feed(b"*IDN?\n") == IDN
    assert toy.error_count() <= toy.error_queue_size
    _assert_no_handler_crash(_drain_errors(toy))


@FUZZ_SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    toy = ToyEmulator()
    session = toy.open_session()
    reply = session.feed(data + b"\n")
    assert isinstance(reply, bytes)
    _still_answers(toy)


@FUZZ_SETTINGS
@given(data=SCPI_LIKE, cuts=st.lists(st.integers(0, 120), max_size=5))
def test_scpi_like_lines_in_any_chunking(data: bytes, cuts: list[int]) -> None:
    """Chunking never changes the result: feeding in pieces equals feeding at once."""
    whole, pieces = ToyEmulator(), ToyEmulator()
    expected = whole.open_session().feed(data + b"\n")
    session = pieces.open_session()
    bounds = sorted({0, len(data) + 1, *(c for c in cuts if c <= len(data))})
    stream = data + b"\n"
    got = b"".join(session.feed(stream[a:b]) for a, b in itertools.pairwise(bounds))
    assert got == expected
    whole_errors = _drain_errors(whole)
    assert [e[0] for e in whole_errors] == [e[0] for e in _drain_errors(pieces)]
    _assert_no_handler_crash(whole_errors)
    _still_answers(pieces)


@FUZZ_SETTINGS
@given(word=st.from_regex(r"[A-Z]{1,10}", fullmatch=True), query=st.booleans())
def test_unknown_header_leaves_113(word: str, query: bool) -> None:
    toy = ToyEmulator()
    header = "ZZ" + word + ("?" if query else "")
    assert toy.feed(f"{header} 1\n".encode()) == b""
    code, message = toy.pop_error()
    assert code == -113 and "Undefined header" in message
    assert toy.feed(b"*IDN?\n") == IDN


@FUZZ_SETTINGS
@given(data=st.binary(max_size=300))
def test_split_program_messages_loses_no_bytes(data: bytes) -> None:
    buf = bytearray(data)
    messages = split_program_messages(buf)
    # every message came off the front, in order, each followed by LF (a CR before it dropped)
    rebuilt = bytearray()
    for m in messages:
        rebuilt += m
        rest = data[len(rebuilt) :]
        if rest.startswith(b"\r\n"):
            rebuilt += b"\r\n"
        else:
            assert rest.startswith(b"\n")
            rebuilt += b"\n"
    assert bytes(rebuilt) + bytes(buf) == data


@FUZZ_SETTINGS
@given(text=st.text(max_size=30))
def test_typed_accessors_raise_only_scpi_errors(text: str) -> None:
    args = Args([text.encode("utf-8")])
    for accessor in (
        lambda: args.float(0, -1e9, 1e9),
        lambda: args.int(0, -10, 10),
        lambda: args.bool(0),
        lambda: args.enum(0, ["SINusoid", "SQUare"], prefix=True, allow_index=True),
        lambda: args.string(0),
        lambda: args.block(0),
        lambda: args.channel_list(0),
    ):
        try:
            accessor()
        except ScpiError as err:
            assert -499 <= err.code <= -100
