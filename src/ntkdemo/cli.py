"""Command line: ``ntkdemo [run] [options]`` and the theory subcommands.

Every error a user can cause ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np

from . import cli_theory
from .cli_common import (
    Console,
    Parser,
    UsageError,
    add_data_options,
    add_kernel_options,
    add_output_options,
    diagnostics_kept,
    load_from_options,
    memory_size,
    time_value,
    versions,
)
from .errors import NTKDemoError

if TYPE_CHECKING:
    from .outputs import OutputSet

DESCRIPTION = """\
Show that an infinitely wide ReLU network trained by gradient descent is kernel
regression with its Neural Tangent Kernel: draw a class-balanced sample of
Fashion-MNIST, compute the NTK in closed form, solve K(X,X) A = Y once by
Cholesky, and predict the test images with K(x,X) A. No network is built and no
gradient step is taken.
"""


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The argument parser of every subcommand, and the subcommand names."""
    parser = Parser(
        prog="ntkdemo",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"ntkdemo {metadata.version('ntkdemo')}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
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
        "--solver",
        choices=("auto", "cholesky", "cg"),
        default="auto",
        help="cholesky: float64 kernel factorised in place; cg: upper triangle of the "
        "float64 kernel (half the memory), preconditioned conjugate gradients; auto "
        "(default): cholesky when it fits the memory plan",
    )
    run.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: kernel, solve and predictions on a CUDA GPU through CuPy (installed "
        "separately); default kernel at convergence only (default: cpu)",
    )
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
    names = {"run", *cli_theory.add_commands(commands)}
    return parser, names


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntkdemo``; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser, names = build_parser()
    if not arguments or (
        arguments[0] not in names and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "run")
    try:
        options = parser.parse_args(arguments)
        with diagnostics_kept() as diagnostics:
            options.diagnostics = diagnostics
            return options.handler(options)
    except (UsageError, NTKDemoError) as exc:
        print(f"ntkdemo: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        sys.stdout = open(os.devnull, "w")
        return 1
    except KeyboardInterrupt:
        print("ntkdemo: interrupted; files already written are complete", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "ntkdemo: error: ran out of memory; lower --max-memory below the free memory, "
            "or use fewer images",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug, not a user error: one line, the traceback on request
        if os.environ.get("NTKDEMO_DEBUG"):
            raise
        print(
            f"ntkdemo: internal error: {type(exc).__name__}: {exc}; please report it "
            "(NTKDEMO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def command_run(options) -> int:
    """``ntkdemo run``: the end-to-end demo."""
    from .errors import InvalidParameterError
    from .kernels import is_default_kernel
    from .memory import MemoryPlan, plan_memory
    from .outputs import prepare_out_dir
    from .pipeline import run_demo
    from .process_status import record

    if options.solver == "cg" and not (
        is_default_kernel(options.kernel, options.depth, options.w_std, options.b_std)
        and options.time is None
    ):
        raise InvalidParameterError(
            "--solver cg serves the default kernel at convergence only; drop --kernel, "
            "--depth, --w-std, --b-std and --time, or use --solver cholesky"
        )
    say = Console(options.quiet)
    out = prepare_out_dir(options.out)
    plans: list[MemoryPlan | None] = []

    def check_memory(n_train: int, n_test: int, n_values: int, n_classes: int) -> None:
        if options.device == "cuda":
            from .gpu import check_gpu_memory

            needed = check_gpu_memory(n_train, n_values)
            say(
                f"memory plan: float64 kernel and Cholesky factor on the GPU, about "
                f"{needed / 1e9:.2f} GB of GPU memory"
            )
            record("plan", planned_peak_bytes=needed, allowed_bytes=None)
            plans.append(None)
            return
        plan = plan_memory(
            n_train,
            n_test,
            n_values,
            n_classes,
            max_memory=options.max_memory,
            solver=options.solver,
        )
        say(plan.describe())
        record("plan", planned_peak_bytes=plan.total_bytes, allowed_bytes=plan.budget_bytes)
        plans.append(plan)

    sample, load_seconds = load_from_options(options, say, before_decoding=check_memory)
    record("compute")
    result = run_demo(
        sample,
        ridge=options.ridge,
        kernel=options.kernel,
        depth=options.depth,
        w_std=options.w_std,
        b_std=options.b_std,
        time=options.time,
        plan=plans[0],
        device=options.device,
        progress=say.progress,
        report=say,
    )
    result.timings = {"load": load_seconds, **result.timings}
    record("write")
    _write_run(out, options, sample, result)  # files first: a closed pipe cannot lose them
    _print_run(say, sample, result)
    logged = (
        f", log.txt ({len(options.diagnostics.lines)} lines)" if options.diagnostics.lines else ""
    )
    say(f"wrote metrics.json, predictions.png, confusion.png, spectrum.png{logged} to {out}/")
    return 0


def _print_run(say: Console, sample, result) -> None:
    say(
        "time: "
        + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings.items())
    )
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
    say(f"train accuracy: {train.accuracy:.4f} ({train.n_correct}/{train.n_total})")
    say(
        f"test accuracy:  {test.accuracy:.4f} ({test.n_correct}/{test.n_total}); "
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


def _write_run(out: OutputSet, options, sample, result) -> None:
    from .figures import confusion_figure, prediction_grid, spectrum_figure

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
            "memory_plan": None
            if result.plan is None
            else {
                "solver": result.plan.solver,
                "kernel_bytes": result.plan.kernel_bytes,
                "estimated_peak_bytes": result.plan.total_bytes,
            },
            "timings_seconds": result.timings,
            "versions": versions(),
            "train_indices": sample.train_indices.tolist(),
            "test_indices": sample.test_indices.tolist(),
        },
    )
    out.save_figure(
        "predictions.png",
        prediction_grid(
            sample.X_test,
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
