"""A SCPI / IEEE 488.2 parser for the virtual bench's instrument emulators.

An emulator builds a :class:`CommandTree` from patterns written the way instrument manuals write
them, and gives each a ``write`` and/or ``query`` handler::

    tree = CommandTree()
    tree.add("[SOURce#]:FREQuency", write=set_freq, query=get_freq)
    tree.add("OUTPut#[:STATe]", write=set_output, query=get_output)
    tree.add("FREQ", write=..., query=...)          # SR860-style flat mnemonic

Pattern notation:

- upper case is the short form, upper + lower case the long form; a client may send either
  (any case), nothing in between (``FREQ``/``FREQUENCY`` match ``FREQuency``, ``FREQU`` does not);
- ``[...]`` is an optional node (``SYSTem:ERRor[:NEXT]``);
- ``#`` after a mnemonic is an optional numeric suffix (``SOURce#`` matches ``SOUR``, ``SOUR2``);
  the values land in :attr:`Context.suffixes`, in pattern order, ``None`` where omitted;
- ``*IDN`` style common commands live beside the tree and never change the header path.

A handler receives a :class:`Context` (suffixes, header as sent) and :class:`Args` (the
comma-separated parameters, with typed accessors that raise :class:`ScpiError` with the right
standard code). A write handler returns ``None``; a query handler returns the reply body, ``str``
or ``bytes`` (use :func:`format_block` for binary data), without a terminator.

The message-level rules (IEEE 488.2 section 7):

- a program message ends at LF, except inside a quoted string or a definite-length block
  ``#<n><len><bytes>`` (so binary data may contain LF); ``#0`` starts an indefinite block that
  runs to the end of the message;
- ``;`` separates program message units; after ``A:B:C x;D y`` the header ``D`` is resolved
  relative to ``A:B:`` (falling back to the root, as most instruments do); a leading ``:``
  resets to the root; ``*`` commands leave the path alone;
- the replies of several queries in one message are joined by ``;`` on one line.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "STANDARD_ERRORS",
    "Args",
    "CommandTree",
    "Context",
    "HeaderPath",
    "ParsedUnit",
    "QueryHandler",
    "ScpiError",
    "UnterminatedReply",
    "WriteHandler",
    "format_block",
    "format_nr3",
    "iter_message",
    "parse_message",
    "quote_string",
    "split_program_messages",
]

STANDARD_ERRORS: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -105: "GET not allowed",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -110: "Command header error",
    -111: "Header separator error",
    -112: "Program mnemonic too long",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -120: "Numeric data error",
    -121: "Invalid character in number",
    -123: "Exponent too large",
    -124: "Too many digits",
    -128: "Numeric data not allowed",
    -131: "Invalid suffix",
    -134: "Suffix too long",
    -138: "Suffix not allowed",
    -140: "Character data error",
    -141: "Invalid character data",
    -144: "Character data too long",
    -148: "Character data not allowed",
    -150: "String data error",
    -151: "Invalid string data",
    -158: "String data not allowed",
    -160: "Block data error",
    -161: "Invalid block data",
    -168: "Block data not allowed",
    -170: "Expression error",
    -200: "Execution error",
    -203: "Command protected",
    -210: "Trigger error",
    -211: "Trigger ignored",
    -213: "Init ignored",
    -214: "Trigger deadlock",
    -220: "Parameter error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -225: "Out of memory",
    -230: "Data corrupt or stale",
    -240: "Hardware error",
    -241: "Hardware missing",
    -250: "Mass storage error",
    -256: "File name not found",
    -257: "File name error",
    -300: "Device-specific error",
    -310: "System error",
    -313: "Calibration memory lost",
    -330: "Self-test failed",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
    -400: "Query error",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
    -430: "Query DEADLOCKED",
    -440: "Query UNTERMINATED after indefinite response",
}


class ScpiError(Exception):
    """An error an instrument reports through its error queue / status bytes.

    Raise it inside a handler; the emulator queues ``(code, message)`` and sends no reply for a
    failing query. ``message`` defaults to the standard text for ``code``; ``detail`` is extra
    device-dependent information (value, limit) that the emulator may append after ``;``::

        raise ScpiError(-222, detail="frequency 5e+07 Hz above maximum 3e+07 Hz")
    """

    def __init__(self, code: int, message: str | None = None, *, detail: str | None = None) -> None:
        self.code = int(code)
        self.message = message if message is not None else STANDARD_ERRORS.get(code, "Error")
        self.detail = detail
        text = f"{self.code},{self.message}"
        super().__init__(f"{text}; {detail}" if detail else text)


# --------------------------------------------------------------------------- message framing

# Bytes that need attention while scanning for the end of a message: the terminator, quotes
# (LF inside quotes is data), and '#' (a block may hold any byte).
_FRAMING_SPECIAL = re.compile(rb"[\n\"'#]")


def _skip_block(buf: bytes | bytearray, pos: int) -> int | None:
    """``buf[pos] == '#'``: return the index just after a definite-length block starting there.

    Returns ``pos + 1`` when the ``#`` does not start a definite block (``#0``, ``#H1F``, a
    malformed length — the parameter parser reports those), and ``None`` when the block is
    not complete yet.
    """
    if pos + 1 >= len(buf):
        return None
    n_char = buf[pos + 1]
    if not 0x31 <= n_char <= 0x39:  # '1'..'9'; '#0' is indefinite and ends with the message
        return pos + 1
    n = n_char - 0x30
    if pos + 2 + n > len(buf):
        return None
    digits = bytes(buf[pos + 2 : pos + 2 + n])
    if not digits.isdigit():
        return pos + 1
    end = pos + 2 + n + int(digits)
    if end > len(buf):
        return None
    return end


def split_program_messages(buffer: bytearray) -> list[bytes]:
    """Remove the complete program messages from ``buffer`` and return them (terminator removed).

    A message ends at LF outside quoted strings and definite-length blocks; a trailing CR is
    dropped too. The incomplete tail stays in ``buffer`` for the next call, so a transport can
    call this after every ``recv`` with any chunking::

        buf = bytearray()
        buf += sock.recv(65536)
        for message in split_program_messages(buf):
            ...
    """
    messages: list[bytes] = []
    start = 0
    pos = 0
    quote: int | None = None
    n = len(buffer)
    while pos < n:
        if quote is not None:
            # Inside a quoted string only the same quote matters (a doubled quote re-enters).
            q = buffer.find(quote, pos)
            if q < 0:
                break
            quote = None
            pos = q + 1
            continue
        m = _FRAMING_SPECIAL.search(buffer, pos)
        if m is None:
            break
        pos = m.start()
        c = buffer[pos]
        if c == 0x0A:
            msg = bytes(buffer[start:pos])
            if msg.endswith(b"\r"):
                msg = msg[:-1]
            messages.append(msg)
            pos += 1
            start = pos
        elif c in (0x22, 0x27):
            quote = c
            pos += 1
        else:
            after = _skip_block(buffer, pos)
            if after is None:
                break
            pos = after
    if start:
        del buffer[:start]
    return messages


# --------------------------------------------------------------------------- unit parsing

_UNIT_SPECIAL = re.compile(rb"[;,\"'#()]")
_HEADER_RE = re.compile(
    r"^(\*[A-Za-z][A-Za-z0-9_]*|:?[A-Za-z][A-Za-z0-9_]*(:[A-Za-z][A-Za-z0-9_]*)*)\??$"
)


@dataclass
class ParsedUnit:
    """One program message unit: ``header`` as sent (``?`` removed), query flag, parameters."""

    header: str
    is_query: bool
    params: list[bytes]
    error: ScpiError | None = None


def _split_units(message: bytes) -> Iterator[tuple[bytes, list[bytes]]]:
    """Split a message into units (on ``;``) and each unit's text into header and parameters.

    Separators inside quotes, blocks and parentheses (channel lists) are data. Yields
    ``(header_bytes, [param_bytes, ...])`` one unit at a time (a long chain is parsed as it is
    run); parameters are not stripped of surrounding blanks.
    """
    n = len(message)
    pos = 0
    while pos <= n:
        # Header: skip leading blanks, then up to the first blank or ';'.
        while pos < n and message[pos] in b" \t\r":
            pos += 1
        h_start = pos
        while pos < n and message[pos] not in b" \t;":
            pos += 1
        header = message[h_start:pos]
        params: list[bytes] = []
        if pos < n and message[pos] in b" \t":
            p_start = pos
            depth = 0
            while True:
                m = _UNIT_SPECIAL.search(message, pos)
                if m is None:
                    pos = n
                    break
                pos = m.start()
                c = message[pos]
                if c == 0x3B and depth == 0:  # ';'
                    break
                if c == 0x2C and depth == 0:  # ','
                    params.append(message[p_start:pos])
                    pos += 1
                    p_start = pos
                elif c in (0x22, 0x27):
                    q = pos + 1
                    while True:
                        q = message.find(c, q)
                        if q < 0:
                            q = n - 1  # unterminated: the parameter parser reports -151
                            break
                        if q + 1 < n and message[q + 1] == c:  # doubled quote
                            q += 2
                            continue
                        break
                    pos = q + 1
                elif c == 0x23:  # '#'
                    if pos + 1 < n and message[pos + 1] == 0x30:  # '#0' runs to the end
                        pos = n
                        break
                    after = _skip_block(message, pos)
                    pos = n if after is None else after
                elif c == 0x28:
                    depth += 1
                    pos += 1
                elif c == 0x29:
                    depth = max(0, depth - 1)
                    pos += 1
                else:  # ',' inside parentheses
                    pos += 1
            params.append(message[p_start:pos])
            if len(params) == 1 and not params[0].strip():
                params = []
        if header or params:
            yield header, params
        if pos < n and message[pos] == 0x3B:
            pos += 1
            continue
        break


def parse_message(message: bytes) -> list[ParsedUnit]:
    """Parse one program message (no terminator) into units.

    A unit whose header is malformed carries ``error`` (-102 syntax error) instead of failing
    the whole message.
    """
    return list(iter_message(message))


def iter_message(message: bytes) -> Iterator[ParsedUnit]:
    """:func:`parse_message`, one unit at a time."""
    for header_b, params in _split_units(message):
        header = header_b.decode("latin-1")
        if not header:
            yield ParsedUnit("", False, params, ScpiError(-102, detail="missing header"))
            continue
        if not _HEADER_RE.match(header):
            yield ParsedUnit(header, False, params, ScpiError(-102, detail=f"header {header!r}"))
            continue
        is_query = header.endswith("?")
        yield ParsedUnit(header[:-1] if is_query else header, is_query, params)


# --------------------------------------------------------------------------- parameters

_NUMBER_RE = re.compile(
    r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%][\w/%]*)?\s*$"
)
_INT_RE = re.compile(r"^[+-]?\d+$")
_NONDECIMAL_RE = re.compile(r"^#([HhQqBb])([0-9A-Fa-f]+)$")


def _mnemonic_forms(word: str) -> tuple[str, str]:
    """``"SINusoid"`` -> ``("SIN", "SINUSOID")``; a word without lower case has one form."""
    short = "".join(ch for ch in word if not ch.islower())
    i = len(short)
    if word[:i] != short or not word[:i]:
        raise ValueError(
            f"mnemonic {word!r}: the short form (upper case) must be a non-empty prefix"
        )
    return short.upper(), word.upper()


def _matches_mnemonic(text: str, word: str) -> bool:
    short, long = _mnemonic_forms(word)
    t = text.upper()
    return t in (short, long)


class Args:
    """The parameters of one command, split on commas (quotes, blocks, channel lists respected).

    Typed accessors parse parameter ``i`` and raise :class:`ScpiError` with the standard code:
    -109 missing, -108 too many, -104 wrong type, -131 bad unit, -222 out of range,
    -224 illegal value, -151 bad string, -161 bad block::

        def set_freq(ctx, args):
            args.require(1, 1)
            hz = args.float(0, 1e-6, 30e6, keywords={"MINimum": 1e-6, "MAXimum": 30e6})
    """

    def __init__(self, params: Sequence[bytes], header: str = "") -> None:
        self._params = list(params)
        self.header = header

    def __len__(self) -> builtins.int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"Args({[self.raw(i) for i in range(len(self))]!r})"

    def _where(self, i: builtins.int) -> str:
        return f"{self.header} parameter {i + 1}" if self.header else f"parameter {i + 1}"

    def raw(self, i: builtins.int) -> str:
        """Parameter ``i`` as sent, blanks stripped (binary bytes decoded as Latin-1)."""
        if i >= len(self._params) or i < 0:
            raise ScpiError(-109, detail=f"{self._where(i)} missing")
        return self._params[i].decode("latin-1").strip()

    def raw_bytes(self, i: builtins.int) -> bytes:
        """Parameter ``i`` exactly as received (no stripping)."""
        if i >= len(self._params) or i < 0:
            raise ScpiError(-109, detail=f"{self._where(i)} missing")
        return self._params[i]

    def has(self, i: builtins.int) -> builtins.bool:
        """True when parameter ``i`` was sent and is not empty."""
        return 0 <= i < len(self._params) and bool(self._params[i].strip())

    def require(self, n_min: builtins.int, n_max: builtins.int | None = None) -> None:
        """Check the parameter count: fewer than ``n_min`` -> -109, more than ``n_max`` -> -108."""
        n = len(self._params)
        if n < n_min:
            raise ScpiError(-109, detail=f"{self.header or 'command'} needs {n_min}, got {n}")
        if n_max is not None and n > n_max:
            raise ScpiError(-108, detail=f"{self.header or 'command'} takes {n_max}, got {n}")

    def _text_or_default(self, i: builtins.int) -> str | None:
        if i < len(self._params):
            text = self.raw(i)
            if text:
                return text
        return None

    def float(
        self,
        i: builtins.int,
        lo: builtins.float | None = None,
        hi: builtins.float | None = None,
        *,
        keywords: Mapping[str, builtins.float] | None = None,
        default: builtins.float | None = None,
        units: Mapping[str, builtins.float] | None = None,
    ) -> builtins.float:
        """Parameter ``i`` as a number (NR1/NR2/NR3, ``#H``/``#Q``/``#B``).

        ``keywords`` maps SCPI mnemonics to values (``{"MINimum": 1e-3, "MAXimum": 1e6,
        "INFinity": math.inf}``); keyword values skip the range check. ``units`` maps unit
        suffixes (case-insensitive) to multipliers (``{"V": 1, "MV": 1e-3}``); a suffix not in
        it is -131. ``default`` is returned when the parameter is absent (else -109). A value
        outside ``[lo, hi]`` is -222 (never clipped).
        """
        text = self._text_or_default(i)
        if text is None:
            if default is not None:
                return default
            raise ScpiError(-109, detail=f"{self._where(i)} missing")
        if keywords:
            for word, value in keywords.items():
                if _matches_mnemonic(text, word):
                    return float(value)
        value = self._parse_number(text, i, units)
        if not math.isfinite(value):
            raise ScpiError(-222, detail=f"{self._where(i)} {text!r} is not finite")
        if lo is not None and value < lo:
            raise ScpiError(-222, detail=f"{self._where(i)} {value!r} below minimum {lo!r}")
        if hi is not None and value > hi:
            raise ScpiError(-222, detail=f"{self._where(i)} {value!r} above maximum {hi!r}")
        return value

    def _parse_number(
        self, text: str, i: builtins.int, units: Mapping[str, builtins.float] | None
    ) -> builtins.float:
        m = _NUMBER_RE.match(text)
        if m is None:
            nd = _NONDECIMAL_RE.match(text)
            if nd is not None:
                base = {"H": 16, "Q": 8, "B": 2}[nd.group(1).upper()]
                try:
                    return float(int(nd.group(2), base))
                except ValueError:
                    raise ScpiError(-121, detail=f"{self._where(i)} {text!r}") from None
                except OverflowError:
                    raise ScpiError(
                        -222, detail=f"{self._where(i)} {text[:12]}... too large"
                    ) from None
            raise ScpiError(-104, detail=f"{self._where(i)} {text!r} is not a number")
        value = float(m.group(1))
        suffix = m.group(2)
        if suffix:
            if not units:
                raise ScpiError(-131, detail=f"{self._where(i)} unit {suffix!r} not allowed")
            mult = None
            for unit, factor in units.items():
                if unit.upper() == suffix.upper():
                    mult = factor
                    break
            if mult is None:
                raise ScpiError(-131, detail=f"{self._where(i)} unit {suffix!r} not accepted")
            value *= mult
        return value

    def int(
        self,
        i: builtins.int,
        lo: builtins.int | None = None,
        hi: builtins.int | None = None,
        *,
        keywords: Mapping[str, builtins.int] | None = None,
        default: builtins.int | None = None,
    ) -> builtins.int:
        """Parameter ``i`` as an integer; decimals are rounded to the nearest integer (IEEE
        488.2 7.7.2.4). ``keywords``/``default``/range as in :meth:`float`."""
        text = self._text_or_default(i)
        if text is None:
            if default is not None:
                return default
            raise ScpiError(-109, detail=f"{self._where(i)} missing")
        if keywords:
            for word, kv in keywords.items():
                if _matches_mnemonic(text, word):
                    return int(kv)
        if _INT_RE.match(text):
            if len(text) > 40:  # beyond any range, and beyond int()'s digit limit
                raise ScpiError(
                    -222, detail=f"{self._where(i)} {text[:12]}... has {len(text)} digits"
                )
            value = int(text)
        else:
            number = self._parse_number(text, i, None)
            if not math.isfinite(number):
                raise ScpiError(-222, detail=f"{self._where(i)} {text!r} is not finite")
            value = round(number)
        if lo is not None and value < lo:
            raise ScpiError(-222, detail=f"{self._where(i)} {value} below minimum {lo}")
        if hi is not None and value > hi:
            raise ScpiError(-222, detail=f"{self._where(i)} {value} above maximum {hi}")
        return value

    def bool(self, i: builtins.int, *, default: builtins.bool | None = None) -> builtins.bool:
        """Parameter ``i`` as a boolean: ``ON``/``OFF`` or a number (non-zero after rounding is
        on). Anything else is -224."""
        text = self._text_or_default(i)
        if text is None:
            if default is not None:
                return default
            raise ScpiError(-109, detail=f"{self._where(i)} missing")
        up = text.upper()
        if up == "ON":
            return True
        if up == "OFF":
            return False
        m = _NUMBER_RE.match(text)
        if m is not None and not m.group(2):
            number = float(m.group(1))
            if not math.isfinite(number):  # "inf": neither on nor off (round() would overflow)
                raise ScpiError(-224, detail=f"{self._where(i)} {text!r} is not ON/OFF/1/0")
            return round(number) != 0
        raise ScpiError(-224, detail=f"{self._where(i)} {text!r} is not ON/OFF/1/0")

    def enum(
        self,
        i: builtins.int,
        choices: Sequence[str],
        *,
        default: str | None = None,
        allow_index: builtins.bool = False,
        prefix: builtins.bool = False,
    ) -> str:
        """Parameter ``i`` as one of ``choices`` (SCPI mnemonic notation, e.g. ``["SINusoid",
        "SQUare", "ARB"]``); returns the matching choice as written in ``choices``.

        ``allow_index``: an integer selects ``choices[n]`` (SR860 style ``RSRC 1``).
        ``prefix``: any abbreviation at least as long as the short form is accepted (SR860 style
        ``TH``, ``THE`` for ``THeta``). Anything else is -224.
        """
        text = self._text_or_default(i)
        if text is None:
            if default is not None:
                return default
            raise ScpiError(-109, detail=f"{self._where(i)} missing")
        up = text.upper()
        for choice in choices:
            short, long = _mnemonic_forms(choice)
            if up in (short, long):
                return choice
            if prefix and len(up) >= len(short) and long.startswith(up):
                return choice
        if allow_index and _INT_RE.match(text):
            if len(text) > 40:
                raise ScpiError(-222, detail=f"{self._where(i)} index of {len(text)} digits")
            n = int(text)
            if 0 <= n < len(choices):
                return choices[n]
            raise ScpiError(-222, detail=f"{self._where(i)} index {n} not in 0..{len(choices) - 1}")
        names = "/".join(choices)
        raise ScpiError(-224, detail=f"{self._where(i)} {text!r} not one of {names}")

    def string(self, i: builtins.int, *, default: str | None = None) -> str:
        """Parameter ``i`` as a string: ``"..."`` or ``'...'`` (doubled quotes inside are one
        quote), or bare character data as sent. An unterminated quote is -151."""
        if i >= len(self._params):
            if default is not None:
                return default
            raise ScpiError(-109, detail=f"{self._where(i)} missing")
        text = self.raw(i)
        if text[:1] in ('"', "'"):
            q = text[0]
            body = text[1:-1]
            if len(text) < 2 or text[-1] != q or body.replace(q + q, "").find(q) >= 0:
                raise ScpiError(-151, detail=f"{self._where(i)} {text!r}")
            return body.replace(q + q, q)
        return text

    def block(self, i: builtins.int) -> bytes:
        """Parameter ``i`` as an IEEE 488.2 block (``#<n><len><bytes>`` or ``#0<bytes>``);
        returns the payload. A malformed block (wrong length, no ``#``) is -161."""
        data = self.raw_bytes(i).lstrip(b" \t")
        if not data.startswith(b"#") or len(data) < 2:
            raise ScpiError(-161, detail=f"{self._where(i)} is not a block")
        n_char = data[1]
        if n_char == 0x30:  # '#0': indefinite, to the end of the message
            return data[2:]
        if not 0x31 <= n_char <= 0x39:
            raise ScpiError(-161, detail=f"{self._where(i)} bad length digit")
        n = n_char - 0x30
        digits = data[2 : 2 + n]
        if len(digits) != n or not digits.isdigit():
            raise ScpiError(-161, detail=f"{self._where(i)} bad length field")
        length = int(digits)
        payload = data[2 + n :]
        if len(payload) < length or payload[length:].strip(b" \t\r"):
            raise ScpiError(
                -161, detail=f"{self._where(i)} declares {length} bytes, got {len(payload)}"
            )
        return payload[:length]

    def is_block(self, i: builtins.int) -> builtins.bool:
        """True when parameter ``i`` looks like a binary block (starts with ``#<digit>``)."""
        if not 0 <= i < len(self._params):
            return False
        data = self._params[i].lstrip(b" \t")
        return len(data) >= 2 and data[0] == 0x23 and 0x30 <= data[1] <= 0x39

    def numbers(
        self,
        start: builtins.int = 0,
        *,
        lo: builtins.float | None = None,
        hi: builtins.float | None = None,
    ) -> list[builtins.float]:
        """Parameters ``start..`` as a list of numbers (an ASCII data list); each in
        ``[lo, hi]`` if given."""
        return [self.float(j, lo, hi) for j in range(start, len(self._params))]

    def channel_list(
        self, i: builtins.int, lo: builtins.int | None = None, hi: builtins.int | None = None
    ) -> list[builtins.int]:
        """Parameter ``i`` as a channel list: ``(@1,2:4)`` -> ``[1, 2, 3, 4]`` (``(@4:2)`` ->
        ``[4, 3, 2]``, order kept). Not a list -> -104; malformed -> -102; out of range -222."""
        text = self.raw(i)
        if not (text.startswith("(@") and text.endswith(")")):
            raise ScpiError(-104, detail=f"{self._where(i)} {text!r} is not a channel list")
        body = text[2:-1].strip()
        channels: list[builtins.int] = []
        if not body:
            return channels
        ranges: list[tuple[builtins.int, builtins.int]] = []
        total = 0
        for part in body.split(","):
            a, sep, b = part.strip().partition(":")
            if len(a) > 20 or len(b) > 20:  # no channel number is that long (nor int()-able)
                raise ScpiError(-222, detail=f"{self._where(i)} channel number too long")
            try:
                first = int(a)
                last = int(b) if sep else first
            except ValueError:
                raise ScpiError(-102, detail=f"{self._where(i)} {text!r}") from None
            # Check the ends before expanding: (@1:30000000) must not build a huge list.
            for ch in (first, last):
                if (lo is not None and ch < lo) or (hi is not None and ch > hi):
                    raise ScpiError(
                        -222, detail=f"{self._where(i)} channel {ch} outside {lo}..{hi}"
                    )
            total += abs(last - first) + 1
            if total > MAX_CHANNEL_LIST:
                raise ScpiError(
                    -223, detail=f"{self._where(i)} more than {MAX_CHANNEL_LIST} channels"
                )
            ranges.append((first, last))
        for first, last in ranges:
            step = 1 if last >= first else -1
            channels.extend(range(first, last + step, step))
        return channels

    def is_channel_list(self, i: builtins.int) -> builtins.bool:
        """True when parameter ``i`` is a channel list ``(@...)``."""
        return 0 <= i < len(self._params) and self.raw(i).startswith("(@")


#: Entries a channel list may expand to (repeats included), checked before expanding.
MAX_CHANNEL_LIST = 10_000

# --------------------------------------------------------------------------- command tree

WriteHandler = Callable[["Context", Args], None]
QueryHandler = Callable[["Context", Args], "str | bytes"]


@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    suffix: bool
    optional: bool

    def match(self, token: str) -> tuple[bool, int | None]:
        """Does ``token`` (upper case) name this node? Returns (matched, suffix value)."""
        if token == self.short or token == self.long:
            return True, None
        if self.suffix:
            for form in (self.long, self.short):
                if token.startswith(form):
                    rest = token[len(form) :]
                    if rest.isdigit():
                        return True, int(rest)
        return False, None


@dataclass
class _Route:
    nodes: tuple[_Node, ...]
    pattern: str
    write: WriteHandler | None = None
    query: QueryHandler | None = None


@dataclass(frozen=True)
class HeaderPath:
    """Where relative headers resolve from: the header's nodes *as the client sent them*
    (upper-cased, with their numeric suffixes), minus the last one (IEEE 488.2 7.6.1). Optional
    nodes the client left out are not part of it."""

    tokens: tuple[str, ...] = ()


ROOT = HeaderPath()


@dataclass
class Context:
    """What a handler knows about the command it is running.

    ``suffixes`` holds one entry per ``#`` in the pattern, in order; ``None`` where the client
    omitted it. ``suffix(i, default)`` applies the default and, with ``lo``/``hi``, the range
    check (-114)::

        ch = ctx.suffix(0, default=1, lo=1, hi=2)   # SOURce# -> channel 1 or 2
    """

    header: str
    is_query: bool = False
    suffixes: tuple[int | None, ...] = ()
    pattern: str = ""
    path: HeaderPath = field(default_factory=HeaderPath)

    def suffix(
        self, i: int = 0, default: int = 1, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        """Numeric suffix ``i`` (``default`` when omitted); outside ``[lo, hi]`` is -114."""
        value = self.suffixes[i] if i < len(self.suffixes) else None
        n = default if value is None else value
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            raise ScpiError(-114, detail=f"{self.header}: suffix {n} outside {lo}..{hi}")
        return n


_MNEMONIC = r"[A-Za-z][A-Za-z0-9_]*#?"
# first node: "[:M]" / ":M" / "M"; then "[:M]" / ":M"
_PATTERN_RE = re.compile(rf"(?:\[:?{_MNEMONIC}\]|:?{_MNEMONIC})(?:\[:{_MNEMONIC}\]|:{_MNEMONIC})*")
_PATTERN_NODE_RE = re.compile(r"(\[)?:?([A-Za-z][A-Za-z0-9_]*)(#)?\]?")


def _parse_pattern(pattern: str) -> tuple[_Node, ...]:
    """``"[SOURce#]:FUNCtion:ARBitrary"`` -> nodes. Raises ValueError on a malformed pattern."""
    nodes: list[_Node] = []
    text = pattern.strip()
    if text.endswith("?"):
        text = text[:-1]
    if text.startswith("*"):
        word = text.upper()
        return (_Node(word, word, False, False),)
    if not _PATTERN_RE.fullmatch(text):
        raise ValueError(f"bad SCPI pattern {pattern!r}")
    for m in _PATTERN_NODE_RE.finditer(text):
        short, long = _mnemonic_forms(m.group(2))
        nodes.append(_Node(short, long, bool(m.group(3)), bool(m.group(1))))
    if not nodes:
        raise ValueError(f"empty SCPI pattern {pattern!r}")
    if all(node.optional for node in nodes):
        raise ValueError(f"SCPI pattern {pattern!r} has no required node")
    return tuple(nodes)


def _match_route(
    nodes: Sequence[_Node], tokens: Sequence[str]
) -> tuple[list[int | None], list[bool]] | None:
    """Match header ``tokens`` against ``nodes`` (optional nodes may be skipped).

    Returns (suffix per node, present per node) or None. Patterns are short, so plain
    backtracking is fine.
    """
    suffixes: list[int | None] = [None] * len(nodes)
    present: list[bool] = [False] * len(nodes)

    def walk(ni: int, ti: int) -> bool:
        if ni == len(nodes):
            return ti == len(tokens)
        node = nodes[ni]
        if ti < len(tokens):
            ok, value = node.match(tokens[ti])
            if ok:
                suffixes[ni], present[ni] = value, True
                if walk(ni + 1, ti + 1):
                    return True
                suffixes[ni], present[ni] = None, False
        return node.optional and walk(ni + 1, ti)

    return (suffixes, present) if walk(0, 0) else None


class CommandTree:
    """The command set of one instrument: patterns -> write/query handlers.

    Add commands with :meth:`add`; :meth:`resolve` finds the handler for a header. Adding the
    same pattern again replaces the handlers given (the other kind is kept); :meth:`remove`
    deletes a pattern.
    """

    def __init__(self) -> None:
        self._routes: dict[tuple[_Node, ...], _Route] = {}
        # prefix -> routes having that prefix (prefix may be empty = root)
        self._by_prefix: dict[tuple[_Node, ...], list[_Route]] = {}
        self._cache: dict[
            tuple[HeaderPath, str, bool], tuple[_Route, tuple[int | None, ...], HeaderPath] | None
        ] = {}

    def add(
        self,
        pattern: str,
        *,
        write: WriteHandler | None = None,
        query: QueryHandler | None = None,
    ) -> None:
        """Register ``pattern`` with a ``write`` and/or ``query`` handler."""
        if write is None and query is None:
            raise ValueError(f"{pattern!r}: give a write or a query handler")
        nodes = _parse_pattern(pattern)
        route = self._routes.get(nodes)
        if route is None:
            route = _Route(nodes, pattern)
            self._routes[nodes] = route
            for k in range(len(nodes)):
                self._by_prefix.setdefault(nodes[:k], []).append(route)
        if write is not None:
            route.write = write
        if query is not None:
            route.query = query
        self._cache.clear()

    def remove(self, pattern: str, *, write: bool = True, query: bool = True) -> None:
        """Remove the write and/or query handler of ``pattern`` (KeyError if unknown)."""
        nodes = _parse_pattern(pattern)
        route = self._routes[nodes]
        if write:
            route.write = None
        if query:
            route.query = None
        if route.write is None and route.query is None:
            del self._routes[nodes]
            for k in range(len(nodes)):
                self._by_prefix[nodes[:k]].remove(route)
        self._cache.clear()

    def patterns(self) -> list[str]:
        """All registered patterns, in registration order."""
        return [route.pattern for route in self._routes.values()]

    def resolve(
        self, header: str, is_query: bool, current_path: HeaderPath | None = None
    ) -> tuple[Callable[..., object], Context]:
        """Find the handler for ``header`` (without ``?``) sent in the context of
        ``current_path`` (``None`` = root). Returns ``(handler, context)``; ``context.path`` is
        the header path for the next unit of the same message. Unknown header, or a route that
        lacks the requested kind (query of a write-only command) -> ScpiError(-113).
        """
        path = current_path or ROOT
        key = (path, header.upper(), is_query)
        hit = self._cache.get(key)
        if hit is None and key not in self._cache:
            hit = self._lookup(header, is_query, path)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = hit
        if hit is None:
            raise ScpiError(-113, detail=f"{header}{'?' if is_query else ''}")
        route, suffixes, new_path = hit
        handler = route.query if is_query else route.write
        assert handler is not None  # _lookup only returns routes with the handler
        ctx = Context(header, is_query, suffixes, route.pattern, new_path)
        return handler, ctx

    def _lookup(
        self, header: str, is_query: bool, path: HeaderPath
    ) -> tuple[_Route, tuple[int | None, ...], HeaderPath] | None:
        up = header.upper()
        if up.startswith("*"):
            route = self._routes.get((_Node(up, up, False, False),))
            if route is None or (route.query if is_query else route.write) is None:
                return None
            # common commands leave the header path where it was
            return route, (), path
        absolute = up.startswith(":")
        tokens = up.lstrip(":").split(":")
        # A relative header is the path's nodes followed by its own; failing that (a client
        # that relies on a looser rule) it is tried from the root.
        candidates = [tokens] if absolute or not path.tokens else [[*path.tokens, *tokens], tokens]
        for full in candidates:
            found = self._lookup_from(full, is_query)
            if found is not None:
                route, slots, _ = found
                return route, slots, HeaderPath(tuple(full[:-1]))
        return None

    def _lookup_from(
        self, tokens: list[str], is_query: bool
    ) -> tuple[_Route, tuple[int | None, ...], HeaderPath] | None:
        """Match ``tokens`` (a full header from the root) against every route."""
        best: tuple[int, _Route, tuple[int | None, ...]] | None = None
        for route in self._by_prefix.get((), ()):
            if (route.query if is_query else route.write) is None:
                continue
            matched = _match_route(route.nodes, tokens)
            if matched is None:
                continue
            node_suffixes, present = matched
            skipped = present.count(False)
            # Prefer the route that matches with the fewest skipped optional nodes.
            if best is None or skipped < best[0]:
                best = (skipped, route, tuple(node_suffixes))
        if best is None:
            return None
        _, route, suffixes = best
        # Only the '#' positions of the pattern are reported to the handler.
        slots = tuple(s for node, s in zip(route.nodes, suffixes, strict=True) if node.suffix)
        return route, slots, HeaderPath(tuple(tokens[:-1]))


# --------------------------------------------------------------------------- formatting


def format_nr3(x: float, digits: int = 15) -> str:
    """``x`` in Keysight NR3 style, ``+1.000000000000000E+03``, exact on read-back.

    ``digits`` is the number of decimals; if that does not round-trip the float, one more digit
    is used (16 decimals always do). SCPI's 9.9E37 stands for infinity, 9.91E37 for NaN.
    """
    if math.isnan(x):
        return "+9.91000000E+37"
    if math.isinf(x):
        return "+9.90000000E+37" if x > 0 else "-9.90000000E+37"
    text = f"{x:+.{digits}E}"
    if float(text) != x and digits < 16:
        text = f"{x:+.16E}"
    return text


class UnterminatedReply(bytes):
    """A query reply the instrument sends with no response terminator after it.

    IEEE 488.2 lets an instrument end a definite-length block with EOI alone; over a socket
    that means the block is the last byte of the reply. The SR860 sends ``CAPTUREGET?`` that
    way, the InfiniiVision follows ``:WAV:DATA?`` with a line feed. A query handler returns
    this type (see :func:`format_block`) and the emulator then appends no terminator, when it
    is the last reply of its message.
    """


def format_block(payload: bytes, *, terminated: bool = True) -> bytes:
    """IEEE 488.2 definite-length block: ``b"#<n><len>" + payload`` (``#10`` when empty).

    ``terminated=False`` marks the reply as sent without a terminator after the block
    (:class:`UnterminatedReply`).
    """
    length = str(len(payload)).encode("ascii")
    block = b"#" + str(len(length)).encode("ascii") + length + payload
    return block if terminated else UnterminatedReply(block)


def quote_string(text: str) -> str:
    """``text`` as SCPI string data: in double quotes, inner double quotes doubled."""
    return '"' + text.replace('"', '""') + '"'
