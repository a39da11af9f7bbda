"""Time saved by resuming a run killed after a given stage (default: embed).

Three runs of ``sanitize run --local SOURCE`` in fresh directories under ``--work``:
uninterrupted; killed with SIGKILL as soon as the stage's done marker appears; the killed
one started again. Prints the wall times, the saving, and checks that the resumed run's
Parquet outputs are byte-identical to the uninterrupted run's.

    python benchmarks/resume_bench.py sample_data/digits_poisoned.parquet --work /tmp/rb
    python benchmarks/resume_bench.py ../shared/datasets/cifar10/train.parquet --rows 5000 \\
        --work /tmp/rb-cifar
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

PARQUET = ("clean.parquet", "quarantine.parquet", "scores.parquet")


def _command(source: Path, out: Path, extra: list[str]) -> list[str]:
    cli = [sys.executable, "-m", "sanitize_cli", "run", "--local", "--quiet"]
    return [*cli, str(source), "--out", str(out), *extra]


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _killed_after(command: list[str], marker: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    while not marker.exists():
        if proc.poll() is not None:
            raise SystemExit(f"run ended before {marker.name} appeared")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (emptied)")
    parser.add_argument("--rows", type=int, help="use only the first ROWS rows of the source")
    parser.add_argument("--after", default="embed", help="stage after which the run is killed")
    parser.add_argument("--config", help="TOML config passed to every run")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    source = args.source
    if args.rows:
        source = args.work / f"first{args.rows}.parquet"
        pq.write_table(pq.read_table(args.source).slice(0, args.rows), source)
    extra = ["--config", args.config] if args.config else []

    full_out, resumed_out = args.work / "full", args.work / "resumed"
    full = _timed(_command(source, full_out, extra))
    marker = resumed_out / ".work" / "done" / f"{args.after}.json"
    killed = _killed_after(_command(source, resumed_out, extra), marker)
    resumed = _timed(_command(source, resumed_out, extra))

    identical = all(
        (full_out / name).read_bytes() == (resumed_out / name).read_bytes() for name in PARQUET
    )
    timings = json.loads((full_out / "report.json").read_text())["stage_timings"]
    print(json.dumps({name: t["seconds"] for name, t in timings.items()}))
    print(f"uninterrupted run              {full:7.1f} s")
    print(f"killed once {args.after} was done  {killed:7.1f} s")
    print(f"resumed run                    {resumed:7.1f} s")
    print(f"saved by resuming              {full - resumed:7.1f} s ({1 - resumed / full:.0%})")
    print(f"parquet outputs byte-identical: {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
