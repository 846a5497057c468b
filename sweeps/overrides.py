"""The ``prune-sweep`` command line, checked before Hydra runs the sweep (so before Ray, MLflow or any training).

Hydra reports a misspelt key, config group option or flag in its own multi-line form (exit 1), keeps a
``+key=value`` the sweep never reads, and the sweep grid silently overwrites a command-line value of a key it
sweeps. :func:`check_command_line` composes the config the way ``@hydra.main`` does (same search path,
``--config-dir``, ``--config-path``, ``--config-name``, ``hydra.*`` overrides) and raises one :class:`ConfigError`
for each of these.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from hydra._internal.hydra import Hydra
from hydra._internal.utils import (
    create_automatic_config_search_path,
    detect_calling_file_or_module_from_task_function,
    detect_task_name,
    get_args_parser,
)
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from sweeps.config import ConfigError, did_you_mean, dotted_keys, flatten, unknown_key
from sweeps.space import space_entries

FREE_FORM = ("sweep.grid", "sweep.space", "sweep.objectives", "sweep.constraints", "model.layer_subsets")
"""Maps whose keys the user chooses (grid axes, named layer subsets): a new key is added with ``+``."""
OPTIONAL_KEYS = ("data.cache_dir",)
"""Keys the sweep reads with a default that no config file lists: added with ``+``."""


def check_command_line(argv: list[str], app: Callable[..., Any], config_path: str, config_name: str = "config") -> None:
    """ConfigError for a bad option, override or group option, a ``+key`` the sweep ignores, a grid-swept override.

    ``app`` is the ``@hydra.main`` task function, ``config_path`` and ``config_name`` its arguments. ``--help``,
    ``--hydra-help``, ``--shell-completion`` and ``--experimental-rerun`` are left to Hydra.
    """
    args = _parse_args(argv)
    if args.help or args.hydra_help or args.shell_completion or args.experimental_rerun is not None:
        return
    overrides = _parse_overrides(args.overrides)
    name = args.config_name or config_name
    with _hydra(args, app, config_path) as hydra:
        lines = [o.input_line for o in overrides]
        swept = any(o.is_sweep_override() for o in overrides)
        if args.multirun or (swept and hydra.get_mode(name, lines) == RunMode.MULTIRUN):
            composed = [o for o in overrides if not o.is_sweep_override()]  # Hydra composes a job per swept value
        else:
            composed = overrides
        selection = [o for o in composed if o.is_hydra_override() or "." not in o.key_or_group]  # groups, top level
        reference = _compose(hydra, name, selection)
        choices = dict(reference.hydra.runtime.choices)
        values = [o for o in overrides if not o.is_hydra_override() and o.key_or_group not in choices]
        _check_keys(values, dotted_keys(_plain(reference)))
        cfg = reference if len(selection) == len(composed) else _compose(hydra, name, composed)
    _check_swept(_plain(cfg), values, choices.get("sweep"))


def _parse_args(argv: list[str]) -> argparse.Namespace:
    """Hydra's own argument parser; an unknown option or a bad option value raises ConfigError."""
    parser = get_args_parser()
    parser.error = _option_error  # type: ignore[method-assign]  # argparse reports through error(): raise, not exit
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = next((arg for arg in unknown if arg.startswith("-")), None)
        if option is None:
            _option_error(f"{' '.join(unknown)} follows an option; write all key=value overrides together")
        options = sorted(s for action in parser._actions for s in action.option_strings if s.startswith("--"))
        _option_error(
            f"{option} is not an option; {did_you_mean(option.split('=')[0], options)}options: {', '.join(options)}"
        )
    return args


def _option_error(message: str) -> NoReturn:
    raise ConfigError(f"{message} (prune-sweep --help shows the options and config groups).")


def _parse_overrides(lines: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as err:
        raise ConfigError(f"cannot parse the override {err.override!r}: {' '.join(err.message.split())}") from None


@contextmanager
def _hydra(args: argparse.Namespace, app: Callable[..., Any], config_path: str) -> Iterator[Hydra]:
    """Hydra set up as ``@hydra.main`` sets it up for ``args`` (its config search path, ``--config-dir`` first)."""
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(app)
    search_path = create_automatic_config_search_path(calling_file, calling_module, args.config_path or config_path)
    if args.config_dir is not None:
        folder = os.path.abspath(args.config_dir)
        if not os.path.isdir(folder):
            raise ConfigError(
                f"--config-dir={args.config_dir} is not allowed: {folder} is not a folder; use a folder of config "
                "groups, e.g. DIR with DIR/sweep/my_grid.yaml for sweep=my_grid."
            )
        search_path.prepend("command-line", f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    hydra = Hydra.create_main_hydra2(detect_task_name(calling_file, calling_module), search_path)
    try:
        yield hydra
    finally:
        GlobalHydra.instance().clear()


def _compose(hydra: Hydra, name: str, overrides: list[Override]) -> DictConfig:
    """The config (with its ``hydra`` node) the app would get; Hydra's errors become one ConfigError."""
    lines = [o.input_line for o in overrides]
    try:
        return hydra.compose_config(name, lines, run_mode=RunMode.RUN, from_shell=True, with_log_configuration=False)
    except MissingConfigException as err:
        group, _, option = (err.missing_cfg_file or "").rpartition("/")
        if not group or not err.options:
            raise ConfigError(" ".join(str(err).split())) from err
        line = next((o.input_line for o in overrides if o.key_or_group == group), f"{group}={option}")
        hint = did_you_mean(option, err.options)
        raise ConfigError(
            f"{line}: config group {group} has no option {option!r}; {hint}options: {', '.join(err.options)}."
        ) from err
    except (HydraException, OmegaConfBaseException) as err:
        key = getattr(err.__cause__, "full_key", "")
        line = next((o.input_line for o in overrides if o.key_or_group == key), None)
        if isinstance(err.__cause__, (ConfigAttributeError, ConfigKeyError)) and line and not key.startswith("hydra"):
            known = dotted_keys(_plain(_compose(hydra, name, [o for o in overrides if o.is_hydra_override()])))
            raise ConfigError(f"{line}: {unknown_key(key, known)}") from err
        raise ConfigError(" ".join(str(err).split())) from err


def _plain(cfg: DictConfig) -> dict:
    """The app's part of a composed config, unresolved."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return plain


def _check_keys(overrides: list[Override], known: set[str]) -> None:
    """Every value override names a key the sweep reads; only free-form maps and optional keys take new keys."""
    for override in overrides:
        key, line = override.key_or_group, override.input_line
        if override.is_delete() or override.package is not None:
            continue
        adds = override.is_add() or override.is_force_add()
        exists = key in known and not ("." not in key and override.is_add())  # a top-level +key added itself
        addable = key in OPTIONAL_KEYS or key.startswith(tuple(f"{prefix}." for prefix in FREE_FORM))
        if override.is_add() and exists:
            raise ConfigError(f"{line}: {key} already exists; set it without +: {line[1:]}")
        if not exists and not addable:
            raise ConfigError(f"{line + ' would be ignored' if adds else line}: {unknown_key(key, known - {key})}")
        if not exists and not adds:
            raise ConfigError(f"{line}: {key} is not in the config yet; add it with +{line}")


def _check_swept(cfg: dict, overrides: list[Override], sweep: str | None) -> None:
    """No value override of a key the sweep's grid or search space sets in every trial (it would be overwritten
    without a word)."""
    section = cfg.get("sweep") or {}
    grid, space = section.get("grid"), section.get("space")
    swept = {
        axis: f"the grid of sweep={sweep} sets {axis} in every trial (sweep.grid.{axis}={_syntax(values)})"
        for axis, values in (flatten(grid) if isinstance(grid, dict) else {}).items()
    }
    if isinstance(space, dict) and section.get("search") == "optuna":
        swept |= {
            key: f"the search of sweep={sweep} samples {key} in every trial (sweep.space.{key})"
            for key in space_entries(space)
        }
    for override in overrides:
        key = override.key_or_group
        if key.split(".")[0] == "sweep":
            continue
        for axis, why in swept.items():
            if axis == key or axis.startswith(f"{key}."):
                fix = (
                    f"to run only this value use sweep=single (no grid), or put the values into the grid: "
                    f"sweep.grid.{key}=[{override.get_value_string()}]"
                    if axis in flatten(grid or {})
                    else f"remove it from the space (~sweep.space.{axis}), or narrow its entry instead"
                )
                raise ConfigError(f"{override.input_line} would be overwritten: {why}; {fix}")


def _syntax(value: Any) -> str:
    """``value`` as an override writes it: ``[0.1,0.2]``, ``[all,late_convs]``, ``null``, ``true``."""
    if isinstance(value, list):
        return f"[{','.join(_syntax(item) for item in value)}]"
    if isinstance(value, bool) or value is None:
        return str(value).lower().replace("none", "null")
    return str(value)
