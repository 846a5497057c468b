"""Prunability matrix: which real architectures our engine traces, reproduces and prunes exactly.

Every torchvision classification model under 150M parameters and a sample of timm models
(:data:`TIMM_MODELS`), with random weights, each in its own subprocess under a time limit, so
that a crash or a timeout is a recorded outcome. Per model: does ``TaylorPrunableNetwork`` trace it,
is the unpruned wrapper faithful (the original's state untouched, the same outputs in eval and
train mode), how much is prunable, are two pruning rounds extracted exactly; and does
Torch-Pruning (L1 magnitude, ratio 0.3, classifier kept) prune it into a runnable model.

    python -m bench.coverage                                             # everything: hours on a CPU
    python -m bench.coverage --smoke                                     # 4 small models
    python -m bench.coverage --models torchvision:resnet18 timm:convnext_atto --timeout 600

Writes ``bench/results/coverage.json`` (``coverage_smoke.json`` with ``--smoke``) and a Markdown
summary next to it. On a CPU shared with other work, ``--threads 1`` avoids the many-fold slowdown
of torch's spinning threads competing for busy cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bench.common import write_report
from bench.reports import RESULTS

MAX_PARAMS = 150_000_000  # torchvision models above this are skipped
TOLERANCE = 1e-5  # relative max error: max |expected - actual| / max |expected|
DEFAULT_TIMEOUT = 240
SMOKE_TIMEOUT = 120
SMOKE = ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "timm:resnet18", "timm:convnext_atto"]
TORCHVISION_SIZES = {"inception_v3": 299}  # input side where torchvision's default (224) does not apply
MARKER = "COVERAGE_RECORD "  # prefixes the child process's JSON record on its stdout
ROOT = Path(__file__).resolve().parents[1]

# The timm sample (timm 1.0.x names, all in timm.list_models()): one or more small members of each
# family, keyed by the timm module that defines them; several families a line, by kind.
# fmt: off
TIMM_MODELS: dict[str, tuple[str, ...]] = {
    # ResNet relatives: residual adds, squeeze-excitation, split attention, selective kernels, anti-aliasing
    "resnet": ("resnet18", "seresnext26d_32x4d"), "resnetv2": ("resnetv2_18",), "senet": ("legacy_seresnet18",),
    "res2net": ("res2net50_26w_4s",), "resnest": ("resnest14d",), "sknet": ("skresnet18",), "tresnet": ("tresnet_m",),
    "byobnet": ("resnext26ts", "gernet_s", "repvgg_a0", "mobileone_s0"),
    # concatenations, cross-stage partial and multi-branch convnets; plain and normaliser-free ones
    "cspnet": ("cspresnet50", "cspdarknet53", "darknet53"), "dpn": ("dpn68",), "densenet": ("densenet121",),
    "dla": ("dla34",), "vovnet": ("ese_vovnet19b_dw",), "selecsls": ("selecsls42b",), "hrnet": ("hrnet_w18_small",),
    "inception_v3": ("inception_v3",), "xception_aligned": ("xception41",), "vgg": ("vgg11_bn",),
    "regnet": ("regnetx_002", "regnety_002"), "nfnet": ("dm_nfnet_f0",),
    # mobile convnets: depthwise, inverted residuals, ghost modules, re-parameterisable blocks
    "efficientnet": ("efficientnet_b0", "tinynet_a", "mnasnet_100"),
    "mobilenetv3": ("mobilenetv3_small_050", "mobilenetv4_conv_small", "lcnet_050"), "ghostnet": ("ghostnet_100",),
    "rexnet": ("rexnet_100",), "repvit": ("repvit_m0_9",), "hgnet": ("hgnetv2_b0",),
    # modern convnets and MetaFormers
    "convnext": ("convnext_atto",), "convmixer": ("convmixer_768_32",), "inception_next": ("inception_next_atto",),
    "mambaout": ("mambaout_femto",), "metaformer": ("poolformer_s12",),
    # conv-attention hybrids
    "edgenext": ("edgenext_xx_small",), "fastvit": ("fastvit_t8",), "mobilevit": ("mobilevit_xxs", "mobilevitv2_050"),
    "efficientvit_mit": ("efficientvit_b0",), "efficientvit_msra": ("efficientvit_m0",),
    "efficientformer": ("efficientformer_l1",), "levit": ("levit_128s",), "coat": ("coat_lite_tiny",),
    "visformer": ("visformer_tiny",), "convit": ("convit_tiny",), "gcvit": ("gcvit_xxtiny",),
    "maxxvit": ("maxvit_tiny_tf_224",), "davit": ("davit_tiny",), "tiny_vit": ("tiny_vit_5m_224",),
    # vision transformers (hierarchical, then plain) and MLPs
    "pvt_v2": ("pvt_v2_b0",), "twins": ("twins_svt_small",), "pit": ("pit_ti_224",), "nest": ("nest_tiny",),
    "swin_transformer": ("swin_tiny_patch4_window7_224",), "vision_transformer": ("vit_tiny_patch16_224",),
    "deit": ("deit_tiny_patch16_224",), "cait": ("cait_xxs24_224",), "crossvit": ("crossvit_tiny_240",),
    "tnt": ("tnt_s_patch16_224",), "volo": ("volo_d1_224",), "xcit": ("xcit_nano_12_p16_224",),
    "mlp_mixer": ("mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224"),
}
# fmt: on


def all_specs() -> list[str]:
    """``source:name`` of every torchvision classification model and of the timm sample."""
    import torchvision

    tv = [f"torchvision:{name}" for name in torchvision.models.list_models(module=torchvision.models)]
    return tv + [f"timm:{name}" for names in TIMM_MODELS.values() for name in names]


def build(source: str, name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The model with random weights and the shape of its input (a batch of 2 at its default size)."""
    if source == "torchvision":
        import torchvision

        side = TORCHVISION_SIZES.get(name, 224)
        return without_zero_parameters(torchvision.models.get_model(name, weights=None)), (2, 3, side, side)
    if source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
        return without_zero_parameters(model), (2, *model.pretrained_cfg["input_size"])
    raise ValueError(f"unknown source {source!r}: use torchvision or timm")


@torch.no_grad()
def without_zero_parameters(model: nn.Module) -> nn.Module:
    """Give every all-zero parameter small random values: zero-initialised heads (ViT) and biases
    would make the output comparisons vacuous."""
    for param in model.parameters():
        if param.numel() and not param.any():
            param.normal_(0.0, 0.02)
    return model


def count(model: nn.Module) -> int:
    """Parameters (learnables) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def classifier(model: nn.Module) -> list[nn.Module]:
    """The layers Torch-Pruning keeps: timm's ``get_classifier()``, else the last ``nn.Linear``
    (the last conv for a model without one, such as SqueezeNet)."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return [m for m in (head if isinstance(head, tuple | list) else [head]) if isinstance(m, nn.Module)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return (linears or [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)])[-1:]


def tensors(output: object) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or nested tuples, lists and dicts of them)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    return [t for item in output for t in tensors(item)] if isinstance(output, tuple | list) else []


def relative_error(expected: object, actual: object) -> float:
    """max |expected - actual| / max |expected| over the outputs' tensors (which must match in shape)."""
    expected_shapes, actual_shapes = ([tuple(t.shape) for t in tensors(out)] for out in (expected, actual))
    if not expected_shapes or expected_shapes != actual_shapes:
        raise ValueError(f"outputs differ: {expected_shapes} vs {actual_shapes}")
    pairs = list(zip(tensors(expected), tensors(actual), strict=True))
    scale = max(e.detach().double().abs().max().item() for e, _ in pairs) or 1e-12
    return max((e.detach().double() - a.detach().double()).abs().max().item() for e, a in pairs) / scale


def no_dropout(model: nn.Module) -> nn.Module:
    """``model`` with every dropout, drop-path and stochastic-depth probability set to 0."""
    from torchvision.ops import StochasticDepth

    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd | StochasticDepth):
            module.p = 0.0
        for attr in ("drop_prob", "drop_path_rate"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)
    return model


def short(error: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def attempt(rec: dict, stage: str, fn: Callable[[], object]) -> object | None:
    """``fn()``, or None with the exception's message in ``rec["errors"][stage]``: a model that breaks
    a stage is a result of the benchmark."""
    try:
        return fn()
    except Exception as error:
        rec["errors"][stage] = short(error)
        return None


def blank(source: str, name: str) -> dict:
    """A record with every field; None stands for "not measured"."""
    fields = (
        "params input_shape analysis_s traced faithful faithful_state faithful_eval faithful_train eval_error "
        "train_error prunable_units prunable_layers max_reduction exact exact_error learnables_match "
        "pruned_units pruned_reduction tp_runnable tp_error tp_analysis_s tp_reduction seconds wall_s"
    )
    return {"source": source, "name": name, "outcome": None, **dict.fromkeys(fields.split()), "errors": {}}


def eval_error(model: nn.Module, wrapper: nn.Module, x: torch.Tensor) -> float:
    """Relative error of the wrapper's output against the model's, both in eval mode."""
    with torch.no_grad():
        return relative_error(model.eval()(x), wrapper.eval()(x))


def train_error(model: nn.Module, wrapper: nn.Module, x: torch.Tensor) -> float:
    """One train-mode forward of copies of both, without dropout, from the same random seed."""
    outputs = []
    for net in (copy.deepcopy(model), copy.deepcopy(wrapper)):
        no_dropout(net).train()
        torch.manual_seed(0)
        outputs.append(net(x))
    return relative_error(*outputs)


def taylor_prune(wrapper: nn.Module, x: torch.Tensor, max_to_prune: int) -> int:
    """Taylor-score ``x`` as ``compress_network`` does (training mode, where auxiliary heads run too;
    ``score_on_backward``), then ``update_prunables``."""
    out, acts = wrapper.train().forward_with_activations(x)
    wrapper.score_on_backward(acts)
    sum(t.float().square().mean() for t in tensors(out)).backward()
    return wrapper.update_prunables(max_to_prune=max_to_prune)


def prune_and_extract(wrapper: nn.Module, x: torch.Tensor, params: int) -> dict:
    """Two rounds of Taylor scoring and ``update_prunables`` (a quarter of the units each), then the
    extracted module against the masked wrapper in eval mode."""
    step = max(1, wrapper.num_prunables // 4)
    removed = sum(taylor_prune(wrapper, x, step) for _ in range(2))
    small = wrapper.to_module().eval()
    wrapper.eval()
    with torch.no_grad():
        error = relative_error(wrapper(x), small(x))
    match = wrapper.learnables == count(small)
    return {
        "pruned_units": removed,
        "exact_error": error,
        "learnables_match": match,
        "pruned_reduction": 1 - count(small) / params,
        "exact": error < TOLERANCE and match,
    }


def measure_ours(model: nn.Module, x: torch.Tensor, rec: dict) -> None:
    """Our engine's fields of ``rec``, through its public API only."""
    from prune_core import TaylorPrunableNetwork, analyze_network

    before = {key: value.detach().clone() for key, value in model.state_dict().items()}
    start = time.perf_counter()
    wrapper = attempt(rec, "trace", lambda: TaylorPrunableNetwork(model.eval(), x))
    rec["analysis_s"] = time.perf_counter() - start
    rec["traced"] = wrapper is not None
    if wrapper is None:
        return
    after = model.state_dict()
    rec["faithful_state"] = after.keys() == before.keys() and all(torch.equal(v, after[k]) for k, v in before.items())
    rec["eval_error"] = attempt(rec, "eval", lambda: eval_error(model, wrapper, x))
    rec["train_error"] = attempt(rec, "train", lambda: train_error(model, wrapper, x))
    rec["faithful_eval"] = rec["eval_error"] is not None and rec["eval_error"] < TOLERANCE
    rec["faithful_train"] = rec["train_error"] is not None and rec["train_error"] < TOLERANCE
    rec["faithful"] = rec["faithful_state"] and rec["faithful_eval"] and rec["faithful_train"]
    rec["prunable_units"], rec["prunable_layers"] = wrapper.num_prunables, len(wrapper.prunable_layer_names)
    rec["max_reduction"] = attempt(rec, "analyze", lambda: analyze_network(model, x).max_reduction)
    if wrapper.num_prunables:
        rec.update(attempt(rec, "prune", lambda: prune_and_extract(wrapper, x, rec["params"])) or {"exact": False})


def measure_torch_pruning(model: nn.Module, x: torch.Tensor, rec: dict) -> None:
    """Torch-Pruning's fields of ``rec``: one step of L1-magnitude pruning at ratio 0.3 of a copy,
    then a forward whose outputs must keep their shapes."""
    import torch_pruning as tp

    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = net(x)
    start = time.perf_counter()
    pruner = tp.pruner.BasePruner(
        net, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.3, ignored_layers=classifier(net)
    )
    rec["tp_analysis_s"] = time.perf_counter() - start
    pruner.step()
    with torch.no_grad():
        relative_error(expected, net(x))  # raises when the outputs changed shape
    rec["tp_reduction"] = 1 - count(net) / rec["params"]


PARTS = ("engine", "peer")
PEER_FIELDS = ("tp_runnable", "tp_error", "tp_analysis_s", "tp_reduction")
"""What a model's process measures: our engine, or Torch-Pruning (each has its own time limit)."""


def measure(source: str, name: str, model: nn.Module, x: torch.Tensor, parts: tuple[str, ...] = PARTS) -> dict:
    """The record of one built model on input ``x``; failures are recorded, never raised."""
    rec = blank(source, name)
    start = time.perf_counter()
    rec.update(outcome="ok", params=count(model), input_shape=list(x.shape))
    if "engine" in parts:
        attempt(rec, "engine", lambda: measure_ours(model, x, rec))
    if "peer" in parts:
        try:
            measure_torch_pruning(model, x, rec)
            rec["tp_runnable"] = True
        except Exception as error:
            rec.update(tp_runnable=False, tp_error=short(error))
    rec["seconds"] = time.perf_counter() - start
    return rec


def record(spec: str, parts: tuple[str, ...] = PARTS) -> dict:
    """Build ``source:name`` (seed 0) and measure it; torchvision models over MAX_PARAMS are skipped."""
    source, _, name = spec.partition(":")
    torch.manual_seed(0)
    try:
        model, shape = build(source, name)
    except Exception as error:
        return blank(source, name) | {"outcome": "build_error", "errors": {"build": short(error)}}
    params = count(model)
    if source == "torchvision" and params > MAX_PARAMS:
        return blank(source, name) | {"outcome": "skipped", "params": params}
    return measure(source, name, model, torch.randn(shape), parts)


def run_part(spec: str, part: str, timeout: float, threads: int | None) -> dict:
    """:func:`record` of one part of ``spec`` in a fresh Python process, killed after ``timeout`` seconds."""
    command = [sys.executable, "-m", "bench.coverage", "--one", spec, "--part", part]
    command += ["--threads", str(threads)] if threads else []
    source, _, name = spec.partition(":")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return blank(source, name) | {"outcome": "timeout", "errors": {"process": f"killed after {timeout:g} s"}}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if lines:
        return json.loads(lines[-1].removeprefix(MARKER))
    tail = " / ".join(proc.stderr.strip().splitlines()[-2:])[-300:]
    return blank(source, name) | {"outcome": "crashed", "errors": {"process": f"exit {proc.returncode}: {tail}"}}


def run_one(
    spec: str, timeout: float, threads: int | None = None, peer_timeout: float | None = None, peer: bool = True
) -> dict:
    """Our engine's record of ``spec``, then (unless ``peer`` is false) Torch-Pruning's in a process
    of its own (killed after ``peer_timeout``, default ``timeout``): the peer timing out or crashing
    is its outcome and leaves ours intact."""
    start = time.perf_counter()
    rec = run_part(spec, "engine", timeout, threads)
    if rec["outcome"] == "ok" and peer:
        peer_rec = run_part(spec, "peer", peer_timeout or timeout, threads)
        if peer_rec["outcome"] == "ok":
            rec.update({key: peer_rec[key] for key in PEER_FIELDS})
        else:
            rec.update(tp_runnable=False, tp_error=f"{peer_rec['outcome']}: {peer_rec['errors'].get('process', '')}")
    rec["wall_s"] = time.perf_counter() - start
    return rec


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[value]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


CHECKS = {
    "traced": lambda r: r["traced"] is True,
    "faithful": lambda r: r["faithful"] is True,
    "prunable": lambda r: (r["prunable_units"] or 0) > 0,
    "exact, max reduction >= 0.5": lambda r: r["exact"] is True and (r["max_reduction"] or 0) >= 0.5,
    "Torch-Pruning runnable": lambda r: r["tp_runnable"] is True,
}
"""What the totals count, per model that ran."""


def totals(records: list[dict]) -> dict[str, dict[str, int]]:
    """Per source: models run, how many pass each of :data:`CHECKS`, timeouts, crashes, skipped."""
    result = {}
    for source in dict.fromkeys(r["source"] for r in records):
        rows = [r for r in records if r["source"] == source]
        run = [r for r in rows if r["outcome"] != "skipped"]
        counts = {"models": len(run)} | {check: sum(map(passes, run)) for check, passes in CHECKS.items()}
        result[source] = counts | {
            outcome: sum(r["outcome"] == outcome for r in rows) for outcome in ("timeout", "crashed", "skipped")
        }
    return result


def totals_table(records: list[dict]) -> list[str]:
    """Per source: models run, and how many pass each check."""
    counted = totals(records)
    columns = list(next(iter(counted.values()), {}))
    lines = ["| source | " + " | ".join(columns) + " |", "|---|" + "--:|" * len(columns)]
    return lines + [f"| {source} | " + " | ".join(str(c[k]) for k in columns) + " |" for source, c in counted.items()]


def model_row(r: dict) -> str:
    """One record as a row of the per-model table."""
    faithful = (
        "/".join(_yes(r[k]) for k in ("faithful_state", "faithful_eval", "faithful_train")) if r["traced"] else "-"
    )
    exact = "-" if r["exact"] is None else f"{_yes(r['exact'])} ({_num(r['exact_error'], '.0e')})"
    notes = [r["outcome"]] if r["outcome"] != "ok" else []
    notes += [f"{stage}: {message}" for stage, message in r["errors"].items()]
    notes += [f"TP: {r['tp_error']}"] if r["tp_error"] else []
    size = _num(r["params"] / 1e6 if r["params"] else None, ".1f")
    ours = [_num(r["prunable_units"], "d"), _num(r["prunable_layers"], "d"), _num(r["max_reduction"], ".2f"), exact]
    tp = [_yes(r["tp_runnable"]), _num(r["tp_reduction"], ".2f"), _num(r["tp_analysis_s"], ".1f")]
    cells = [r["source"], r["name"], size, _yes(r["traced"]), faithful, *ours, _num(r["analysis_s"], ".1f"), *tp]
    cells += [_num(r["wall_s"], ".0f"), "; ".join(notes).replace("|", "/")[:160]]
    return "| " + " | ".join(cells) + " |"


def markdown(report: dict) -> str:
    """The summary: totals per source, then one row per model."""
    results, records = report["results"], report["results"]["records"]
    head = [
        f"## Prunability matrix ({report['date']}, {report['cpu_count']} CPUs, torch {report['torch']})\n",
        f"`{results['command']}`: timeout {results['timeout_s']:g} s per model, relative tolerance {TOLERANCE:g}. "
        "faithful = state untouched / eval outputs / train outputs; exact = two pruning rounds extracted exactly "
        "(relative error) with matching learnables; TP = Torch-Pruning, L1 magnitude, ratio 0.3.\n",
    ]
    rows = [
        "| source | model | params (M) | traced | faithful | units | layers | max red. | exact (error) "
        "| analysis s | TP runnable | TP red. | TP s | wall s | notes |",
        "|---|---|--:|---|---|--:|--:|--:|---|--:|---|--:|--:|--:|---|",
        *(model_row(r) for r in records),
    ]
    return "\n".join([*head, *totals_table(records), "", *rows]) + "\n"


def save(records: list[dict], out: Path, command: str, timeout: float, threads: int | None) -> dict:
    """Write the JSON report (machine, command line, records) and its Markdown summary next to it."""
    import timm
    import torch_pruning
    import torchvision

    results = {
        "command": command,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {m.__name__: getattr(m, "__version__", "?") for m in (torchvision, timm, torch_pruning)},
        "timeout_s": timeout,
        "child_threads": threads,
        "records": records,
    }
    report = write_report(out.stem, torch.device("cpu"), results, out)
    out.with_suffix(".md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", metavar="SOURCE:NAME", help="only these (default: all)")
    parser.add_argument("--smoke", action="store_true", help=f"only {', '.join(SMOKE)}")
    parser.add_argument("--timeout", type=float, default=None, help=f"seconds per model (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of each model's process")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default bench/results/coverage.json)")
    parser.add_argument(
        "--peer-timeout", type=float, default=None, help="seconds for Torch-Pruning (default --timeout)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="replace only these models' records in the existing --out report"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="--merge, running only the models without a finished record (timeouts rerun)",
    )
    parser.add_argument(
        "--engine-only", action="store_true", help="--merge, rerunning our engine only: the peer's fields are kept"
    )
    parser.add_argument("--one", metavar="SOURCE:NAME", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # what the child measures
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(MARKER + json.dumps(record(args.one, (args.part,) if args.part else PARTS)), flush=True)
        return {}
    specs = args.models or (SMOKE if args.smoke else all_specs())
    for spec in specs:
        if spec.partition(":")[0] not in ("torchvision", "timm"):
            parser.error(f"{spec!r}: expected torchvision:NAME or timm:NAME")
    timeout = args.timeout or (SMOKE_TIMEOUT if args.smoke else DEFAULT_TIMEOUT)
    out = args.out or RESULTS / ("coverage_smoke.json" if args.smoke else "coverage.json")
    command = shlex.join(["python", "-m", "bench.coverage", *(sys.argv[1:] if argv is None else argv)])
    records: list[dict] = []
    if args.merge or args.resume or args.engine_only:
        previous = json.loads(out.read_text())["results"]
        records, command = previous["records"], f"{previous['command']}; then {command}"
    if args.resume:
        done = {f"{r['source']}:{r['name']}" for r in records if r["outcome"] != "timeout"}
        specs = [spec for spec in specs if spec not in done]
    for i, spec in enumerate(specs, 1):
        rec = run_one(spec, timeout, args.threads, args.peer_timeout, peer=not args.engine_only)
        same = [j for j, r in enumerate(records) if (r["source"], r["name"]) == (rec["source"], rec["name"])]
        if same and args.engine_only:
            rec.update({key: records[same[0]][key] for key in PEER_FIELDS})
        if same:
            records[same[0]] = rec
        else:
            records.append(rec)
        print(f"[{i}/{len(specs)}] {spec}: {rec['outcome']} in {rec['wall_s']:.0f} s", flush=True)
        report = save(records, out, command, timeout, args.threads)  # after each model: a killed run keeps its records
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
