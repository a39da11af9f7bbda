"""The `sanitize` command as a user runs it: exit codes, one-line errors, inspect, config
files, help text and progress on a terminal."""

import argparse
import io
import json
import os
import pty
import re
import socket
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize.config import SanitizeConfig
from sanitize.data import open_source
from sanitize.data.source import DataConfig
from sanitize_cli.main import EXIT_BAD_INPUT, EXIT_OK, build_parser, main
from sanitize_cli.options import config_from_args
from tests.conftest import REPO, SAMPLE_SOURCE, SAMPLE_TRUTH

FAST_TOML = "[bootstrap]\nepochs = 2\nclean_epochs = 2\nwidth = 8\n"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sanitize: error: ")
    return err[0]


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"image": [b"x"], "y": [1]}), "missing column 'label'"),
        (pa.table({"label": [0, 1]}), "missing column 'image'"),
        (
            pa.table({"image": pa.array([], pa.binary()), "label": pa.array([], pa.int64())}),
            "no rows",
        ),
    ],
)
def test_structural_problems_exit_2_with_one_line(tmp_path, capsys, table, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--local"])
    assert code == EXIT_BAD_INPUT
    assert message in _one_line_error(capsys)


def test_misspelled_id_column_exits_2(capsys):
    code = main(["inspect", str(SAMPLE_SOURCE), "--id-column", "sample_idd"])
    assert code == EXIT_BAD_INPUT
    assert "missing id column 'sample_idd'" in _one_line_error(capsys)


def test_unknown_uri_scheme(tmp_path, capsys):
    code = main(["run", "nosuch://bucket/data.parquet", "--out", str(tmp_path / "o"), "--local"])
    assert code == EXIT_BAD_INPUT
    assert "unknown URI scheme 'nosuch'" in _one_line_error(capsys)


def test_bad_option(tmp_path, capsys):
    code = main(["run", str(SAMPLE_SOURCE), "--out", str(tmp_path), "--detectors", "magic"])
    assert code == EXIT_BAD_INPUT
    assert "unknown detector 'magic'" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "source, out, message",
    [
        ("data", "data", "is the source directory"),
        ("data", "data/out", "is inside the source directory"),
        ("file://{root}/data", "data/sub/out", "is inside the source directory"),
        ("data", "", "empty output directory"),
        ("", "out", "empty source"),
    ],
)
def test_out_in_the_source_or_empty_paths_exit_2(
    tmp_path, monkeypatch, capsys, source, out, message
):
    """The outputs never land in a directory source (the next run would read them), and an
    empty path never means the current directory."""
    (tmp_path / "data").mkdir()
    pq.write_table(pq.read_table(SAMPLE_SOURCE).slice(0, 10), tmp_path / "data" / "a.parquet")
    monkeypatch.chdir(tmp_path)
    source = source.format(root=tmp_path)
    code = main(["run", source, "--out", out, "--local", "--config", _fast_toml(tmp_path)])
    assert code == EXIT_BAD_INPUT
    assert message in _one_line_error(capsys)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["a.parquet"]
    assert not (tmp_path / "out").exists()


def _fast_toml(root) -> str:
    path = root / "fast.toml"
    path.write_text(FAST_TOML)
    return str(path)


def test_run_through_prefect_then_metrics(tmp_path):
    """`sanitize run` as a user types it: a new process, the flow on an embedded server."""
    config = tmp_path / "fast.toml"
    config.write_text("[bootstrap]\nepochs = 2\nclean_epochs = 2\nwidth = 8\n")
    out = tmp_path / "out"
    env_python = sys.executable
    run = subprocess.run(
        [
            env_python,
            "-m",
            "sanitize_cli",
            "run",
            str(SAMPLE_SOURCE),
            "--out",
            str(out),
            "--config",
            str(config),
            "--progress",  # plain per-stage lines, stderr being a pipe
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    assert "3,000 rows: kept" in run.stdout
    assert "bootstrap epoch 2/2" in run.stderr  # per-stage progress lines
    assert "\r" not in run.stderr  # no live line off a terminal
    assert "Traceback" not in run.stderr
    metrics = subprocess.run(
        [
            env_python,
            "-m",
            "sanitize_cli",
            "metrics",
            str(out),
            "--truth",
            str(SAMPLE_TRUTH),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert metrics.returncode == 0, metrics.stderr
    decision = json.loads(metrics.stdout)["decision"]
    assert decision["poisoned"] == 120 and 0 <= decision["tpr"] <= 1


# --- inspect --------------------------------------------------------------------------------


def test_inspect_describes_a_good_source(capsys):
    assert main(["inspect", str(SAMPLE_SOURCE), "--json"]) == EXIT_OK
    described = json.loads(capsys.readouterr().out)
    assert described["rows"] == 3000 and described["kind"] == "parquet"
    assert described["id_column"] == "sample_id"
    assert list(described["columns"]) == ["image", "label", "sample_id"]
    assert [c["label"] for c in described["classes"]] == list(range(10))
    counts = pq.read_table(SAMPLE_SOURCE).column("label").value_counts().to_pylist()
    assert {c["label"]: c["rows"] for c in described["classes"]} == {
        c["values"]: c["counts"] for c in counts
    }
    assert described["image_size"] == 24 and described["channels"] == 1
    assert described["image_sizes"] == {"24x24": 64} and described["image_modes"] == {"L": 64}
    assert described["unreadable"] == described["missing_label"] == 0
    assert described["fingerprint"] == open_source(SAMPLE_SOURCE, DataConfig()).fingerprint()

    assert main(["inspect", str(SAMPLE_SOURCE)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "3,000" in text and "class   0  label 0: 420 rows" in text


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def test_inspect_counts_unreadable_and_null_label_rows(tmp_path, capsys):
    images = [_png((8, 8)), _png((8, 8)), b"broken", _png((12, 6), "RGB"), _png((8, 8))]
    table = pa.table(
        {"img": images, "cls": ["b", "a", "a", None, "b"], "key": [10, 11, 12, 13, 14]}
    )
    pq.write_table(table, tmp_path / "odd.parquet")
    args = ["inspect", str(tmp_path / "odd.parquet"), "--image-column", "img"]
    args += ["--label-column", "cls", "--id-column", "key", "--json"]
    assert main(args) == EXIT_OK
    described = json.loads(capsys.readouterr().out)
    assert described["rows"] == 5 and described["id_column"] == "key"
    assert described["classes"] == [
        {"index": 0, "label": "a", "name": "a", "rows": 1},
        {"index": 1, "label": "b", "name": "b", "rows": 2},
    ]
    assert (described["unreadable"], described["unreadable_ids"]) == (1, [12])
    assert (described["missing_label"], described["missing_label_ids"]) == (1, [13])
    assert described["image_sizes"] == {"8x8": 3, "unreadable": 1, "12x6": 1}
    assert described["image_modes"] == {"L": 3, "RGB": 1}
    assert described["image_size"] == 8  # the first readable image's, as a run decodes


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"image": [b"x"], "y": [1]}), "missing column 'label'"),
        (pa.table({"image": [_png((4, 4))] * 3, "label": [1, 1, 1]}), "only one class"),
        (pa.table({"image": [b"x"], "label": [0.5]}), "non-integer value 0.5 at row 0"),
    ],
)
def test_inspect_refuses_bad_sources_with_exit_2(tmp_path, capsys, table, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    assert main(["inspect", str(path)]) == EXIT_BAD_INPUT
    assert message in _one_line_error(capsys)


def test_inspect_refuses_a_bad_config_with_exit_2(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[data]\nimage_size = 1000\n")
    assert main(["inspect", str(SAMPLE_SOURCE), "--config", str(config)]) == EXIT_BAD_INPUT
    assert (
        "data.image_size: input should be less than or equal to 512, got 1000"
        in _one_line_error(capsys)
    )


# --- config ---------------------------------------------------------------------------------


def test_inspect_never_connects_to_an_image_path_url(tmp_path, capsys):
    """A path cell naming ftp://127.0.0.1:PORT must not reach a listener there."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    cells = [{"bytes": _png((8, 8)), "path": None} for _ in range(4)]
    cells.append({"bytes": None, "path": f"ftp://127.0.0.1:{port}/x.png"})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array(cells, image_type), "label": [0, 1, 0, 1, 1]})
    pq.write_table(table, tmp_path / "a.parquet")
    try:
        code = main(["inspect", str(tmp_path / "a.parquet"), "--json"])
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()[0].close()  # a connection attempt would be waiting here
    finally:
        listener.close()
    assert code == EXIT_OK
    assert json.loads(capsys.readouterr().out)["unreadable"] == 1


def test_allow_external_paths_flag_sets_the_config():
    args = build_parser().parse_args(["run", "src", "--out", "o", "--allow-external-paths"])
    assert config_from_args(args).data.allow_external_paths is True
    args = build_parser().parse_args(["inspect", "src"])
    assert config_from_args(args).data.allow_external_paths is False


def _non_default(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value / 2
    if isinstance(value, str):
        return "cpu" if value == "auto" else value + "_x"
    if value == {}:  # decision.expected_class_counts: a TOML table of class -> count
        return {"cat": 2.0, "dog": 1.0}
    if isinstance(value, tuple) and isinstance(value[0], str):  # decision.rules
        return list(value[1:])
    if isinstance(value, tuple):
        return [value[0] / 2, value[1]]
    return None


def test_every_config_field_is_reachable_from_toml(tmp_path):
    """A TOML file that sets every field to a non-default value comes back as it was."""
    default = SanitizeConfig()
    raw: dict = {"seed": 7, "detectors": ["spectral", "cbd"]}
    raw["detector_params"] = {"spectral": {"z_threshold": 4.5}}
    for section in ("data", "bootstrap", "decision"):
        values = {}
        for name in type(getattr(default, section)).model_fields:
            value = _non_default(getattr(getattr(default, section), name))
            # Halving these would make them invalid.
            halving_invalid = {
                "size_gain": 1.5,
                "growth_pixel_auc": 0.9,
            }
            value = halving_invalid.get(name, value)
            values[name] = value if value is not None else _value_for_none(section, name)
        raw[section] = values
    expected = SanitizeConfig.from_dict(raw)
    assert all(
        getattr(expected, s) != getattr(default, s) for s in ("data", "bootstrap", "decision")
    )
    path = tmp_path / "all.toml"
    path.write_text(_toml(raw))
    args = build_parser().parse_args(["run", "src", "--out", "o", "--config", str(path)])
    config = config_from_args(args)
    assert config == expected
    for section in ("data", "bootstrap", "decision"):
        for name in type(getattr(default, section)).model_fields:
            assert getattr(getattr(config, section), name) != getattr(
                getattr(default, section), name
            ), f"{section}.{name}"


def _value_for_none(section, name):
    values = {"image_size": 16, "channels": 3, "checkpoint": "w.safetensors", "epochs": 3}
    return (values | {"size_suspect": True}).get(name, 2)


def _toml(raw: dict) -> str:
    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {scalar(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for k, v in raw.items():
        if isinstance(v, dict) and k != "detector_params":
            lines.append(f"[{k}]")
            lines += [f"{kk} = {scalar(vv)}" for kk, vv in v.items() if not isinstance(vv, dict)]
            for kk, table in v.items():
                if isinstance(table, dict):
                    lines.append(f"[{k}.{kk}]")
                    lines += [f"{name} = {scalar(x)}" for name, x in table.items()]
    for name, params in raw.get("detector_params", {}).items():
        lines.append(f"[detector_params.{name}]")
        lines += [f"{kk} = {scalar(vv)}" for kk, vv in params.items()]
    return "\n".join(lines) + "\n"


def test_set_and_flags_override_the_toml(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("seed = 1\n[bootstrap]\nlr = 0.01\nwidth = 16\n")
    argv = ["run", "s", "--out", "o", "--config", str(path)]
    argv += ["--set", "bootstrap.lr=0.005", "--set", "decision.weight_clip=0.1,0.9"]
    argv += ["--set", "detectors=spectral,cbd", "--set", "detector_params.spectral.z_threshold=3"]
    argv += ["--width", "8", "--min-votes", "2", "--train-steps", "99"]
    config = config_from_args(build_parser().parse_args(argv))
    assert config.seed == 1 and config.bootstrap.lr == 0.005 and config.bootstrap.width == 8
    assert config.bootstrap.train_steps == 99 and config.decision.min_votes == 2
    assert config.decision.weight_clip == (0.1, 0.9)
    assert config.detectors == ("spectral", "cbd")
    assert config.params_for("spectral") == {"z_threshold": 3}

    for bad, message in [
        ("bootstrap.nope=1", "unknown option(s) ['nope'] in [bootstrap]"),
        ("lr", "--set expects section.key=value"),
        ("bootstrap.lr=fast", "bootstrap.lr: input should be a valid number"),
        ("bootstrap.train_steps=abc", "bootstrap.train_steps: input should be a valid integer"),
        ('seed="abc"', "seed: input should be a valid integer"),
        ("seed=-1", "seed: input should be greater than or equal to 0, got -1"),
        (
            "decision.min_votes=1.5",
            "decision.min_votes: input should be a valid integer, got a number",
        ),
    ]:
        code = main(["run", str(SAMPLE_SOURCE), "--out", str(tmp_path / "o"), "--set", bad])
        assert code == EXIT_BAD_INPUT
        assert message in _one_line_error(capsys)


def test_expected_classes_are_read_into_the_config_and_checked_before_training(tmp_path, capsys):
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({str(c): 100 for c in range(10)}))
    argv = ["run", str(SAMPLE_SOURCE), "--out", str(tmp_path / "o")]
    config = config_from_args(build_parser().parse_args([*argv, "--expected-classes", str(counts)]))
    assert dict(config.decision.expected_class_counts) == {str(c): 100.0 for c in range(10)}
    split = config_from_args(
        build_parser().parse_args([*argv, "--expected-classes", str(SAMPLE_SOURCE)])
    )
    assert sum(split.decision.expected_class_counts.values()) == 3000

    counts.write_text(json.dumps({str(c): 100 for c in range(9)}))  # no class 9
    code = main([*argv, "--local", "--expected-classes", str(counts)])
    assert code == EXIT_BAD_INPUT
    assert "expected_class_counts has no entry for class(es) 9" in _one_line_error(capsys)
    assert not (tmp_path / "o" / ".work" / "features.npy").exists()  # failed at the read stage
    code = main([*argv, "--local", "--expected-classes", str(tmp_path / "none.json")])
    assert code == EXIT_BAD_INPUT
    assert "expected-classes file not found" in _one_line_error(capsys)


# --- help -----------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_help_documents_every_option_its_default_and_the_exit_codes():
    parser = build_parser()
    subparsers = _subparsers(parser)
    assert {"run", "inspect", "metrics", "poison"} <= set(subparsers)
    listed = {a.dest for a in parser._actions if isinstance(a, argparse._SubParsersAction)}
    assert listed == {"command"}
    for name, sub in subparsers.items():
        text = " ".join(sub.format_help().split())
        for code in ("0 success", "1 unexpected", "2 bad input", "3 output directory"):
            assert code in text, (name, code)
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"sanitize {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{label}: no help"
            takes_value = action.nargs != 0 and action.option_strings
            optional = not action.required
            if takes_value and optional and not isinstance(action, argparse.BooleanOptionalAction):
                assert "default" in action.help, f"{label}: help does not state its default"
    assert "Exit status" in parser.format_help()


def test_help_runs_for_every_subcommand(capsys):
    for name in _subparsers(build_parser()):
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith("usage: sanitize " + name)


# --- progress -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-small")
    pq.write_table(pq.read_table(SAMPLE_SOURCE).slice(0, 300), root / "small.parquet")
    (root / "fast.toml").write_text(FAST_TOML)
    return root


def _run_in_pty(argv: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run the command with stdin, stdout and stderr on a pseudo-terminal; its exit code and
    everything it wrote there."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


def test_progress_is_live_on_a_terminal(small_source, tmp_path):
    code, output = _run_in_pty(
        [sys.executable, "-m", "sanitize_cli", "run", str(small_source / "small.parquet")]
        + ["--out", str(tmp_path / "out"), "--local", "--config", str(small_source / "fast.toml")]
    )
    assert code == EXIT_OK, output[-3000:]
    assert "300 rows: kept" in output
    # rich redraws the live display in place: split at its carriage returns, drop colours.
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    live = [part.strip() for part in re.split(r"[\r\n]+", plain) if part.strip()]
    bootstrap = [p for p in live if " bootstrap " in f" {p}" and "rows/s" in p]
    assert any("epoch 1/2" in p for p in bootstrap), live[:20]  # updated within the stage
    assert any(" embed " in f" {p}" and "/300 rows" in p for p in live), live[:40]
    assert "bootstrap epoch 2/2:" in output  # the per-stage lines stay above the live line


def test_no_progress_when_stderr_is_not_a_terminal(small_source, tmp_path, capsys):
    config = str(small_source / "fast.toml")
    source = str(small_source / "small.parquet")
    assert main(["run", source, "--out", str(tmp_path / "a"), "--local", "--config", config]) == 0
    captured = capsys.readouterr()
    assert "300 rows: kept" in captured.out
    assert captured.err == ""  # quiet: no stage lines, no live line

    # With --progress off a terminal: plain per-stage lines (test_run_through_prefect_...).
