"""The `susl` command line: parse options, build a config, call one library function, render.

Each group of commands lives in its own module and registers itself on `app`.
"""

from susl_cli.cli.common import app

# Importing the command modules registers their commands on `app`.
# The order of these imports is the order `susl --help` lists the commands: the session's order.
from susl_cli.cli import data_commands, train_command  # noqa: E402,F401  isort: skip
from susl_cli.cli import report_commands, discover_command  # noqa: E402,F401  isort: skip
from susl_cli.cli import generate_commands  # noqa: E402,F401  isort: skip
from susl_cli.cli import experiment_command  # noqa: E402,F401  isort: skip


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
