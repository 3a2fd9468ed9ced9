"""The ``hge`` procedure's three gradient read-outs on the default simulated DNPU.

Parallel (digital lock-in on one record), sequential (one sine per record) and hardware lock-ins
must measure the same ``dI/dV`` — and the device's exact one — at a control set where the
gradient is large; digital training must find the six common gates; the CLI must train XNOR with
sequential read-out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from labrig.cli import main
from labrig.procedures.hge import HgeTraining
from labrig.rig import open_rig
from labrig.shell import run_on_station

FloatArray = npt.NDArray[np.float64]
GATES = ("AND", "OR", "NAND", "NOR", "XOR", "XNOR")
TIA_SAFE_NA = 250.0  # keep the candidate well inside the read-out's +-350 nA


def cosine(a: FloatArray, b: FloatArray) -> float:
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def started() -> Iterator[HgeTraining]:
    """An XOR procedure started on the default bench (device seed 0), closed afterwards."""
    proc = HgeTraining(task="XOR")
    with open_rig("sim-dnpu") as rig:  # closing it brings every output to its safe state
        proc.bind_rig(rig)
        proc.startup()
        yield proc


def electrode_voltages(proc: HgeTraining, controls_v: FloatArray) -> FloatArray:
    """``(cases, 7)`` electrode voltages of the task's cases at ``controls_v``."""
    cases = proc._case_inputs_v
    volts = np.zeros((cases.shape[0], len(proc._inputs) + len(proc._controls)))
    volts[:, list(proc._inputs)] = cases
    volts[:, list(proc._controls)] = controls_v
    return volts


def steep_controls(proc: HgeTraining) -> tuple[FloatArray, FloatArray]:
    """Among 200 seeded random control sets, the one with the largest exact Jacobian over the
    four cases whose currents stay well inside the read-out's range; and that Jacobian."""
    rig = proc.require_rig()
    assert rig.built is not None
    model = rig.built.device.model
    ranges = np.array(proc._control_ranges)
    rng = np.random.default_rng(7)
    candidates = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * rng.random((200, ranges.shape[0]))
    volts = np.array([electrode_voltages(proc, c) for c in candidates])
    flat = volts.reshape(-1, volts.shape[-1])
    currents = np.asarray(model.current_na(flat)).reshape(volts.shape[:2])
    jac = np.asarray(model.gradient_na_per_v(flat)).reshape(volts.shape)[..., list(proc._controls)]
    size = np.linalg.norm(jac, axis=(1, 2))
    size[np.abs(currents).max(axis=1) > TIA_SAFE_NA] = -1.0
    best = int(np.argmax(size))
    return candidates[best], jac[best]


@pytest.mark.slow
def test_parallel_sequential_and_lockin_agree_with_the_exact_gradient(
    started: HgeTraining,
) -> None:
    controls, exact = steep_controls(started)
    assert np.linalg.norm(exact) > 100.0  # a point where the gradient matters (nA/V)
    measured = {
        "parallel": started._measure_parallel(controls),
        "sequential": started._measure_sequential(controls),
        "lockin": started._measure_lockin(controls),
    }
    built = started.require_rig().built
    assert built is not None
    expected = built.device.model.current_na(electrode_voltages(started, controls))
    for name, m in measured.items():
        assert not m.clipped, name
        assert m.dI_dV.shape == exact.shape, name
        assert cosine(m.dI_dV, exact) >= 0.95, (name, m.dI_dV, exact)
        # The case means are the device's currents, whichever read-out measured them.
        np.testing.assert_allclose(m.outputs, expected, atol=0.05 * np.abs(expected).max())
    names = list(measured)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert cosine(measured[a].dI_dV, measured[b].dI_dV) >= 0.95, (a, b)
    # Signs carry the information gradient descent needs: every large component agrees.
    large = np.abs(exact) > 0.2 * np.abs(exact).max()
    for name, m in measured.items():
        assert np.all(np.sign(m.dI_dV[large]) == np.sign(exact[large])), name


@pytest.mark.slow
@pytest.mark.parametrize("gate", GATES)
def test_digital_hge_finds_the_common_gates_on_the_default_device(
    gate: str, tmp_path: Path
) -> None:
    proc = HgeTraining(task=gate, mode="digital", max_iterations=60, initializations=2)
    result = run_on_station(proc, "sim-dnpu", runs_dir=tmp_path, echo=False, handle_signals=False)
    s = result.summary
    assert result.status == "success", result.reason
    assert s["found"] is True, s
    assert s["accuracy"] == 1.0
    # Found means separated at DC by the procedure's gap, 1-cases above.
    outputs = np.array(s["outputs_na"])
    targets = np.array(
        [
            float(b)
            for b in {
                "AND": "0001",
                "OR": "0111",
                "NAND": "1110",
                "NOR": "1000",
                "XOR": "0110",
                "XNOR": "1001",
            }[gate]
        ]
    )
    assert outputs[targets == 1].min() - outputs[targets == 0].max() > proc.min_gap_na


@pytest.mark.slow
def test_cli_trains_xnor_with_sequential_readout(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "hge",
            "--task",
            "XNOR",
            "--mode",
            "sequential",
            "--max-iterations",
            "40",
            "--initializations",
            "1",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, out
    assert out["mode"] == "sequential" and out["task"] == "XNOR"
    assert out["found"] is True and out["accuracy"] == 1.0, out
    # five records per iteration: sequential costs about five parallel measurements
    assert out["device_time_s"] > 5 * 0.3 * out["iterations"]


def test_final_judgement_averages_the_confirming_dc_reading(
    started: HgeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gate confirmed at DC with a gap just above ``min_gap_na`` is judged on the mean of that
    reading and the final one, not on the final reading's noise alone."""
    proc = started
    gap = proc.min_gap_na
    controls = np.array([-0.1, -0.5, -0.9, -0.8, 0.1])
    confirm = np.array([10.0, 10.0 + 1.4 * gap, 10.0 + 1.4 * gap, 10.0])  # XOR 0110, gap 1.4x
    fresh = np.array([10.0, 10.0 + 0.8 * gap, 10.0 + 0.8 * gap, 10.0])  # noise: gap 0.8x
    readings = iter([confirm, fresh])
    monkeypatch.setattr(proc, "_dc_outputs", lambda c: next(readings))
    monkeypatch.setattr(proc, "_last_controls", controls)
    monkeypatch.setattr(proc, "_confirmed", None)
    found, _ = proc._found(confirm, proc._task.targets)  # the stop criterion's DC check
    assert found
    monkeypatch.setattr(
        proc._trainer,
        "best",
        {
            "controls_v": controls,
            "loss": 0.5,
            "outputs": confirm,
            "found": True,
            "threshold": 10.0 + 0.7 * gap,
            "init": 0,
            "iteration": 3,
        },
    )
    final = proc._final_measurement()
    assert final["found"] is True  # mean gap 1.1x: found; the fresh reading alone (0.8x) was not
    np.testing.assert_allclose(final["outputs_na"], 0.5 * (confirm + fresh))
