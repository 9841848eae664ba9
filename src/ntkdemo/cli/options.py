"""Pieces every subcommand shares: argument types and groups, the console, loading, versions."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from ..work import work_weights


class UsageError(Exception):
    """A command-line argument could not be parsed."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (raised as :class:`UsageError`)."""

    def error(self, message: str):  # one line, no usage block
        raise UsageError(f"{self.prog}: {message} (see --help)")


def per_class_count(text: str) -> int | str:
    """Parse ``--*-per-class``: a whole number >= 1 or ``all``."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number or 'all', got {text!r}"
        ) from None
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


def positive_float(text: str) -> float:
    """Parse a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def duration(text: str) -> float:
    """Parse a duration (``90s``, ``30min``, ``2h``) into seconds."""
    from ..units import parse_duration

    return _parsed_by(parse_duration, text)


def time_value(text: str) -> float:
    """Parse a training time: a number >= 0 or ``inf``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'inf', got {text!r}") from None
    if np.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (or inf), got {text!r}")
    return value


def memory_size(text: str) -> int:
    """Parse ``--max-memory``: bytes, or a number with KB/MB/GB/TB."""
    from ..units import parse_bytes

    return _parsed_by(parse_bytes, text)


def _parsed_by(parse: Callable[[str], Any], text: str) -> Any:
    """``parse(text)``, a library parser's refusal turned into argparse's error."""
    from ..errors import InvalidParameterError

    try:
        return parse(text)
    except InvalidParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """Parse a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """Parse a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {value}")
    return value


def add_data_options(parser: argparse.ArgumentParser, train: int, test: int) -> None:
    """The options that choose the sample."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        default=None,
        help="hub id or local folder in the hub layout (default: $NTKDEMO_DATASET, "
        "else zalando-datasets/fashion_mnist)",
    )
    group.add_argument(
        "--train-per-class",
        type=per_class_count,
        default=train,
        help=f"training images per class, or 'all' (default: {train})",
    )
    group.add_argument(
        "--test-per-class",
        type=per_class_count,
        default=test,
        help=f"test images per class, or 'all' (default: {test})",
    )
    group.add_argument(
        "--classes",
        type=class_list,
        default=None,
        help="comma-separated label ids to keep, e.g. 1,3 for Trouser vs Dress",
    )
    group.add_argument(
        "--seed", type=nonnegative_int, default=0, help="sampling seed, >= 0 (default: 0)"
    )
    group.add_argument("--image-column", default=None, help="image column (default: found)")
    group.add_argument("--label-column", default=None, help="label column (default: found)")
    group.add_argument("--train-split", default="train", help="training split (default: train)")
    group.add_argument("--test-split", default="test", help="test split (default: test)")


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the kernel and the ridge."""
    group = parser.add_argument_group("kernel")
    group.add_argument(
        "--kernel",
        choices=("ntk", "nngp"),
        default="ntk",
        help="ntk: network trained by gradient descent; nngp: only its readout (default: ntk)",
    )
    group.add_argument(
        "--depth",
        type=positive_int,
        default=None,
        help="hidden ReLU layers (default: 1, the one-layer formula; the L of --architecture fc-L)",
    )
    group.add_argument(
        "--architecture",
        default=None,
        metavar="NAME",
        help="a convolutional network in place of the fully connected one: cnn-flatten-L, "
        "cnn-gap-L, myrtle5, myrtle7, myrtle10 (fc-L is --depth L), or layers written as "
        "words joined by +, e.g. conv+erf+conv:1.5:0.1+leaky-relu:0.1+pool+conv+abs+gap+dense "
        "(words: conv, dense, pool, gap, flatten, relu, abrelu:A:B, leaky-relu:ALPHA, abs, "
        "erf:A:B:C, gelu, layernorm, identity; (A|B) sums parallel branches: "
        "conv+(|relu+conv)+relu+gap+dense is residual), or a JSON file of them (NAME.json); "
        "whole training sets of these are "
        "slow: milliseconds per image pair for the pooling ones",
    )
    group.add_argument(
        "--w-std",
        type=nonnegative_float,
        default=1.0,
        help="weight standard deviation (default: 1)",
    )
    group.add_argument(
        "--b-std", type=nonnegative_float, default=0.0, help="bias standard deviation (default: 0)"
    )
    group.add_argument(
        "--zca",
        type=positive_float,
        default=None,
        metavar="EPS",
        help="ZCA-whiten the images, fitted on the training images, regularised by EPS "
        "times the mean eigenvalue (e.g. 0.1)",
    )
    group.add_argument(
        "--flip",
        action="store_true",
        help="train on each training image and its left-right mirror: the kernel averaged "
        "over mirrors where it is mirror symmetric (the same network on n rows), else the "
        "mirrored images added (2n rows)",
    )
    group.add_argument(
        "--shifts",
        type=nonnegative_int,
        default=0,
        metavar="R",
        help="the fully connected network averaged over its input cyclically shifted by "
        "0..R pixels down and right (and mirrored, with --flip): (2R+1)^2 times the plain "
        "kernel's cost, twice with --flip (default: 0, none)",
    )
    group.add_argument(
        "--ridge",
        type=nonnegative_float,
        default=0.0,
        help="ridge added to K's diagonal (default: 0, interpolation)",
    )
    group.add_argument(
        "--features",
        type=positive_int,
        default=None,
        metavar="D",
        help="approximate the kernel by D random features of one random network of the "
        "architecture (2D for the NTK; ntkdemo.kernels.conv_features), solved in the "
        "primal: seconds per thousand images instead of milliseconds per pair; the run "
        "measures its error against the exact kernel on 100 + 100 images and labels "
        "its numbers approximate (a ridge helps: the features' error swamps the smallest "
        "eigenvalues)",
    )
    group.add_argument(
        "--feature-width",
        type=positive_int,
        default=128,
        metavar="W",
        help="channels of the random network's hidden layers but the last (default: 128)",
    )
    add_feature_dtype_option(group, "of --features and --add-features")


def add_feature_dtype_option(parser, of: str) -> None:
    """``--feature-dtype`` on ``parser`` (a parser or group); ``of`` names the features
    it sets. The choices are ``ntkdemo.kernels.features.FEATURE_DTYPES``, written out so
    that parsing imports no kernel module (KernelSpec checks them again)."""
    parser.add_argument(
        "--feature-dtype",
        choices=("float64", "float32"),
        default="float64",
        help=f"precision the random network runs in ({of}): float32 about 1.5 times as "
        "fast, its rounding far below the features' own error (default: float64)",
    )


def add_added_features_options(parser: argparse.ArgumentParser) -> None:
    """The ``added features`` group: ``--add-features``, ``--add-architecture``,
    ``--add-weight`` and ``--add-flip``, read by :func:`added_features_from`."""
    added = parser.add_argument_group(
        "added features",
        "the kernel of the sum of two networks' outputs: the exact kernel plus C times a "
        "second network's random-feature kernel (each image's features computed once; "
        "the numbers labelled approximate)",
    )
    added.add_argument(
        "--add-features",
        type=positive_int,
        default=None,
        metavar="D",
        help="add D random features (2D for the NTK) of --add-architecture's network, "
        "of the same kernel, NTK or NNGP (default: none)",
    )
    added.add_argument(
        "--add-architecture",
        type=architecture_name,
        default=None,
        metavar="NAME",
        help="the added network (default: myrtle5)",
    )
    added.add_argument(
        "--add-weight",
        type=positive_float,
        default=None,
        metavar="C",
        help="weight C of the added kernel; choose it on held-out training images, never "
        "on the test images (default: 1)",
    )
    added.add_argument(
        "--add-flip",
        action="store_true",
        help="average the added network over mirrors: each image's features the mean of "
        "its own and its mirror's (twice their time), as --flip averages the exact kernel",
    )


def added_features_from(options) -> Callable[[Any], Any] | None:
    """The options of :func:`add_added_features_options` as the function that turns a
    :class:`~ntkdemo.spec.KernelSpec` into that of the sum
    (:meth:`~ntkdemo.spec.KernelSpec.with_added_features`), or None without
    ``--add-features``.

    Raises
    ------
    UsageError
        ``--add-weight``, ``--add-architecture`` or ``--add-flip`` without
        ``--add-features``.
    """
    if options.add_features is None:
        if options.add_weight is not None or options.add_architecture or options.add_flip:
            raise UsageError(
                "--add-weight, --add-architecture and --add-flip need --add-features D"
            )
        return None
    weight = 1.0 if options.add_weight is None else options.add_weight

    def with_added(spec):
        return spec.with_added_features(
            options.add_features, options.add_architecture, weight, flip=options.add_flip
        )

    return with_added


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--quiet``."""
    parser.add_argument(
        "--out",
        default="ntkdemo-out",
        help="folder for metrics.json and figures (default: ntkdemo-out)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the errors")


class DiagnosticsLog(logging.Handler):
    """Keeps the log records and warnings of a run (see :func:`diagnostics_kept`)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def diagnostics_kept() -> Iterator[DiagnosticsLog]:
    """Route warnings and library log lines (matplotlib, datasets) away from stderr.

    A command's stderr holds its own messages only: errors in one line. What libraries
    say (a font substitution, a cache folder created elsewhere, a RuntimeWarning) is kept
    by the yielded handler, which ``run`` writes to ``log.txt``. With ``NTKDEMO_DEBUG=1``
    nothing is rerouted.
    """
    handler = DiagnosticsLog()
    if os.environ.get("NTKDEMO_DEBUG"):
        yield handler
        return
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield handler
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(previous_level)


class Console:
    """Prints progress lines and tables unless quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, text: str = "") -> None:
        if self.quiet:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:  # the reader left (e.g. | head -1): finish the run silently
            self.quiet = True
            sys.stdout = open(os.devnull, "w")  # for the rest of the process
        except OSError as exc:  # e.g. standard output is /dev/full
            self.quiet = True
            sys.stdout = open(os.devnull, "w")
            raise UsageError(
                f"cannot write to standard output ({exc.strerror or exc}); "
                "redirect it elsewhere or use --quiet"
            ) from None

    def progress(self, description: str):
        """A progress factory for block loops, None when quiet: a tqdm bar on a terminal,
        else (a log file, a pipe) :func:`progress_lines` on standard error."""
        if self.quiet:
            return None
        unit = "iteration" if "iteration" in description else "block"
        if not sys.stderr.isatty():
            return lambda iterable: progress_lines(iterable, description, unit)
        return lambda iterable: _bar(iterable, description, unit)


def _bar(iterable, description: str, unit: str) -> Iterator:
    """A tqdm bar over ``iterable``: by items, or by their work where the iterable
    carries it (:class:`~ntkdemo.work.WeightedItems`: the blocks of a triangle), so
    that its time left is right from the start."""
    from tqdm import tqdm

    weights = work_weights(iterable)
    if weights is None:
        yield from tqdm(iterable, desc=description, leave=False, unit=unit)
        return
    with tqdm(
        total=float(weights.sum()), desc=description, leave=False, unit="entry", unit_scale=True
    ) as bar:
        for item, weight in zip(iterable, weights):
            yield item
            bar.update(float(weight))


PROGRESS_LINE_SECONDS = 60.0
"""Off a terminal, a block loop writes a progress line at most this often."""


def progress_lines(
    iterable,
    description: str,
    unit: str,
    *,
    interval: float = PROGRESS_LINE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator:
    """Yield the items of ``iterable``, writing to standard error, at most every
    ``interval`` seconds, a line with the items done, the time so far and, where the
    iterable has a length, the time left at the mean rate so far (of the work, where
    the iterable carries each item's, :class:`~ntkdemo.work.WeightedItems`; else of the
    items): the progress of a run whose output goes to a log file (a loop shorter than
    ``interval`` writes none)."""
    from ..units import format_count, format_duration

    total = len(iterable) if hasattr(iterable, "__len__") else None
    weights = work_weights(iterable)
    work_done = None if weights is None else np.cumsum(weights)
    started = last = clock()
    for done, item in enumerate(iterable, start=1):
        yield item
        now = clock()
        if now - last < interval:
            continue
        last, elapsed = now, now - started
        if total:
            so_far, whole = (
                (done, total) if work_done is None else (work_done[done - 1], work_done[-1])
            )
            left = elapsed / so_far * (whole - so_far)
            line = f"{description}: {done:,} of {format_count(total, unit)} ({so_far / whole:.0%}"
            line += " of the work" if work_done is not None else ""
            line += f"), {format_duration(elapsed)} so far, about {format_duration(left)} left"
        else:
            line = f"{description}: {format_count(done, unit)}, {format_duration(elapsed)} so far"
        print(line, file=sys.stderr, flush=True)


def draw_from_options(options, say: Console, **overrides):
    """Open the dataset the options name and choose the sample's rows (``overrides``
    replace options); nothing is decoded yet (:func:`ntkdemo.data.draw_sample`)."""
    from ..data import draw_sample, resolve_dataset

    if not os.environ.get("NTKDEMO_DEBUG"):  # datasets' lines reach diagnostics_kept
        import datasets

        library_logger = logging.getLogger(datasets.__name__)
        for handler in list(library_logger.handlers):
            library_logger.removeHandler(handler)
        datasets.utils.logging.enable_propagation()
    settings = {**vars(options), **overrides}
    source = resolve_dataset(settings["dataset"])
    say(f"loading {source} ...")
    return draw_sample(
        source,
        per_class_option(settings["train_per_class"]),
        per_class_option(settings["test_per_class"]),
        settings["classes"],
        settings["seed"],
        image_column=settings["image_column"],
        label_column=settings["label_column"],
        train_split=settings["train_split"],
        test_split=settings["test_split"],
    )


def decode_draw(draw, say: Console, started: float):
    """Decode a drawn sample; return it and the seconds since ``started`` (perf_counter)."""
    sample = draw.decode()
    elapsed = time.perf_counter() - started
    say(
        f"dataset {sample.dataset}: {len(sample.y_train)} train x {len(sample.y_test)} test "
        f"images, {sample.n_classes} classes, {sample.X_train.shape[1]} features "
        f"(loaded in {elapsed:.2f} s)"
    )
    return sample, elapsed


def load_from_options(options, say: Console, **overrides):
    """Load the sample the options describe (``overrides`` replace options), timing it."""
    started = time.perf_counter()
    return decode_draw(draw_from_options(options, say, **overrides), say, started)


def versions() -> dict[str, str]:
    """Versions of Python and of the packages behind the numbers."""
    found = {"python": platform.python_version()}
    for package in ("ntkdemo", "numpy", "scipy", "scikit-learn", "datasets", "numba"):
        found[package] = metadata.version(package)
    return found


def per_class_option(value: int | str) -> int | None:
    return None if value == "all" else int(value)


def write_outputs(out, name: str, payload: dict, figure, log_lines: Sequence[str] = ()) -> None:
    """Write ``name.json`` (payload plus versions), ``name.png`` and, if there are log
    lines, ``log.txt`` as one new set of files in ``out`` (an ``OutputSet``)."""
    out.write_json(f"{name}.json", {**payload, "versions": versions()})
    out.save_figure(f"{name}.png", figure)
    if log_lines:
        out.write_bytes(f"{name}-log.txt", "\n".join([*log_lines, ""]).encode())
    out.commit()


def print_table(say: Console, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a left-aligned text table; floats with 4 decimals."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    say("  ".join(f"{h:<{w}}" for h, w in zip(header, widths)))
    for row in cells:
        say("  ".join(f"{c:<{w}}" for c, w in zip(row, widths)))


def architecture_name(text: str) -> str:
    """Parse ``--architecture``: a name :func:`~ntkdemo.kernels.architecture_layers` knows."""
    from ..errors import InvalidParameterError
    from ..kernels import architecture_layers

    try:
        architecture_layers(text)
    except InvalidParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def comma_list(item: Callable[[str], object]) -> Callable[[str], list]:
    """An argument type for ``a,b,c``: each part parsed by ``item`` (an argument type
    that raises ``ArgumentTypeError``)."""

    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return [item(part) for part in parts]

    return parse


def one_of(*words: str) -> Callable[[str], str]:
    """An argument type accepting only ``words`` (for the parts of a :func:`comma_list`)."""

    def parse(text: str) -> str:
        if text not in words:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(words)}")
        return text

    return parse


class ScriptHelp(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of a script: its whole description as written, and every default."""


def script_parser(description: str) -> Parser:
    """The argument parser of a benchmark script: one-line errors as the command's."""
    return Parser(description=description, formatter_class=ScriptHelp)


def run_script(main: Callable[[], int]) -> int:
    """Run a script's ``main``: a user's mistake is one line on stderr and exit code 2."""
    from ..errors import NTKDemoError

    try:
        return main()
    except (UsageError, NTKDemoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
