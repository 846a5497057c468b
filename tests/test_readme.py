"""The README's Python examples run as written (one headed ``# torchrun ...`` runs under that command)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```", (Path(__file__).parents[1] / "README.md").read_text(), re.S)
TORCHRUN = "# torchrun "


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    block = BLOCKS[index]
    if not block.startswith(TORCHRUN):
        exec(compile(block, f"README block {index}", "exec"), {})
        return
    command = shlex.split(block.splitlines()[0].removeprefix("# "))
    script = tmp_path / command[-1]
    script.write_text(block)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    result = subprocess.run([torchrun, *command[1:-1], str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fewer learnable" in result.stdout  # rank 0's summary, once
    assert result.stdout.count("fewer learnable") == 1, result.stdout
