"""A wheel of this project, installed into a fresh virtual environment, runs ``prune-sweep`` from any folder:
the Hydra config (``conf/`` at the top of the repository) ships inside the package as ``sweeps/conf``.

The fresh environment gets the wheel with ``--no-deps`` and sees the dependencies (torch, Ray, MLflow, ...)
of the environment running the tests through a ``.pth`` line naming its site-packages. A path line adds that
folder only; the ``.pth`` files inside it, among them this project's editable-install finder, are not run, so
the checkout cannot shadow the wheel (checked: ``sweeps`` imports from the fresh environment).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .sweep_helpers import compose_config

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "prune_core", "sweeps", "conf")
DESCRIPTION = "prune-sweep: sweeps of structured Taylor pruning."
GROUPS = ("data", "experiment", "finetune", "model", "prune", "ray", "sweep", "tracking")
EXAMPLES = (
    "prune-sweep sweep=increments prune.learnables_reduction_goal=0.5",
    "prune-sweep model=resnet20 data=cifar10",
    "prune-sweep sweep.grid.prune.learnables_reduction_increment=[0.05,0.1] +sweep.grid.prune.criterion=[taylor,l1]",
)
MY_GRID = "grid:\n  prune:\n    learnables_reduction_goal: [0.3]\nseeds: [0]\nmetric: val_accuracy\nmode: max\n"


def _uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin
    except ImportError:
        pytest.skip("needs uv (python3 -m pip install uv)")
    return find_uv_bin()


def _run(*cmd, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{cmd}: exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _setuptools_here() -> bool:
    """setuptools>=68 (pyproject.toml's build requirement) in this environment: build without fetching it."""
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 68
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the build inputs (the checkout gets no build/ or egg-info changes)."""
    uv, tmp = _uv(), tmp_path_factory.mktemp("wheel")
    src, dist = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    isolation = ["--no-build-isolation"] if _setuptools_here() else []
    _run(uv, "build", "--wheel", *isolation, "--python", sys.executable, "--out-dir", dist, cwd=src)
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel; the dependencies come from this environment."""
    uv, venv = _uv(), tmp_path_factory.mktemp("fresh") / "venv"
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = _bin(venv, "python")
    _run(uv, "pip", "install", "--quiet", "--offline", "--no-deps", "--python", python, wheel)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    deps = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))  # this environment's
    Path(site, "_taylor_prune_test_dependencies.pth").write_text("".join(f"{path}\n" for path in deps))
    return venv


def _env(venv: Path) -> dict:
    """The environment of an activated ``venv``: nothing points at the checkout or at a running Ray."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "RAY_ADDRESS"}}
    path = f"{_bin(venv, 'python').parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": path}


def test_wheel_holds_the_code_and_every_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"sweeps/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert {"sweeps/conf/config.yaml", "sweeps/conf/hydra/help/prune_sweep.yaml"} <= configs <= names
    code = {p.relative_to(ROOT).as_posix() for pkg in ("prune_core", "sweeps") for p in (ROOT / pkg).rglob("*.py")}
    assert code <= names, f"not in the wheel (a package missing from pyproject.toml's packages?): {code - names}"


def test_fresh_environment_imports_the_wheel_not_the_checkout(venv, tmp_path):
    code = "import site, sweeps; print(site.getsitepackages()[0], sweeps.__file__, sep='\\n')"
    out = _run(_bin(venv, "python"), "-c", code, cwd=tmp_path, env=_env(venv)).stdout
    site, module = map(Path, out.splitlines()[:2])
    assert module == site / "sweeps" / "__init__.py", module
    # sweeps.cli reads its config next to itself: site-packages/sweeps/conf (the help test below runs on it)
    assert (site / "sweeps" / "conf" / "config.yaml").is_file()


def test_help_says_what_it_does_then_the_groups_then_examples(venv, tmp_path):
    result = _run(_bin(venv, "prune-sweep"), "--help", cwd=tmp_path, env=_env(venv), timeout=180)
    text = result.stdout
    assert text.startswith(DESCRIPTION), text[:500]
    groups = text.index("== Config groups"), text.index("== Examples ==")
    listed = {line.split(":")[0] for line in text[groups[0] : groups[1]].splitlines() if ": " in line}
    assert listed == set(GROUPS), listed
    assert "model: digits_cnn, mnist1d_cnn, resnet20, resnet56, torchvision" in text
    assert all(example in text[groups[1] :] for example in EXAMPLES), text[groups[1] :]
    assert list(tmp_path.iterdir()) == []  # --help writes nothing


def test_user_config_groups_through_the_search_path(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "my_grid.yaml").write_text(MY_GRID)
    cfg = compose_config(f"hydra.searchpath=[file://{tmp_path}]", "sweep=my_grid")
    assert cfg["sweep"]["grid"] == {"prune": {"learnables_reduction_goal": [0.3]}}
    assert cfg["model"]["name"] == "digits_cnn"  # the packaged groups still compose around it


def test_installed_prune_sweep_runs_a_user_sweep_from_any_folder(venv, tmp_path):
    """The README's "Your own configs" flow with the wheel: a user sweep in ./myconf, cwd outside the checkout."""
    (tmp_path / "myconf" / "sweep").mkdir(parents=True)
    (tmp_path / "myconf" / "sweep" / "my_grid.yaml").write_text(MY_GRID)
    result = subprocess.run(
        [
            str(_bin(venv, "prune-sweep")),
            "--config-dir",
            "./myconf",
            "sweep=my_grid",
            "data.max_train_samples=160",
            "data.max_val_samples=120",
            "finetune.baseline_epochs=1",
            "finetune.mini_batch_size=32",
            "finetune.final_fine_tuning_epochs=0",
            "ray.num_cpus=2",
            "ray.max_failures=0",
            "tracking.log_models=false",
            f"output_dir={tmp_path / 'out'}",
        ],
        cwd=tmp_path,
        env=_env(venv),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    trials = result.stdout[result.stdout.index("\nTrials (best val_accuracy first):") :]
    assert re.search(r"\n00000 +0\.3 +0 +\d+ +\d+\.\d +\d+\.\d+ goal\n", trials), trials  # reached its goal
    assert "Pareto front" in trials and f"Sweep folder: {tmp_path / 'out' / 'digits_default'}" in trials
