"""Command line: ``ntkdemo [run] [options]`` and the other subcommands.

Every error a user can cause ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import NTKDemoError

DESCRIPTION = """\
Show that an infinitely wide ReLU network trained by gradient descent is kernel
regression with its Neural Tangent Kernel: draw a class-balanced sample of
Fashion-MNIST, compute the NTK in closed form, solve K(X,X) A = Y once by
Cholesky, and predict the test images with K(x,X) A. No network is built and no
gradient step is taken.
"""


class UsageError(Exception):
    """A command-line argument could not be parsed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UsageError(f"{self.prog}: {message} (see --help)")


def per_class_count(text: str) -> int | str:
    """Parse ``--*-per-class``: a whole number >= 1 or ``all``."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def class_list(text: str) -> list[int]:
    """Parse ``--classes 1,3``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class ids such as 1,3, got {text!r}"
        ) from None


def nonnegative_float(text: str) -> float:
    """Parse a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Parse a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_data_options(parser: argparse.ArgumentParser, train: int, test: int) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=None,
                       help="hub id or local folder in the hub layout (default: $NTKDEMO_DATASET, "
                            "else zalando-datasets/fashion_mnist)")
    group.add_argument("--train-per-class", type=per_class_count, default=train,
                       help=f"training images per class, or 'all' (default: {train})")
    group.add_argument("--test-per-class", type=per_class_count, default=test,
                       help=f"test images per class, or 'all' (default: {test})")
    group.add_argument("--classes", type=class_list, default=None,
                       help="comma-separated label ids to keep, e.g. 1,3 for Trouser vs Dress")
    group.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    group.add_argument("--image-column", default=None, help="image column (default: found)")
    group.add_argument("--label-column", default=None, help="label column (default: found)")
    group.add_argument("--train-split", default="train", help="training split (default: train)")
    group.add_argument("--test-split", default="test", help="test split (default: test)")


def _add_kernel_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("kernel")
    group.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk",
                       help="ntk: network trained by gradient descent; nngp: only its readout "
                            "(default: ntk)")
    group.add_argument("--depth", type=positive_int, default=1,
                       help="hidden ReLU layers (default: 1, the mission formula)")
    group.add_argument("--w-std", type=nonnegative_float, default=1.0,
                       help="weight standard deviation (default: 1)")
    group.add_argument("--b-std", type=nonnegative_float, default=0.0,
                       help="bias standard deviation (default: 0)")
    group.add_argument("--ridge", type=nonnegative_float, default=0.0,
                       help="ridge added to K's diagonal (default: 0, interpolation)")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="ntkdemo-out",
                        help="folder for metrics.json and figures (default: ntkdemo-out)")
    parser.add_argument("--quiet", action="store_true", help="print only the errors")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="ntkdemo", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"ntkdemo {metadata.version('ntkdemo')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="the demo (the default command)",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data_options(run, train=100, test=50)
    _add_kernel_options(run)
    _add_output_options(run)
    run.set_defaults(handler=command_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntkdemo``; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if not arguments or (arguments[0] not in known and arguments[0] not in ("-h", "--help", "--version")):
        arguments.insert(0, "run")
    try:
        options = parser.parse_args(arguments)
        return options.handler(options)
    except (UsageError, NTKDemoError) as exc:
        print(f"ntkdemo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ntkdemo: interrupted; files already written are complete", file=sys.stderr)
        return 130


class Console:
    """Prints progress lines and tables unless quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    def progress(self, description: str):
        """A tqdm factory for block loops, or None when quiet or not on a terminal."""
        if self.quiet or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return lambda iterable: tqdm(iterable, desc=description, leave=False, unit="block")


def load_from_options(options, say: Console):
    """Load the sample the options describe, timing it."""
    from .data import load_sample, resolve_dataset

    source = resolve_dataset(options.dataset)
    say(f"loading {source} ...")
    start = time.perf_counter()
    sample = load_sample(
        source, _per_class(options.train_per_class), _per_class(options.test_per_class),
        options.classes, options.seed,
        image_column=options.image_column, label_column=options.label_column,
        train_split=options.train_split, test_split=options.test_split,
    )
    elapsed = time.perf_counter() - start
    say(f"dataset {sample.dataset}: {len(sample.y_train)} train x {len(sample.y_test)} test "
        f"images, {sample.n_classes} classes, {sample.X_train.shape[1]} features "
        f"(loaded in {elapsed:.2f} s)")
    return sample, elapsed


def command_run(options) -> int:
    """``ntkdemo run``: the end-to-end demo."""
    from .outputs import prepare_out_dir
    from .pipeline import run_demo

    say = Console(options.quiet)
    out = prepare_out_dir(options.out)
    sample, load_seconds = load_from_options(options, say)
    result = run_demo(sample, ridge=options.ridge, kernel=options.kernel, depth=options.depth,
                      w_std=options.w_std, b_std=options.b_std)
    result.timings = {"load": load_seconds, **result.timings}
    _print_run(say, sample, result)
    _write_run(out, options, sample, result)
    say(f"wrote metrics.json, predictions.png, confusion.png, spectrum.png to {out}/")
    return 0


def _print_run(say: Console, sample, result) -> None:
    say("time: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings.items()))
    solution = result.solution
    say(f"solve: Cholesky of K(X,X) + {solution.ridge:g} I, "
        f"condition number ~ {solution.condition_number:.3g}")
    if solution.message:
        say(f"note: {solution.message}")
    test, train = result.test_report, result.train_report
    say(f"train accuracy: {train.accuracy:.4f} ({train.n_correct}/{train.n_total})")
    say(f"test accuracy:  {test.accuracy:.4f} ({test.n_correct}/{test.n_total}); "
        f"chance {test.chance:.4f}")
    width = max(len(name) for name in sample.class_names)
    say(f"\n{'class':<{width}}  accuracy  correct/total")
    totals = test.confusion.sum(axis=1)
    for index, name in enumerate(sample.class_names):
        say(f"{name:<{width}}  {test.per_class_accuracy[index]:8.4f}  "
            f"{test.confusion[index, index]}/{totals[index]}")
    say("\nconfusion matrix (rows: true class, columns: predicted class)")
    for index, name in enumerate(sample.class_names):
        say(f"{name:<{width}}  " + " ".join(f"{v:4d}" for v in test.confusion[index]))


def _write_run(out: Path, options, sample, result) -> None:
    from .figures import confusion_figure, prediction_grid, spectrum_figure
    from .outputs import save_figure, write_json

    eigenvalues = np.linalg.eigvalsh(result.K_train)
    test, train = result.test_report, result.train_report
    write_json(out / "metrics.json", {
        "arguments": {k: v for k, v in vars(options).items() if k != "handler"},
        "dataset": sample.dataset,
        "class_names": list(sample.class_names),
        "classes": list(sample.classes),
        "sizes": {"train": len(sample.y_train), "test": len(sample.y_test),
                  "features": int(sample.X_train.shape[1])},
        "test_accuracy": test.accuracy,
        "train_accuracy": train.accuracy,
        "test_correct": test.n_correct,
        "chance": test.chance,
        "per_class_accuracy": dict(zip(sample.class_names, test.per_class_accuracy.tolist())),
        "confusion": test.confusion.tolist(),
        "solver": {"ridge": result.solution.ridge, "jitter": result.solution.jitter,
                   "condition_number": result.solution.condition_number,
                   "smallest_eigenvalue": float(eigenvalues[0]),
                   "message": result.solution.message},
        "timings_seconds": result.timings,
        "versions": versions(),
        "train_indices": sample.train_indices.tolist(),
        "test_indices": sample.test_indices.tolist(),
    })
    save_figure(prediction_grid(sample.X_test, sample.y_test, result.test_predictions,
                                sample.class_names), out / "predictions.png")
    save_figure(confusion_figure(test.confusion, sample.class_names), out / "confusion.png")
    save_figure(spectrum_figure(eigenvalues), out / "spectrum.png")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages behind the numbers."""
    found = {"python": platform.python_version()}
    for package in ("ntkdemo", "numpy", "scipy", "scikit-learn", "datasets", "numba"):
        found[package] = metadata.version(package)
    return found


def _per_class(value: int | str) -> int | None:
    return None if value == "all" else int(value)
