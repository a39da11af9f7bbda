"""The exit status of every outcome of the ``sanitize`` command."""

import signal

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_OUTPUT = 0, 1, 2, 3
EXIT_LOCKED = 4
# As a shell reports a process that a signal ended: 128 + the signal's number.
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM
SIGNAL_EXITS = {
    signal.SIGINT: ("sanitize: interrupted", EXIT_INTERRUPTED),
    signal.SIGTERM: ("sanitize: error: terminated by SIGTERM", EXIT_TERMINATED),
}
