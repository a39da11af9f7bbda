"""The ``sanitize`` command.

Exit status: 0 success; 2 bad input, config or usage (one line on stderr names the
problem); 3 the output directory cannot be written or its disk is full; 4 another run
holds the output directory (its lock, OUT/.sanitize.lock); 1 an unexpected failure;
130 interrupted (SIGINT), 143 terminated (SIGTERM), with the embedded Prefect server
stopped.

``sanitize run`` runs the Prefect flow from ``flows/`` on an embedded (ephemeral) Prefect
server unless ``PREFECT_API_URL`` points to one; Prefect's own logs stay quiet unless
``--verbose``. The core (``sanitize``) never imports Prefect; this package and ``flows``
do.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sanitize.attacks import available_attacks
from sanitize.config import (
    DEFAULT_DETECTORS,
    KNOWN_DETECTORS,
    SanitizeConfig,
    expected_counts,
)
from sanitize.errors import ConfigError, InputError, OutputError, SanitizeError
from sanitize.pipeline.lock import RunLockedError, run_lock
from sanitize.pipeline.paths import check_locations
from sanitize.report.progress import TerminalProgress, announce, listening

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_OUTPUT = 0, 1, 2, 3
EXIT_LOCKED = 4
# As a shell reports a process that a signal ended: 128 + the signal's number.
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM
_SIGNAL_EXITS = {
    signal.SIGINT: ("sanitize: interrupted", EXIT_INTERRUPTED),
    signal.SIGTERM: ("sanitize: error: terminated by SIGTERM", EXIT_TERMINATED),
}


# Named options of `sanitize run` and `inspect`: (section, field, attribute of args).
_CONFIG_FLAGS = (
    ("data", "image_column", "image_column"),
    ("data", "label_column", "label_column"),
    ("data", "id_column", "id_column"),
    ("data", "image_size", "image_size"),
    ("data", "channels", "channels"),
    ("data", "batch_rows", "batch_rows"),
    ("data", "allow_external_paths", "allow_external_paths"),
    ("bootstrap", "checkpoint", "checkpoint"),
    ("bootstrap", "epochs", "epochs"),
    ("bootstrap", "clean_epochs", "clean_epochs"),
    ("bootstrap", "train_steps", "train_steps"),
    ("bootstrap", "fit_loss", "fit_loss"),
    ("bootstrap", "batch_size", "batch_size"),
    ("bootstrap", "lr", "lr"),
    ("bootstrap", "width", "width"),
    ("bootstrap", "max_train_rows", "max_train_rows"),
    ("bootstrap", "device", "device"),
    ("decision", "min_votes", "min_votes"),
    ("decision", "max_removal_fraction", "max_removal"),
)


def _config_from_args(args: argparse.Namespace) -> SanitizeConfig:
    """The run's config: the ``--config`` TOML, then each ``--set``, then the named flags."""
    raw: dict = {}
    if getattr(args, "config", None):
        raw = SanitizeConfig.from_toml(args.config).to_dict()
    for item in getattr(args, "set", None) or []:
        _set_option(raw, item)
    for section, key, attr in _CONFIG_FLAGS:
        value = getattr(args, attr, None)
        if value is not None:
            raw.setdefault(section, {})[key] = value
    if getattr(args, "detectors", None):
        raw["detectors"] = [d.strip() for d in args.detectors.split(",") if d.strip()]
        raw["detector_params"] = {
            k: v for k, v in raw.get("detector_params", {}).items() if k in raw["detectors"]
        }
    if getattr(args, "seed", None) is not None:
        raw["seed"] = args.seed
    config = SanitizeConfig.from_dict(raw)
    if getattr(args, "expected_classes", None):
        from sanitize.data.expected import read_expected_counts  # pyarrow, fsspec: on use

        counts = read_expected_counts(args.expected_classes, config.data)
        decision = dataclasses.replace(
            config.decision, expected_class_counts=expected_counts(counts)
        )
        config = config.replace(decision=decision)
    return config


def _set_option(raw: dict, item: str) -> None:
    """Apply one ``--set KEY=VALUE`` (``bootstrap.lr=1e-3``) to the nested config ``raw``.

    Values parse as ``--param`` values; one with a comma is a list (``detectors=spectral,cbd``,
    ``decision.weight_clip=0.05,1``); ``none`` is None.
    """
    key, sep, text = item.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    text = text.strip()
    if "," in text:
        value: object = [_param_value(v.strip()) for v in text.split(",") if v.strip()]
    elif text.lower() == "none":
        value = None
    else:
        value = _param_value(text)
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _prepare_prefect(verbose: bool) -> None:
    """Prefect settings must be in the environment before Prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The client's telemetry too: its first-run notice would land in the progress display.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_INTERNAL_LEVEL", "WARNING" if verbose else "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING" if verbose else "CRITICAL")


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to output directory {out}: {exc.strerror}") from None


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT / SIGTERM during a run: one line, stop the embedded Prefect server, exit.

    Exits at once, without unwinding: the stage threads are mid-stage and interpreter
    shutdown would wait for them. The kernel releases the run lock; the next run in OUT
    removes the temporary files this one leaves.
    """
    message, code = _SIGNAL_EXITS[signum]
    # Other threads would log the server's going away (Prefect's event client) after the
    # one line; nothing is logged from here on.
    logging.disable(logging.CRITICAL)
    print(message, file=sys.stderr, flush=True)
    runners = sys.modules.get("flows.runners")
    if runners is not None:
        runners.stop_embedded_server()
    os._exit(code)


@contextmanager
def _signals_stop_the_run() -> Iterator[None]:
    """Route SIGINT and SIGTERM to :func:`_on_signal` for the block (main thread only)."""
    try:
        previous = {signum: signal.signal(signum, _on_signal) for signum in _SIGNAL_EXITS}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    # A parent that blocked them (the mask is inherited across exec) would leave them
    # pending forever: unblocked here, before the threads that inherit the mask start.
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, set(_SIGNAL_EXITS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _off_main_thread(work: Callable[[], dict]) -> dict:
    """``work()`` in a thread of its own, so the main thread stays free for signals.

    Prefect's flow engine replaces the main thread's SIGTERM handler with one that unwinds
    the flow and then waits for its running tasks (minutes of training) before the default
    action kills the process and orphans the embedded server.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="sanitize-run") as pool:
        return pool.submit(work).result()


def cmd_run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    check_locations(args.source, args.out)
    out = Path(args.out)
    _check_out(out)
    if args.local and args.runner != "local":
        raise ConfigError("--local runs the stages in this process; drop it to use --runner")
    start = time.perf_counter()
    with _signals_stop_the_run():
        if args.local:
            counts = _run_local(args, config, out)
        else:
            announce("starting Prefect (an embedded server takes 10-30 s)")
            _prepare_prefect(args.verbose)
            counts = _off_main_thread(lambda: _run_flow(args, config, out))
    seconds = time.perf_counter() - start
    print(
        f"{counts['rows']:,} rows: kept {counts['kept']:,}, removed {counts['removed']:,} "
        f"({100 * counts['removed_fraction']:.1f}%) in {seconds:.1f} s -> {out}"
    )
    print(counts["verdict"])
    return EXIT_OK


def _run_local(args: argparse.Namespace, config: SanitizeConfig, out: Path) -> dict:
    from sanitize.api import sanitize_dataset

    with run_lock(out):
        result = sanitize_dataset(args.source, out, config, keep_work=args.keep_work)
    return {**result.counts, "verdict": result.verdict["text"]}


def _run_flow(args: argparse.Namespace, config: SanitizeConfig, out: Path) -> dict:
    from flows.runners import run_sanitize_flow

    # Locked before Prefect starts, so a second run into OUT is refused at once.
    with run_lock(out):
        return run_sanitize_flow(
            str(args.source),
            str(out),
            config.to_dict(),
            keep_work=args.keep_work,
            runner=args.runner,
        )


def cmd_metrics(args: argparse.Namespace) -> int:
    from sanitize.evaluate import evaluate_run

    metrics = evaluate_run(args.out, args.truth)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return EXIT_OK
    print(f"{'':24s} {'TPR':>6s} {'FPR':>6s} {'AUROC':>6s} {'removed':>8s}")
    for name, m in metrics.items():
        print(f"{name:24s} {m['tpr']:6.3f} {m['fpr']:6.3f} {m['auroc']:6.3f} {m['removed']:8d}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from sanitize.report.html import write_report_html

    print(write_report_html(args.out))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from sanitize.data.describe import describe_source

    description = describe_source(args.source, _config_from_args(args).data, sample=args.sample)
    if args.json:
        print(json.dumps(description.to_dict(), indent=2, default=str))
    else:
        print(description.text())
    return EXIT_OK


def _param_value(text: str) -> bool | int | float | str:
    """A ``--param`` value as bool ("true"/"false"), int, float, or else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _attack_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects key=value, got {item!r}")
        params[key.strip()] = _param_value(value.strip())
    return params


def cmd_poison(args: argparse.Namespace) -> int:
    from sanitize.attacks import get_attack, poison_source
    from sanitize.config import DataConfig

    attack = get_attack(args.attack, **_attack_params(args.param))
    data = {
        "image_column": args.image_column,
        "label_column": args.label_column,
        "id_column": args.id_column,
    }
    summary = poison_source(
        args.source,
        args.out,
        attack,
        target=args.target,
        rate=args.rate,
        seed=args.seed,
        data=DataConfig(**{k: v for k, v in data.items() if v is not None}),
        truth=args.truth,
    )
    print(
        f"poisoned {summary.n_poisoned:,} of {summary.n_rows:,} rows with {summary.attack} "
        f"(target {summary.target}) -> {summary.out}; ground truth -> {summary.truth}"
    )
    return EXIT_OK


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sanitize",
        description="Find backdoor poisons in an image-classification training set.",
        epilog="Exit status: 0 success, 1 unexpected failure, 2 bad input or config, "
        "3 output directory not writable, 4 another run holds the output directory, "
        "130 interrupted, 143 terminated (SIGTERM).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    metrics = sub.add_parser("metrics", help="TPR/FPR/AUROC of a finished run against ground truth")
    metrics.add_argument("out", help="output directory of a finished run")
    metrics.add_argument("--truth", required=True, help="CSV with columns sample_id,poisoned")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics.set_defaults(func=cmd_metrics, quiet=False)

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

    report = sub.add_parser(
        "report",
        help="re-render report.html of a finished run from its output directory",
        description="Write OUT/report.html from report.json, scores.parquet and the clean and "
        "quarantine files in OUT (the run's work files are not needed).",
    )
    report.add_argument("out", help="output directory of a finished run")
    report.set_defaults(func=cmd_report, quiet=False)

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
    for subparser in sub.choices.values():
        subparser.epilog = subparser.epilog or parser.epilog
    return parser


def _setup_output(args: argparse.Namespace) -> TerminalProgress | None:
    """Progress and log lines on stderr; the live line only on a terminal.

    ``--progress`` / ``--no-progress`` (``-q``) decide; by default progress shows when
    stderr is a terminal. Warnings and errors always show.
    """
    tty = sys.stderr.isatty()
    show = getattr(args, "progress", None)
    if getattr(args, "quiet", False):
        show = False
    if show is None:
        show = tty
    terminal = TerminalProgress() if show and tty else None
    handler = terminal.handler() if terminal else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("sanitize")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if show else logging.WARNING)
    logger.propagate = False
    return terminal


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    terminal = _setup_output(args)
    try:
        if terminal is None:
            return args.func(args)
        with terminal, listening(terminal):
            return args.func(args)
    except (InputError, ConfigError) as exc:
        print(f"sanitize: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunLockedError as exc:
        print(f"sanitize: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except OutputError as exc:
        print(f"sanitize: error: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    except SanitizeError as exc:
        print(f"sanitize: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(_SIGNAL_EXITS[signal.SIGINT][0], file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`sanitize metrics ... | head`): not an error of ours.
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return EXIT_OK
    except OSError as exc:
        if not _out_of_space(exc):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(
            f"sanitize: error: no space left on device{where}; free some or choose another "
            "output directory",
            file=sys.stderr,
        )
        return EXIT_OUTPUT


def _out_of_space(exc: OSError) -> bool:
    """Whether ``exc`` is a full disk or quota (pyarrow's OSError carries only the text)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or os.strerror(errno.ENOSPC) in str(exc)


if __name__ == "__main__":
    sys.exit(main())
