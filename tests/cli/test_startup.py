"""Start-up and the conventions every command shares: lazy imports, -h, --quiet, completion."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time

import pytest

from susl_cli.cli import LAZY_COMMANDS, app
from susl_cli.cli.common import OneLineErrorGroup

HEAVY = ("torch", "sklearn", "scipy", "pandas", "matplotlib", "h5py")


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["-h"]])
def test_version_and_help_import_no_heavy_library(args: list[str]):
    """`susl --version` / `--help` took 8-10 s on a loaded machine importing torch and sklearn."""
    code = ("import sys\nfrom susl_cli.cli import main\nsys.argv = ['susl', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                            text=True, timeout=120)
    seconds = time.perf_counter() - start
    print(f"susl {' '.join(args)}: {seconds:.2f} s")
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout[-300:]


def test_every_command_has_quiet_and_short_help_and_no_bool_placeholder(runner):
    for name in LAZY_COMMANDS:
        result = runner.invoke(app, [name, "-h"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (name, result.output)
        assert "--quiet" in result.output, name
        assert "<bool>" not in result.output, name
    assert "<bool>" not in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output


def test_listed_summaries_are_the_commands_own_first_paragraphs():
    """`susl --help` lists LAZY_COMMANDS' summaries without importing the commands."""
    group = OneLineErrorGroup(name="susl")
    for name, (_module, summary) in LAZY_COMMANDS.items():
        command = group.get_command(None, name)
        first = inspect.cleandoc(command.help).split("\n\n")[0]
        assert " ".join(first.split()) == summary, name


def test_root_help_lists_every_command_and_completion_options(runner):
    out = runner.invoke(app, ["-h"], env={"COLUMNS": "200"}).output
    for name in LAZY_COMMANDS:
        assert f" {name} " in out, name
    assert "--install-completion" in out and "--show-completion" in out


def test_show_completion_prints_a_script(runner):
    result = runner.invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output
