"""Safety: nothing is unpickled from checkpoints, and the MLflow servers we document listen on 127.0.0.1."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _torch_load_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for folder in ("prune_core", "sweeps", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                func = getattr(node, "func", None)
                if isinstance(func, ast.Attribute) and func.attr == "load" and getattr(func.value, "id", "") == "torch":
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def test_every_torch_load_is_weights_only():
    calls = _torch_load_calls()
    assert len(calls) >= 4  # checkpoints, baselines, data cache, model.checkpoint
    unsafe = [
        where
        for where, call in calls
        if not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
    ]
    assert unsafe == []


def test_documented_mlflow_servers_listen_on_localhost():
    texts = [ROOT / "README.md", ROOT / "RELIABILITY.md", *(ROOT / "conf").rglob("*.yaml"), ROOT / "sweeps" / "cli.py"]
    commands = [m for path in texts for m in re.findall(r"mlflow (?:server|ui) --[^`\n]*", path.read_text())]
    assert len(commands) >= 3
    assert all("--host 127.0.0.1" in command for command in commands), commands
