"""The `susl` command line: parse options, build a config, call one library function, render.

Each group of commands lives in its own module and registers itself on `app`. The modules are
imported when their command is used (common.LAZY_COMMANDS), so start-up stays fast.
"""

from susl_cli.cli.common import LAZY_COMMANDS, app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["LAZY_COMMANDS", "app", "main"]
