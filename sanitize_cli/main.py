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
import errno
import logging
import os
import signal
import sys

from sanitize.errors import ConfigError, InputError, OutputError, SanitizeError
from sanitize.pipeline.lock import RunLockedError
from sanitize.report.progress import TerminalProgress, listening
from sanitize_cli.exits import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_OUTPUT,
    SIGNAL_EXITS,
)
from sanitize_cli.parser import build_parser

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_OUTPUT", "build_parser", "main"]


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
        print(SIGNAL_EXITS[signal.SIGINT][0], file=sys.stderr)
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
