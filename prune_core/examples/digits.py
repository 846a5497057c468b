"""Train a small CNN on scikit-learn's digits, then compress it with Taylor pruning.

Run: ``prune-digits`` (or ``python -m prune_core.examples.digits``). The digits ship with
scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import argparse

import torch

from prune_core import TrainingOptions, compress_network
from prune_core.data import load_digits_tensors
from prune_core.models import DigitsCNN
from prune_core.train import as_loader, evaluate, resolve_loss, train_network


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goal", type=float, default=0.7, help="learnables reduction goal in (0, 1]")
    parser.add_argument("--increment", type=float, default=0.1, help="learnables removed per pruning iteration")
    parser.add_argument("--baseline-epochs", type=int, default=10)
    parser.add_argument("--final-epochs", type=int, default=2, help="final fine-tuning epochs after the loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    x_train, y_train, x_val, y_val = load_digits_tensors(seed=args.seed)
    model = DigitsCNN()
    baseline_options = TrainingOptions(
        initial_learn_rate=0.05, mini_batch_size=64, max_epochs=args.baseline_epochs, device="cpu", seed=args.seed
    )
    train_network(model, (x_train, y_train), "crossentropy", baseline_options)
    options = TrainingOptions(  # the recommended recipe (README): cosine per iteration, then --final-epochs
        mini_batch_size=64,
        initial_learn_rate=0.01,
        learn_rate_schedule="cosine",
        validation_data=(x_val, y_val),
        validation_frequency=20,
        device="cpu",
        seed=args.seed,
    )
    loss, val_loader = resolve_loss("crossentropy"), as_loader(options.validation_data, options, train=False)
    before = evaluate(model, val_loader, loss, ["accuracy"], torch.device("cpu"))
    pruned, info = compress_network(
        model,
        (x_train, y_train),
        "crossentropy",
        options,
        learnables_reduction_goal=args.goal,
        learnables_reduction_increment=args.increment,
        final_fine_tuning_epochs=args.final_epochs,
        verbosity_level="pruning",
    )
    after = evaluate(pruned, val_loader, loss, ["accuracy"], torch.device("cpu"))
    print(f"learnables: {info.original_learnables} -> {info.learnables} ({100 * info.reduction:.1f}% fewer)")
    print(f"validation accuracy: {before['accuracy']:.2f}% -> {after['accuracy']:.2f}%")


if __name__ == "__main__":
    main()
