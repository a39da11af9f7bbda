"""The ``sanitize`` commands other than ``run``: metrics, report, inspect, poison."""

from __future__ import annotations

import argparse
import json

from sanitize_cli.exits import EXIT_OK
from sanitize_cli.options import attack_params, config_from_args


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

    description = describe_source(args.source, config_from_args(args).data, sample=args.sample)
    if args.json:
        print(json.dumps(description.to_dict(), indent=2, default=str))
    else:
        print(description.text())
    return EXIT_OK


def cmd_poison(args: argparse.Namespace) -> int:
    from sanitize.attacks import get_attack, poison_source
    from sanitize.config import DataConfig

    attack = get_attack(args.attack, **attack_params(args.param))
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
