"""What every labrig driver shares through ``instruments.common``."""

from __future__ import annotations

import pytest
from pymeasure.test import expected_protocol

from instruments.keysight_33500b import Keysight33500B
from instruments.keysight_infiniivision import KeysightInfiniiVision
from instruments.qdevil_qdac2 import QDac2
from instruments.srs_sr860 import SR860


@pytest.mark.parametrize("driver", [Keysight33500B, KeysightInfiniiVision, QDac2, SR860])
def test_shutdown_closes_the_connection_even_when_the_safe_state_fails(
    driver: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[bool] = []

    def refuse(self: object) -> None:
        raise OSError("link dropped")

    monkeypatch.setattr(driver, "safe_state", refuse)
    with expected_protocol(driver, []) as instrument:
        monkeypatch.setattr(instrument.adapter, "close", lambda: closed.append(True))
        with pytest.raises(OSError, match="link dropped"):
            instrument.shutdown()
    assert closed == [True]
    assert instrument.isShutdown
