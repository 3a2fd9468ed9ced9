"""Bad input is refused before a run folder exists: one line naming the flag, exit code 2.

Each case is one the operator's first hour hit (issue 16): a bad station file or name, a station
for the other rig, an unknown task, a learning rate of 0, values out of their declared range.
Before, most of these created a failed, empty run and printed a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labrig.cli import build_parser, main
from labrig.station import builtin_station_path


def _refused(argv: list[str], runs: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``labrig argv`` and return its one-line error, after checking the refusal."""
    code = main([*argv, "--out", str(runs)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (code, captured.out, captured.err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("labrig: error: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was created"
    return lines[0]


@pytest.fixture
def bad_toml(tmp_path: Path) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text("[station\nname = 'x'\n")
    return path


CASES = [
    # (argv, words the one line must hold)
    (["train", "hge", "--station", "no-such-station.toml"], ["--station", "no-such-station.toml"]),
    (["train", "hge", "--station", "sim-nope"], ["--station", "sim-nope", "built-in"]),
    (["train", "hge", "--station", "sim-reservoir"], ["--station", "reservoir", "dnpu"]),
    (["train", "dfa", "--station", "sim-dnpu"], ["--station", "dnpu", "reservoir"]),
    (["measure", "iv", "--station", "sim-reservoir"], ["--station", "dnpu"]),
    (["measure", "transfer", "--station", "sim-dnpu"], ["--station", "reservoir"]),
    (["train", "hge", "--task", "NOPE"], ["--task", "NOPE", "sphere", "ring", "XOR"]),
    (["train", "dfa", "--task", "nope"], ["--task", "nope", "digits", "narma10"]),
    (["train", "dfa", "--task", "mnist:/no/such/folder"], ["--task", "mnist:/no/such/folder"]),
    (["train", "hge", "--learning-rate", "0"], ["--learning-rate", "0"]),
    (["train", "dfa", "--learning-rate", "0"], ["--learning-rate", "0"]),
    (["train", "dfa", "--learning-rate", "-1"], ["--learning-rate", "-1", "[0, 100]"]),
    (["train", "hge", "--mode", "fast"], ["--mode", "fast", "digital", "lockin"]),
    (["train", "hge", "--seed", "1.5"], ["--seed", "1.5", "whole"]),
    (["train", "hge", "--max-iterations", "0"], ["--max-iterations", "0", "[1, 10000]"]),
    (["train", "dfa", "--nodes", "500"], ["--nodes", "500", "node_count 100", "sim-reservoir"]),
    (["measure", "iv", "--electrode", "9"], ["--electrode", "9", "[0, 6]"]),
    (["measure", "iv", "--start", "1.0"], ["--start-v", "1.0", "activation range", "sim-dnpu"]),
    (["measure", "iv", "--settle", "-1 s"], ["--settle-s", "'-1 s'", "[0, 10] s"]),
    (["measure", "transfer", "--points", "many"], ["--points", "many"]),
]


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(a[1:]) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_no_run(
    argv: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refused(argv, tmp_path / "runs", capsys)
    for word in words:
        assert word in line, (word, line)
    assert "learning_rate" not in line and "'task'" not in line  # flags, not Python names


def test_a_station_file_that_is_not_toml(
    bad_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refused(["train", "hge", "--station", str(bad_toml)], tmp_path / "runs", capsys)
    assert str(bad_toml) in line and "TOML" in line


def test_learning_rate_zero_is_refused_alike_for_dfa_and_hge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("hge", "dfa"):
        line = _refused(["train", command, "--learning-rate", "0"], tmp_path / "r", capsys)
        assert line.startswith("labrig: error: --learning-rate 0 ")


def _help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_task_help_and_error_list_the_same_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labrig.procedures.hge import HgeTraining

    declared = HgeTraining.task.help
    assert "sphere" in declared and "ring" in declared
    assert declared in _help_of(["train", "hge"], capsys)
    line = _refused(["train", "hge", "--task", "NOPE"], tmp_path / "runs", capsys)
    assert declared in line


def test_help_is_generated_from_the_declared_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hge = _help_of(["train", "hge"], capsys)
    # description, range, unit and default of each option, as the procedure declares them
    assert "--learning-rate" in hge and "Learning rate; [1e-06, 10]; default 0.02" in hge
    assert "Window per case; [0.001, 10] s; default 0.05 s" in hge
    assert "--mode" in hge and "one of digital, lockin, sequential; default digital" in hge
    assert "--dry-run" in hge and "--out" in hge and "--json" in hge and "-q" in hge
    iv = _help_of(["measure", "iv"], capsys)
    assert "--start-v" in iv and "--start" in iv and "default -1.2 V" in iv
    dfa = _help_of(["train", "dfa"], capsys)
    assert "digits, mnist1d, mnist:PATH, fmnist:PATH or narma10" in dfa
    for argv in (["measure", "iv"], ["measure", "transfer"], ["train", "dfa"], ["gui"]):
        assert "--out" in _help_of(argv, capsys), argv


def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path) -> None:
    argv = ["train", "hge", "--station", "sim-reservoir", "--out", str(tmp_path)]
    plain = subprocess.run(
        [sys.executable, "-m", "labrig.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "labrig.cli", "--debug", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "labrig: error: --station" in debug.stderr
    assert not any(tmp_path.iterdir())


def crossing_dnpu_station(tmp_path: Path) -> Path:
    """sim-dnpu with electrode 0 limited to [0.05, 0.7] V (activation range [0.1, 0.6] V): every
    value HGE plays there is allowed, but the 0 V DC level its input traces start from is not."""
    text = builtin_station_path("sim-dnpu").read_text()
    first = text.index("[[channels]]")
    block_end = text.index("[[channels]]", first + 1)
    block = text[first:block_end]
    assert 'label = "electrode 0"' in block
    block = block.replace("min_v = -1.3", "min_v = 0.05").replace("safe_v = 0.0", "safe_v = 0.1")
    text = text[:first] + block + text[block_end:]
    text = text.replace(
        "activation_ranges_v = [[-1.2, 0.6], ", "activation_ranges_v = [[0.1, 0.6], ", 1
    )
    path = tmp_path / "tight.toml"
    path.write_text(text)
    return path


def test_a_plan_that_crosses_the_limits_is_refused_before_a_real_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    station = crossing_dnpu_station(tmp_path)
    line = _refused(["train", "hge", "--station", str(station)], tmp_path / "runs", capsys)
    assert "dac:1 (electrode 0 (input)) would go down to +0 V" in line
    assert "[+0.05, +0.7] V" in line and "--dry-run" in line
