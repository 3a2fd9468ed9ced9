"""``labrig sim serve`` says how to reach it and when it stops; the README's plain PyVISA client
(with its terminations) talks to it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import pyvisa

from tests.test_sim_serve import start_server


@pytest.mark.slow
def test_a_plain_pyvisa_client_with_newline_terminations_and_a_clean_stop(tmp_path: Path) -> None:
    served = start_server("sim-dnpu", tmp_path / "served.toml")
    process = served.process
    try:
        rm = pyvisa.ResourceManager("@py")
        dac = rm.open_resource(
            served.resources["dac"],
            read_termination="\n",
            write_termination="\n",
            timeout=5000,
        )
        assert "QDAC-II" in dac.query("*IDN?")  # type: ignore[attr-defined]
        dac.write("sour1:volt 0.1")  # type: ignore[attr-defined]
        assert float(dac.query("sour1:volt?")) == pytest.approx(0.1)  # type: ignore[attr-defined]
        dac.close()
        rm.close()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert process.stderr is not None
    err = process.stderr.read()
    assert code == 0
    assert "read_termination='\\n'" in err  # says how to reach it
    assert "SIGINT received; bench stopped" in err  # and that it stopped
