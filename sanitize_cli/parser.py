"""The ``sanitize`` command's argument parser."""

from __future__ import annotations

import argparse

from sanitize.attacks import available_attacks
from sanitize.config import DEFAULT_DETECTORS, KNOWN_DETECTORS
from sanitize_cli.commands import cmd_inspect, cmd_metrics, cmd_poison, cmd_report
from sanitize_cli.running import cmd_run


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--image-column", help="image column (default: image)")
    data.add_argument("--label-column", help="label column (default: label)")
    data.add_argument(
        "--id-column",
        help="row identity column, the sample_id of every output; it must exist "
        "(default: sample_id; the row ordinal when absent)",
    )
    data.add_argument(
        "--image-size",
        type=int,
        help="resize images to N x N, 8 <= N <= 512 (default: median side of the first images, "
        "8-64)",
    )
    data.add_argument(
        "--channels", type=int, choices=(1, 3), help="1 grey or 3 RGB (default: first image's)"
    )
    data.add_argument(
        "--batch-rows", type=int, help="rows read and decoded at a time (default: 2048)"
    )
    data.add_argument(
        "--allow-external-paths",
        action="store_const",
        const=True,
        help="read image path cells outside the source's directory: absolute paths, '..', "
        "links out of an image folder, URLs (network fetches) (default: off, such rows are "
        "quarantined as unreadable)",
    )


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file holding any config field: seed, detectors, [data], [bootstrap], "
        "[decision], [detector_params.NAME] (default: none; command-line options override it)",
    )


def _add_model_options(run: argparse.ArgumentParser) -> None:
    """The bootstrap model options of ``sanitize run``."""
    model = run.add_argument_group("bootstrap model")
    model.add_argument(
        "--checkpoint",
        help="weights of the bootstrap network (.safetensors or a "
        "torch state dict, loaded with weights_only=True) instead of training it "
        "(default: none, train it)",
    )
    model.add_argument(
        "--epochs",
        type=int,
        help="bootstrap training epochs (default: until the set is fit, within 1,500 steps)",
    )
    model.add_argument(
        "--clean-epochs",
        type=int,
        help="epochs of CBD's deconfounded model (default: as many as the bootstrap ran)",
    )
    model.add_argument(
        "--train-steps",
        type=int,
        help="step budget of the automatic epoch count (default: 1500)",
    )
    model.add_argument(
        "--fit-loss",
        type=float,
        help="mean training loss (nats) at which automatic training stops (default: 0.2)",
    )
    model.add_argument("--batch-size", type=int, help="rows a training step (default: 128)")
    model.add_argument("--lr", type=float, help="Adam learning rate (default: 0.002)")
    model.add_argument(
        "--width", type=int, help="channels of the network's first block (default: 32)"
    )
    model.add_argument(
        "--max-train-rows",
        type=int,
        help="rows the models train on, a stratified sample above it (default: 50000)",
    )
    model.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    model.add_argument("--seed", type=int, help="seed of every random step (default: 0)")


def _add_detection_options(run: argparse.ArgumentParser) -> None:
    """The detection options of ``sanitize run``."""
    detect = run.add_argument_group("detection")
    detect.add_argument(
        "--detectors",
        help=(
            "comma-separated, from: "
            + ", ".join(KNOWN_DETECTORS)
            + " (default: "
            + ",".join(DEFAULT_DETECTORS)
            + ")"
        ),
    )
    detect.add_argument(
        "--max-removal", type=float, help="cap on the share of rows removed (default: 0.25)"
    )
    detect.add_argument(
        "--min-votes",
        type=int,
        help="detectors that must flag a row to remove it (default: 1)",
    )
    detect.add_argument(
        "--expected-classes",
        metavar="PATH",
        help="the class distribution a clean delivery has: a validation split (any source "
        "kind), a previous run's report.json, or a JSON object class -> count; a class "
        "that far outgrows its share is then judged by its size (default: none)",
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    """``sanitize run``."""
    run = sub.add_parser(
        "run",
        help="sanitize a dataset (runs the Prefect flow)",
        description="Write clean.parquet, quarantine.parquet, scores.parquet and report.json "
        "for SOURCE into --out.",
    )
    run.add_argument(
        "source",
        help="HF Parquet file or directory, image folder, or .npz; "
        "a local path or an fsspec URI (file://, s3://, ...)",
    )
    run.add_argument("--out", required=True, help="output directory")
    _add_config_option(run)
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field, repeatable, over --config: bootstrap.lr=1e-3, "
        "detectors=spectral,cbd, detector_params.spectral.z_threshold=4 (default: none)",
    )
    _add_data_options(run)
    _add_model_options(run)
    _add_detection_options(run)
    run.add_argument(
        "--local",
        action="store_true",
        help="run the stages in this process, without Prefect (same outputs, faster start)",
    )
    run.add_argument(
        "--runner",
        default="local",
        help="Prefect task runner: local (default, threads here), dask://HOST:PORT (a Dask "
        "scheduler) or ray://HOST:PORT (a Ray cluster); workers need sanitize installed, OUT "
        "on shared storage and a reachable Prefect API",
    )
    run.add_argument(
        "--keep-work",
        action="store_true",
        help="keep stage files in OUT/.work (a later run with the same source and config "
        "reuses the finished stages)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs too")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="per-stage progress on stderr: a live line with rows/s on a terminal, plain "
        "per-stage lines otherwise (default: on when stderr is a terminal)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="same as --no-progress")
    run.set_defaults(func=cmd_run)


def _add_metrics(sub: argparse._SubParsersAction) -> None:
    """``sanitize metrics``."""
    metrics = sub.add_parser("metrics", help="TPR/FPR/AUROC of a finished run against ground truth")
    metrics.add_argument("out", help="output directory of a finished run")
    metrics.add_argument("--truth", required=True, help="CSV with columns sample_id,poisoned")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics.set_defaults(func=cmd_metrics, quiet=False)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    """``sanitize inspect``."""
    inspect = sub.add_parser(
        "inspect",
        help="validate and describe a source without running (rows, classes, images, ids)",
        description="Check SOURCE as `sanitize run` would (same errors, exit 2) and describe "
        "it: rows, columns, id column, classes with counts, image sizes and modes of a "
        "sample, unreadable and null-label rows, fingerprint. Every image is decoded once.",
    )
    inspect.add_argument(
        "source", help="HF Parquet file or directory, image folder, or .npz; path or fsspec URI"
    )
    _add_config_option(inspect)
    _add_data_options(inspect)
    inspect.add_argument(
        "--sample",
        type=int,
        default=64,
        help="rows whose image sizes and modes are tallied (default: 64)",
    )
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="a live line with rows/s while images are decoded "
        "(default: on when stderr is a terminal)",
    )
    inspect.set_defaults(func=cmd_inspect, quiet=False)


def _add_report(sub: argparse._SubParsersAction) -> None:
    """``sanitize report``."""
    report = sub.add_parser(
        "report",
        help="re-render report.html of a finished run from its output directory",
        description="Write OUT/report.html from report.json, scores.parquet and the clean and "
        "quarantine files in OUT (the run's work files are not needed).",
    )
    report.add_argument("out", help="output directory of a finished run")
    report.set_defaults(func=cmd_report, quiet=False)


def _add_poison(sub: argparse._SubParsersAction) -> None:
    """``sanitize poison``."""
    poison = sub.add_parser(
        "poison",
        help="write a poisoned copy of a dataset and its ground truth (attack simulation)",
        description="Apply a simulated backdoor attack to SOURCE; write the poisoned set to "
        "--out (HF Parquet) and sample_id,poisoned to --truth.",
    )
    poison.add_argument("source", help="HF Parquet file or directory, image folder, or .npz")
    poison.add_argument(
        "--attack",
        required=True,
        help="one of: " + ", ".join(available_attacks()) + " ('none' is the clean case)",
    )
    poison.add_argument("--out", required=True, help="output Parquet file")
    poison.add_argument("--target", type=int, default=0, help="target class (default: 0)")
    poison.add_argument(
        "--rate", type=float, default=0.05, help="share of all rows poisoned (default: 0.05)"
    )
    poison.add_argument("--seed", type=int, default=0, help="seed of the row choice (default: 0)")
    poison.add_argument("--truth", help="ground-truth CSV (default: OUT with suffix .truth.csv)")
    poison.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attack parameter, repeatable (e.g. alpha=0.1, trigger_path=kitty.png; "
        "default: the attack's own)",
    )
    poison.add_argument("--image-column", help="image column (default: image)")
    poison.add_argument("--label-column", help="label column (default: label)")
    poison.add_argument("--id-column", help="row identity column (default: sample_id)")
    poison.set_defaults(func=cmd_poison, quiet=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sanitize",
        description="Find backdoor poisons in an image-classification training set.",
        epilog="Exit status: 0 success, 1 unexpected failure, 2 bad input or config, "
        "3 output directory not writable, 4 another run holds the output directory, "
        "130 interrupted, 143 terminated (SIGTERM).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_metrics(sub)
    _add_inspect(sub)
    _add_report(sub)
    _add_poison(sub)
    for subparser in sub.choices.values():
        subparser.epilog = subparser.epilog or parser.epilog
    return parser
