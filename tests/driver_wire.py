"""Helpers for the driver wire tests: IEEE 488.2 blocks, structural role checks (no I/O)."""

from __future__ import annotations

import inspect


def ieee_block(payload: bytes) -> bytes:
    """``payload`` framed as an IEEE 488.2 definite-length block ``#<n><length><payload>``."""
    length = str(len(payload)).encode()
    return b"#" + str(len(length)).encode() + length + payload


def assert_implements(cls: type, role: type) -> None:
    """Every member of ``role`` exists on ``cls``; methods take the role's parameters."""
    members = {
        name
        for klass in role.__mro__
        if klass is not object and klass.__name__ != "Protocol" and klass.__name__ != "Generic"
        for name in vars(klass)
        if not name.startswith("_")
    }
    for name in sorted(members):
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        wanted = inspect.getattr_static(role, name)
        if inspect.isfunction(wanted):
            have = inspect.getattr_static(cls, name)
            assert inspect.isfunction(have), f"{cls.__name__}.{name} is not a method"
            want_params = list(inspect.signature(wanted).parameters)
            have_params = list(inspect.signature(have).parameters)
            assert have_params[: len(want_params)] == want_params, (
                f"{cls.__name__}.{name}{have_params} != role {want_params}"
            )
