"""The README's main-job command runs as written (after its pip installs), on real MNIST.

The command line is read from README.md, so the documented commands cannot drift from what
works. It takes about a minute on 2 CPU cores (one short training epoch on full MNIST).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from matplotlib import image as mpimg

README = Path(__file__).resolve().parent.parent / "README.md"


def _main_job_steps() -> list[list[str]]:
    text = README.read_text()
    lines = [line.strip() for line in text.splitlines() if "pip install . &&" in line]
    assert len(lines) == 1, "README must hold exactly one main-job command line"
    steps = [shlex.split(step) for step in lines[0].split("&&")]
    return [step for step in steps if step[0] == "susl"]


def test_readme_main_job_masks_trains_evaluates_and_samples(tmp_path: Path, data_dir: Path):
    steps = _main_job_steps()
    assert [s[1] for s in steps] == ["mask", "train", "evaluate", "sample"]
    env = {**os.environ, "SUSL_DATA_DIR": str(data_dir)}
    outputs = []
    for step in steps:
        command = [sys.executable, "-m", "susl_cli", *step[1:]]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, f"{shlex.join(step)}\n{result.stderr}"
        outputs.append(result.stdout)
    assert re.search(r"cluster accuracy \(majority mapping", outputs[2])
    picture = [a for a in steps[3] if a.endswith(".png")][0]
    assert mpimg.imread(tmp_path / picture).ndim == 3
