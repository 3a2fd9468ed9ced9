"""Sweep definitions: axis syntax, validation against the procedure, sweep files, per-point
stations, and the ``labrig sweep`` command line (no point is run here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from labrig.station import load_station, parse_station
from labrig.sweep.grid import SweepError, SweepSpec, load_sweep_file, merge_specs, parse_axis
from labrig.sweep.record import point_of_station_text, station_text_for, sweep_file_text


def test_axis_syntax() -> None:
    assert parse_axis("device_seed", "0:4", "t") == [0, 1, 2, 3]
    assert parse_axis("seed", "0:10:3,20", "t") == [0, 3, 6, 9, "20"]
    assert parse_axis("task", "AND, OR,XOR", "t") == ["AND", "OR", "XOR"]
    assert parse_axis("lr", "lin:0:1:3", "t") == [0.0, 0.5, 1.0]
    assert parse_axis("lr", "log:0.001:0.1:3", "t") == pytest.approx([0.001, 0.01, 0.1])
    for bad in ("3:3", "0:5:0", "log:0:1:3", "A,,B", "lin:a:1:3"):
        with pytest.raises(SweepError, match="axis 'x'"):
            parse_axis("x", bad, "--x")


def test_points_are_validated_by_the_procedure_declaration() -> None:
    spec = SweepSpec(
        "hge",
        fixed={"max_iterations": "5", "learning_rate": "0.02"},
        grid={"task": ["AND", "XOR"], "device_seed": ["0", 3], "seed": [0, 1]},
    )
    points = spec.points("station text")
    assert len(points) == 8
    first = points[0]
    assert first.parameters == {
        "max_iterations": 5,
        "learning_rate": pytest.approx(0.02),
        "task": "AND",
        "seed": 0,
    }
    assert first.station_settings == {"device_seed": 0}
    assert len({p.point_id for p in points}) == 8
    # The id depends on the values only: the same point in another order keeps its id.
    again = SweepSpec("hge", fixed=spec.fixed, grid=dict(reversed(spec.grid.items())))
    assert {p.point_id for p in again.points("station text")} == {p.point_id for p in points}
    assert {p.point_id for p in spec.points("another station")}.isdisjoint(
        {p.point_id for p in points}
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SweepSpec("hge", grid={"bogus": [1, 2]}), r"'bogus' is neither a parameter of hge"),
        (
            SweepSpec("hge", grid={"max_iterations": [5, 0]}),
            r"max_iterations.*outside \[1, 10000\]",
        ),
        (SweepSpec("hge", grid={"device_seed": [-1]}), r"device_seed = -1 is outside"),
        (SweepSpec("hge", fixed={"station": "sim-dnpu"}), r"'station' is a setting of the whole"),
        (SweepSpec("hge", grid={"seed": [1, 1]}), r"repeats point 0"),
        (SweepSpec("nosuch"), r"no procedure registered as 'nosuch'"),
    ],
)
def test_bad_sweeps_are_refused_with_the_reason(spec: SweepSpec, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        spec.points("")


def test_sweep_file_and_command_line_mean_the_same_sweep(tmp_path: Path) -> None:
    path = tmp_path / "gates.toml"
    path.write_text(
        '[sweep]\nprocedure = "hge"\n\n[fixed]\nmax_iterations = 5\n\n'
        '[grid]\ntask = ["AND", "XOR"]\ndevice_seed = "0:3"\n\n'
        '[[points]]\ntask = "XNOR"\ndevice_seed = 7\n',
        encoding="utf-8",
    )
    from_file = load_sweep_file(path)
    assert len(from_file.points("")) == 7
    cli = merge_specs(
        None,
        "hge",
        axes=[
            ("max_iterations", parse_axis("max_iterations", "5", "--max-iterations")),
            ("task", parse_axis("task", "AND,XOR", "--task")),
            ("device_seed", parse_axis("device_seed", "0:3", "--device-seed")),
        ],
    )
    listed = SweepSpec("hge", fixed=cli.fixed, grid=cli.grid, listed=from_file.listed)
    assert listed.canonical().digest() == from_file.canonical().digest()
    # The sweep file the folder keeps reproduces the sweep.
    written = tmp_path / "again.toml"
    written.write_text(sweep_file_text(from_file.canonical()), encoding="utf-8")
    assert load_sweep_file(written).canonical().digest() == from_file.canonical().digest()
    # A command-line axis replaces the file's; a file for another procedure is refused.
    merged = merge_specs(from_file, "hge", axes=[("task", ["OR"])])
    assert merged.fixed["task"] == "OR" and "task" not in merged.grid
    with pytest.raises(SweepError, match="the command asks for 'dfa'"):
        load_sweep_file(path, "dfa")
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nprocedure = "hge"\n[fixed]\ntask = ["AND"]\n', encoding="utf-8")
    with pytest.raises(SweepError, match=r"\[fixed\] task"):
        load_sweep_file(bad)


def test_each_point_gets_its_own_derived_station() -> None:
    base = load_station("sim-dnpu")
    point = SweepSpec("hge", grid={"device_seed": [0, 7]}).points(base.text)[1]
    text = station_text_for(base, point)
    derived = parse_station(text)
    assert derived.bench is not None and derived.bench.device_seed == 7
    assert derived.bench.seed == base.bench.seed  # type: ignore[union-attr]
    limits = [(c.instrument, c.channel, c.limits.min_v, c.limits.max_v) for c in base.channels]
    assert [
        (c.instrument, c.channel, c.limits.min_v, c.limits.max_v) for c in derived.channels
    ] == (limits)
    assert derived.wiring == base.wiring
    assert point_of_station_text(text) == point.point_id
    assert base.bench is not None and base.bench.device_seed == 0  # the base is untouched


def test_device_seed_on_a_station_without_bench_is_refused(tmp_path: Path) -> None:
    base = load_station("sim-dnpu")
    data = tomllib.loads(base.text)
    data.pop("bench")
    for spec in data["instruments"].values():
        spec["visa_library"] = "@py"
    from labrig.station import dump_toml

    real = parse_station(dump_toml(data), "lab.toml")
    point = SweepSpec("hge", grid={"device_seed": [1]}).points(real.text)[0]
    with pytest.raises(SweepError, match=r"lab.toml has no \[bench\] table"):
        station_text_for(real, point)


def test_command_line_axes(monkeypatch: pytest.MonkeyPatch) -> None:
    from labrig.cli import build_parser
    from labrig.sweep.cli import _spec_from_args

    args = build_parser().parse_args(
        [
            "sweep",
            "hge",
            "--task",
            "AND,OR,XOR",
            "--device-seed",
            "0:20",
            "--seed=0:3",
            "--max-iterations",
            "7",
            "--workers",
            "2",
        ]
    )
    spec = _spec_from_args(args)
    assert args.workers == 2
    assert spec.grid["task"] == ["AND", "OR", "XOR"]
    assert spec.grid["device_seed"] == list(range(20))
    assert spec.fixed == {"max_iterations": "7"}
    assert len(spec.points("")) == 180
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "hge", "--task"])
