"""``ntkdemo run``: the demo end to end, its console report and its files."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidParameterError
from ..units import format_duration, format_pair_cost
from .options import (
    Console,
    UsageError,
    add_added_features_options,
    add_data_options,
    add_kernel_options,
    add_output_options,
    added_features_from,
    decode_draw,
    draw_from_options,
    duration,
    memory_size,
    positive_int,
    time_value,
    versions,
)

if TYPE_CHECKING:
    from ..outputs import OutputSet

DESCRIPTION = """\
Show that an infinitely wide ReLU network trained by gradient descent is kernel
regression with its Neural Tangent Kernel: draw a class-balanced sample of
Fashion-MNIST, compute the NTK in closed form, solve K(X,X) A = Y once by
Cholesky, and predict the test images with K(x,X) A. No network is built and no
gradient step is taken.
"""


def solver_names() -> tuple[str, ...]:
    """The CPU strategies ``--solver`` can name, from the plan's registry."""
    from ..plan import PREFERENCES

    return tuple(strategy.name for strategy in PREFERENCES["cpu"])


def add_command(commands) -> str:
    """Register ``run`` on an ``add_subparsers`` object; return its name."""
    run = commands.add_parser(
        "run",
        help="the demo (the default command)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_options(run, train=100, test=50)
    add_kernel_options(run)
    run.add_argument(
        "--max-memory",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="cap on the memory the run may plan for, e.g. 16GB (default: 90%% of free memory)",
    )
    run.add_argument(
        "--max-time",
        type=duration,
        default=None,
        metavar="DURATION",
        help="refuse up front a convolutional run whose kernel is estimated (from per-pair "
        "costs measured first) to take longer, e.g. 90s, 30min or 2h, naming the largest "
        "--train-per-class that fits (default: no bound; runs estimated past an hour say "
        "how to bound them)",
    )
    run.add_argument(
        "--solver",
        choices=("auto", *solver_names()),
        default="auto",
        help="cholesky: float64 kernel factorised in place; cg: upper triangle of the "
        "float64 kernel (half the memory), preconditioned conjugate gradients; cg32: that "
        "triangle in float32 (a quarter), refined against the float64 kernel; auto "
        "(default): the first of these that fits the memory plan",
    )
    run.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: kernel, solve and predictions on a CUDA GPU through CuPy (installed "
        "separately); every kernel at convergence (default: cpu)",
    )
    engine = run.add_argument_group(
        "engine",
        "past one machine: the kernel's strips spread over the workers of a Dask cluster "
        '(pip install "ntkdemo[dask]"); default kernel at convergence only',
    )
    engine.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="dask: a local Dask cluster (listening on 127.0.0.1, no dashboard), or the one "
        "--scheduler names (default: local, this process)",
    )
    engine.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --engine dask; "
        "tls:// uses distributed's security settings)",
    )
    engine.add_argument(
        "--dask-workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes of the local cluster (default: one per core)",
    )
    add_added_features_options(run)
    run.add_argument(
        "--time",
        type=time_value,
        default=None,
        metavar="T",
        help="predict with the infinite network after gradient-descent time T "
        "(neural-tangents' convention, learning rate 1) instead of at "
        "convergence; 'inf' is the converged network",
    )
    add_output_options(run)
    run.set_defaults(handler=command_run)
    return "run"


REPORTING_BYTES = 160_000_000
"""Memory the run adds after its plan besides the strategy's arrays: scikit-learn's
metrics and matplotlib, imported only then so that a refusal stays quick (about 90 MB),
and the figures drawn: peaks measured 95-157 MB above the plan without this allowance."""


def command_run(options) -> int:
    """``ntkdemo run``: the end-to-end demo."""
    from ..outputs import prepare_out_dir
    from ..plan import plan_memory
    from ..preprocess import flip_kernel
    from ..process_status import record
    from ..spec import KernelSpec

    spec = KernelSpec(
        kernel=options.kernel,
        depth=_depth(options),
        w_std=options.w_std,
        b_std=options.b_std,
        ridge=options.ridge,
        time=options.time,
        architecture=options.architecture,
        shifts=options.shifts,
        features=options.features,
        feature_width=options.feature_width,
        feature_seed=options.seed,
        feature_dtype=options.feature_dtype,
    )
    with_added = added_features_from(options)
    spec = with_added(spec) if with_added else spec
    say = Console(options.quiet)
    out = prepare_out_dir(options.out, options.command)
    with _engine(options) as strategies:
        started = time.perf_counter()
        draw = draw_from_options(options, say)
        # checked against the images' shape before any is decoded
        spec = spec.for_images(tuple(draw.image_shape))
        averaged, flips = (
            flip_kernel(spec, draw.image_shape, options.device) if options.flip else (None, "")
        )
        spec = averaged or spec
        mirrors_added = options.flip and averaged is None
        if flips:
            say(flips)
        plan = plan_memory(
            len(draw.y_train) * (2 if mirrors_added else 1),
            len(draw.y_test),
            spec.row_width(draw.n_values),
            draw.n_classes,
            spec=spec,
            device=options.device,
            max_memory=options.max_memory,
            solver=options.solver,
            later_bytes=REPORTING_BYTES,
            strategies=strategies,
        )
        say(plan.describe())
        record("plan", planned_peak_bytes=plan.total_bytes, allowed_bytes=plan.budget_bytes)
        sample, load_seconds = decode_draw(draw, say, started)
        record("compute")
        from ..demo import run_demo  # after the plan: a refusal imports no scikit-learn
        from ..preprocess import with_flips, zca_whitened

        test_images = sample.X_test  # as decoded, for the figure
        if mirrors_added:
            sample = with_flips(sample)
        if options.zca is not None:
            sample = zca_whitened(sample, options.zca, with_mirrors=spec.flip)

        if spec.added is not None:
            from ..solvers.features import FeatureSolver

            added = spec.added
            say(_feature_estimate(added, sample, FeatureSolver(added.feature_columns)))
        if spec.features is not None:
            say(_feature_estimate(spec, sample, plan.strategy))
        elif spec.architecture is not None:
            per_class = len(draw.y_train) // draw.n_classes
            spectrum_apart = not plan.strategy.gives_spectrum
            estimate = _conv_estimate(spec, sample, per_class, options.device, spectrum_apart)
            say(estimate.describe())
            advice = estimate.bound(options.max_time)
            if advice:
                say(advice)
        elif spec.average.terms > 1:
            say(
                f"the kernel averaged over {spec.average.describe()}: {spec.average.terms} "
                "kernels of the plain network for each pair of images (about "
                f"{spec.average.terms} times its time)"
            )
        result = run_demo(sample, spec, plan=plan, progress=say.progress, report=say)
    result.timings = {"load": load_seconds, **result.timings}
    record("write")
    flip_form = "kernel averaged" if spec.flip else "mirrors added" if options.flip else None
    # written first: a closed pipe loses none
    _write_run(out, options, sample, result, test_images, flip_form, spec.describe())
    _print_run(say, sample, result)
    lines = len(options.diagnostics.lines)
    logged = f", log.txt ({lines} lines)" if lines else ""
    say(f"wrote metrics.json, predictions.png, confusion.png, spectrum.png{logged} to {out}/")
    return 0


def _depth(options) -> int:
    """``--depth``, 1 if not given. :class:`~ntkdemo.spec.KernelSpec` refuses another depth
    than L beside ``--architecture fc-L``, except 1 (its default): refused here when given."""
    if options.depth is None:
        return 1
    from ..kernels.architecture import fully_connected_depth

    named = fully_connected_depth(options.architecture)
    if options.depth == 1 and named not in (None, 1):
        raise UsageError(
            f"--architecture {options.architecture} has depth {named} but --depth 1 was "
            "given too; give one of them"
        )
    return options.depth


LONG_RUN_SECONDS = 3600.0
"""A convolutional run estimated to take longer than this (and not bounded by
``--max-time``) is told how to bound it."""


@dataclass(frozen=True)
class KernelEstimate:
    """How long a convolutional run's kernel takes here: ``seconds_for(n_train)``, from
    per-pair costs measured now, for training sets of other sizes too.

    Attributes
    ----------
    seconds_for : callable
        Seconds for ``n_train`` training images (the test images as drawn).
    costs : str
        What the cost is made of, in words.
    n_train, per_class : int
        The training images drawn (mirrors added included) and per class.
    """

    seconds_for: Callable[[int], float]
    costs: str
    n_train: int
    per_class: int

    def describe(self) -> str:
        """One line: the estimate for the run as drawn."""
        seconds = self.seconds_for(self.n_train)
        return f"kernel: about {format_duration(seconds)} here ({self.costs}, measured now)"

    def images(self, per_class: int) -> int:
        """Training images of a draw of ``per_class`` a class (mirrors added included)."""
        return per_class * self.n_train // self.per_class

    def largest_per_class(self, seconds: float) -> int:
        """The most training images per class whose kernel takes at most ``seconds`` (0 if
        even one per class takes longer)."""
        low, high = 0, self.per_class
        while low < high:
            middle = (low + high + 1) // 2
            if self.seconds_for(self.images(middle)) <= seconds:
                low = middle
            else:
                high = middle - 1
        return low

    def bound(self, max_time: float | None) -> str:
        """Refuse a run that will not finish within ``max_time`` seconds, naming the
        largest sample that would; a note on how to bound a long run; else ``""``.

        Raises
        ------
        InvalidParameterError
            If ``max_time`` is given and the estimate exceeds it.
        """
        seconds = self.seconds_for(self.n_train)
        if max_time is None and seconds <= LONG_RUN_SECONDS:
            return ""
        limit = LONG_RUN_SECONDS if max_time is None else max_time
        fits = self.largest_per_class(limit)
        smaller = (
            f"--train-per-class {fits} takes about "
            f"{format_duration(self.seconds_for(self.images(fits)))}"
            if fits
            else "not even one training image per class fits; use a smaller network"
        )
        if max_time is None:
            return (
                f"note: a long run ({format_duration(seconds)}): Ctrl-C stops it; "
                f"--max-time 1h refuses up front what will not finish in an hour; {smaller}"
            )
        if seconds > max_time:
            raise InvalidParameterError(
                f"the kernel will take about {format_duration(seconds)} here, more than "
                f"--max-time {format_duration(max_time)}; {smaller}"
            )
        return ""


def _conv_estimate(
    spec, sample, per_class: int, device: str, spectrum_apart: bool
) -> KernelEstimate:
    """How long the convolutional kernel will take here, from per-pair costs measured
    now: on the CPU the pairs of :func:`ntkdemo.demo.kernel_pairs`, on a GPU the
    training Gram once and the test rows, with the spectrum's on the CPU.
    ``per_class``: training images drawn per class (before any mirrors are added);
    ``spectrum_apart``: whether the strategy computes the spectrum's block apart."""

    from ..demo import kernel_pairs, spectrum_rows_for
    from ..kernels.conv import seconds_per_pair

    n_train, n_test = len(sample.y_train), len(sample.y_test)
    per_pair = seconds_per_pair(
        spec.architecture, sample.image_shape, w_std=spec.w_std, b_std=spec.b_std
    )

    def spectrum_pairs(n: int) -> int:
        shown = min(n, spectrum_rows_for(spec))
        return shown * (shown + 1) // 2

    if device == "cuda":
        from ..solvers.cuda import DeviceKernel

        shaped = replace(spec, image_shape=tuple(sample.image_shape))
        per_pair_gpu = DeviceKernel(shaped).seconds_per_pair()

        def gpu_pairs(n: int) -> int:
            return n * (n + 1) // 2 + n_test * n

        return KernelEstimate(
            lambda n: spectrum_pairs(n) * per_pair + gpu_pairs(n) * per_pair_gpu,
            f"{gpu_pairs(n_train):,} image pairs on the GPU at {per_pair_gpu * 1e6:.0f} us "
            f"each, {spectrum_pairs(n_train):,} for the spectrum on the CPU at "
            f"{format_pair_cost(per_pair)}",
            n_train,
            per_class,
        )

    def pairs(n: int) -> int:
        return kernel_pairs(spec, n, n_test, spectrum_apart=spectrum_apart)

    return KernelEstimate(
        lambda n: pairs(n) * per_pair,
        f"{pairs(n_train):,} image pairs at {format_pair_cost(per_pair)} each",
        n_train,
        per_class,
    )


@contextlib.contextmanager
def _engine(options) -> Iterator[tuple | None]:
    """The strategies of a Dask engine while it is open; None for this process alone."""
    if options.engine == "local" and options.scheduler is None:
        yield None
        return
    if options.device != "cpu" or options.solver not in ("auto", "cg"):
        raise UsageError("--engine dask runs the cg solver on CPU workers; drop --device/--solver")
    from ..solvers.dask_cg import DaskSolver, connect

    with connect(options.scheduler, n_workers=options.dask_workers) as client:
        yield (DaskSolver(client),)


def _feature_estimate(spec, sample, strategy) -> str:
    """How long the random features will take here, from the time of a few images'
    measured now, and the exact pairs of their calibration and error check
    (:meth:`~ntkdemo.solvers.features.FeatureSolver.exact_pairs`)."""

    from ..kernels.conv import seconds_per_pair

    shaped = replace(spec, image_shape=tuple(sample.image_shape))
    feature_map = shaped.feature_map(sample.X_train.shape[1])
    probe = sample.X_train[:8]
    started = time.perf_counter()
    feature_map.transform(probe)
    per_image = (time.perf_counter() - started) / len(probe) * (2 if spec.flip else 1)
    images = len(sample.y_train) + len(sample.y_test)
    pairs = strategy.exact_pairs(len(sample.y_train), len(sample.y_test))
    per_pair = seconds_per_pair(
        spec.network, sample.image_shape, w_std=spec.w_std, b_std=spec.b_std
    )
    return (
        f"features: about {format_duration(images * per_image)} here ({images:,} images at "
        f"{per_image * 1e3:.1f} ms each, measured now); calibration and error check "
        f"against the exact kernel: about {format_duration(pairs * per_pair)} ({pairs:,} "
        "pairs)"
    )


def _print_run(say: Console, sample, result) -> None:
    say(
        "time: "
        + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings.items())
    )
    if result.approximation is not None:
        say(f"APPROXIMATE (random features): {result.approximation.describe()}")
    solution = result.solution
    condition = (
        f"condition number ~ {solution.condition_number:.3g}"
        if np.isfinite(solution.condition_number) or solution.condition_number == np.inf
        else "condition number not estimated (an iterative solve)"
    )
    say(f"solve: {solution.method} of K(X,X) + {solution.ridge:g} I, {condition}")
    if solution.message:
        say(f"note: {solution.message}")
    test, train = result.test_report, result.train_report
    kind = " (approximate kernel)" if result.approximation is not None else ""
    say(f"train accuracy{kind}: {train.accuracy:.4f} ({train.n_correct}/{train.n_total})")
    say(
        f"test accuracy{kind}:  {test.accuracy:.4f} ({test.n_correct}/{test.n_total}); "
        f"chance {test.chance:.4f}"
    )
    width = max(len(name) for name in sample.class_names)
    say(f"\n{'class':<{width}}  accuracy  correct/total")
    totals = test.confusion.sum(axis=1)
    for index, name in enumerate(sample.class_names):
        say(
            f"{name:<{width}}  {test.per_class_accuracy[index]:8.4f}  "
            f"{test.confusion[index, index]}/{totals[index]}"
        )
    say("\nconfusion matrix (rows: true class, columns: predicted class)")
    for index, name in enumerate(sample.class_names):
        say(f"{name:<{width}}  " + " ".join(f"{v:4d}" for v in test.confusion[index]))


def _write_run(
    out: OutputSet,
    options,
    sample,
    result,
    test_images: np.ndarray,
    flip_form: str | None,
    network: str,
) -> None:
    """metrics.json and the figures; ``test_images`` as decoded (before --zca);
    ``flip_form`` how ``--flip`` trained on the mirrors, if it did; ``network`` the
    kernel that ran, in words."""
    from ..figures import confusion_figure, prediction_grid, spectrum_figure

    eigenvalues = result.eigenvalues
    test, train = result.test_report, result.train_report
    out.write_json(
        "metrics.json",
        {
            "arguments": {
                k: (str(v) if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in vars(options).items()
                if k not in ("handler", "diagnostics")
            },
            "dataset": sample.dataset,
            "class_names": list(sample.class_names),
            "classes": list(sample.classes),
            "sizes": {
                "train": len(sample.y_train),
                "test": len(sample.y_test),
                "features": int(sample.X_train.shape[1]),
            },
            "network": network,
            "flips": flip_form,
            "test_accuracy": test.accuracy,
            "train_accuracy": train.accuracy,
            "test_correct": test.n_correct,
            "chance": test.chance,
            "per_class_accuracy": dict(zip(sample.class_names, test.per_class_accuracy.tolist())),
            "confusion": test.confusion.tolist(),
            "solver": {
                "method": result.solution.method,
                "ridge": result.solution.ridge,
                "jitter": result.solution.jitter,
                "condition_number": _json_number(result.solution.condition_number),
                "smallest_eigenvalue": float(eigenvalues[0]),
                "spectrum_rows": result.spectrum_rows,
                "message": result.solution.message,
            },
            "memory_plan": {
                "solver": result.plan.solver,
                "kernel_bytes": result.plan.kernel_bytes,
                "estimated_run_bytes": result.plan.total_bytes - result.plan.process_bytes,
            },
            "kernel_pairs": result.kernel_pairs,
            "approximation": (
                None if result.approximation is None else asdict(result.approximation)
            ),
            "timings_seconds": result.timings,
            "versions": versions(),
            "train_indices": sample.train_indices.tolist(),
            "test_indices": sample.test_indices.tolist(),
        },
    )
    out.save_figure(
        "predictions.png",
        prediction_grid(
            test_images,
            sample.y_test,
            result.test_predictions,
            sample.class_names,
            image_shape=sample.image_shape,
        ),
    )
    out.save_figure("confusion.png", confusion_figure(test.confusion, sample.class_names))
    label = (
        "K(X, X)"
        if result.spectrum_rows == len(sample.y_train)
        else f"K of the first {result.spectrum_rows} training images"
    )
    out.save_figure("spectrum.png", spectrum_figure(eigenvalues, label=label))
    if options.diagnostics.lines:
        out.write_bytes("log.txt", "\n".join(options.diagnostics.lines + [""]).encode())
    out.commit()


def _json_number(value: float) -> float | str:
    """Finite floats as they are; inf and NaN as strings (JSON has no such numbers)."""
    return value if np.isfinite(value) else str(value)
