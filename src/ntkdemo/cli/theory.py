"""The theory subcommands: ``curve``, ``dynamics``, ``spectrum``, ``verify``, ``compare-network``.

Each one loads a sample with the shared data options, calls one function of
:mod:`ntkdemo.theory.experiments` (or :mod:`ntkdemo.theory.network`), prints a table
and writes ``<command>.json`` and ``<command>.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError
from ..theory.cost import check_gram, check_networks, check_whole_kernels
from .options import (
    Console,
    UsageError,
    add_added_features_options,
    add_data_options,
    add_feature_dtype_option,
    add_output_options,
    added_features_from,
    class_list,
    load_from_options,
    positive_float,
    positive_int,
    print_table,
    write_outputs,
)


def free_bytes() -> int:
    """90% of the memory free now: what a theory command may take."""
    import psutil

    return int(0.9 * psutil.virtual_memory().available)


def networks_fit(sample, widths, *, steps: int, n_images: int | None = None) -> None:
    """Refuse networks of ``widths`` trained ``steps`` times on the sample's training
    images (or ``n_images`` of them) that would exceed free memory or the time bound."""
    count = len(sample.y_train) if n_images is None else n_images
    check_networks(widths, count, sample.X_train.shape[1], available=free_bytes(), steps=steps)


def int_list(text: str) -> list[int]:
    """Parse a comma-separated list of whole numbers >= 1, e.g. ``16,64,256``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 1,2,3, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


def add_commands(commands) -> list[str]:
    """Register the theory subcommands on an ``add_subparsers`` object; return their names."""
    curve = commands.add_parser(
        "curve",
        help="test accuracy against training-set size (NTK, NNGP, RBF SVC)",
        description="Test accuracy of kernel regression with the NTK and the NNGP of depth "
        "1-3 against training images per class, with an RBF SVC on the same "
        "nested samples. One kernel per depth serves every size.",
    )
    add_data_options(curve, train=200, test=50)
    curve.add_argument(
        "--sizes",
        type=int_list,
        default=None,
        help="training images per class to evaluate (default: about 10 sizes "
        "from 1 to --train-per-class, evenly spaced in log)",
    )
    curve.add_argument(
        "--depths", type=int_list, default=[1, 2, 3], help="hidden-layer counts (default: 1,2,3)"
    )
    curve.add_argument(
        "--architectures",
        type=architecture_list,
        default=[],
        help="networks besides --depths, e.g. fc-1,cnn-flatten-6,myrtle5 (kernels with "
        "pooling cost milliseconds per image pair: see the time a run prints)",
    )
    curve.add_argument(
        "--features",
        type=positive_int,
        default=None,
        metavar="D",
        help="the --architectures' kernels approximated by D random features (2D for the "
        "NTK), one set serving every size, solved in the primal; their error against "
        "the exact kernel on 100 + 100 images is printed (as ntkdemo run --features)",
    )
    curve.add_argument(
        "--feature-width",
        type=positive_int,
        default=128,
        metavar="W",
        help="channels of the random network's hidden layers but the last (default: 128)",
    )
    add_feature_dtype_option(curve, "of --features and --add-features")
    add_added_features_options(curve)
    curve.add_argument("--no-svc", action="store_true", help="skip the RBF SVC baseline")
    curve.add_argument(
        "--svc-max-images",
        type=positive_int,
        default=None,
        help="fit the SVC up to this many training images only (default: every size; "
        "libsvm runs on one core: 8 minutes at 60,000 images on one machine)",
    )
    curve.add_argument(
        "--whole-images",
        type=positive_int,
        default=8000,
        help="largest training set whose kernels are held whole, one computation serving "
        "every smaller size (default: 8000, 0.5 GB a matrix); larger sizes run one kernel "
        "at a time, so a convolutional fold is computed for the NNGP and again for the NTK",
    )
    view = curve.add_argument_group(
        "time and width",
        "with --times or --widths: accuracy against training images for the infinite "
        "network after each time t (NTK and NNGP, closed form) beside trained finite "
        "networks of each width, written as curve-time-width.json/png "
        "(default sizes: about 64, 128, ..., 2048 images)",
    )
    view.add_argument(
        "--times",
        type=time_list,
        default=None,
        help="gradient-descent times, e.g. 10,1e3,1e5,1e7,inf (default with --widths: that)",
    )
    view.add_argument(
        "--widths",
        type=int_list,
        default=None,
        help="network widths, e.g. 64,256,1024,2048 (default with --times: that)",
    )
    view.add_argument(
        "--training",
        choices=("gd", "sgd"),
        default="gd",
        help="gd: full-batch gradient descent on the squared loss at half the stability "
        "limit, as compare-network; sgd: softmax cross-entropy, momentum SGD, batches of "
        "64 (default: gd)",
    )
    view.add_argument("--steps", type=positive_int, default=100, help="gd steps (default: 100)")
    view.add_argument("--epochs", type=positive_int, default=20, help="sgd epochs (default: 20)")
    add_output_options(curve)
    curve.set_defaults(handler=command_curve)

    dynamics = commands.add_parser(
        "dynamics",
        help="loss and accuracy against gradient-descent time t, in closed form",
        description="Train and test loss and accuracy of the infinite network against "
        "training time t (f_t = K(x,X) K^-1 (I - exp(-t K/m)) Y, learning rate 1, "
        "m = number of targets), for the NTK (whole network trained) and the NNGP "
        "(readout only). One eigendecomposition per kernel serves every t.",
    )
    add_data_options(dynamics, train=100, test=50)
    dynamics.add_argument(
        "--depth", type=positive_int, default=1, help="hidden layers (default: 1)"
    )
    dynamics.add_argument(
        "--t-min", type=positive_float, default=1.0, help="first time (default: 1)"
    )
    dynamics.add_argument(
        "--t-max", type=positive_float, default=1e7, help="last time (default: 1e7)"
    )
    dynamics.add_argument(
        "--points", type=positive_int, default=29, help="times, evenly spaced in log (default: 29)"
    )
    add_output_options(dynamics)
    dynamics.set_defaults(handler=command_dynamics)

    spectrum = commands.add_parser(
        "spectrum",
        help="eigenvalues of the NTK Gram matrix and the norm bound",
        description="Eigenvalues of the NTK Gram matrix of the training sample and of "
        "equally spaced points on the unit circle, and the complexity measure "
        "sqrt(y' K^-1 y / n) against n on a two-class task, for true and "
        "permuted labels.",
    )
    add_data_options(spectrum, train=100, test=1)
    spectrum.add_argument(
        "--circle-points",
        type=positive_int,
        default=256,
        help="points on the unit circle (default: 256)",
    )
    spectrum.add_argument(
        "--bound-classes",
        type=class_list,
        default=[1, 3],
        help="the two classes of the bound's task (default: 1,3)",
    )
    spectrum.add_argument(
        "--bound-per-class",
        type=positive_int,
        default=300,
        help="largest images per class for the bound (default: 300)",
    )
    add_output_options(spectrum)
    spectrum.set_defaults(handler=command_spectrum)

    verify = commands.add_parser(
        "verify",
        help="the formula against random finite networks (Monte Carlo)",
        description="The analytic one-layer NTK against the empirical NTK (exact inner "
        "products of parameter gradients) of randomly initialised networks of "
        "width m; the relative error falls like m^-1/2.",
    )
    add_data_options(verify, train=20, test=1)
    verify.add_argument(
        "--widths",
        type=int_list,
        default=[16, 64, 256, 1024, 4096, 16384],
        help="hidden widths (default: 16,64,...,16384)",
    )
    verify.add_argument(
        "--repeats", type=positive_int, default=3, help="random networks per width (default: 3)"
    )
    add_output_options(verify)
    verify.set_defaults(handler=command_verify)

    compare = commands.add_parser(
        "compare-network",
        help="trained finite networks against the NTK prediction",
        description="The only place a network exists, as evidence: one-hidden-layer ReLU "
        "networks in NTK parameterisation trained by full-batch gradient descent "
        "on 0.5*sum((f-Y)^2)/Y.size, compared with the infinite network at the "
        "same time t = learning rate x steps.",
    )
    add_data_options(compare, train=20, test=50)
    compare.add_argument(
        "--widths",
        type=int_list,
        default=[16, 64, 256, 1024, 4096],
        help="hidden widths (default: 16,64,256,1024,4096)",
    )
    compare.add_argument(
        "--steps", type=positive_int, default=200, help="gradient-descent steps (default: 200)"
    )
    compare.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help="step size (default: Y.size / largest eigenvalue of the NTK "
        "Gram matrix, half the stability limit)",
    )
    add_output_options(compare)
    compare.set_defaults(handler=command_compare_network)
    return ["curve", "dynamics", "spectrum", "verify", "compare-network"]


MAX_TIME_POINTS = 10_000  # beyond this a curve shows nothing more, and takes minutes


def architecture_list(text: str) -> list[str]:
    """Comma-separated architectures, each a name conv_kernels knows (fc-L included)."""
    from ..spec import KernelSpec

    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        try:
            KernelSpec(architecture=name)
        except InvalidParameterError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return names


def time_list(text: str) -> list[float]:
    """Parse comma-separated training times >= 0, ``inf`` allowed."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated times such as 10,1e3,inf, got {text!r}"
        ) from None
    if not values or any(np.isnan(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected times >= 0 (or inf), got {text!r}")
    return values


def command_curve(options) -> int:
    """``ntkdemo curve``: learning curves."""
    from ..figures import learning_curve_figure
    from ..outputs import prepare_out_dir
    from ..theory.experiments import held_images, learning_curve

    added = added_features_from(options)  # usage errors before any image is read
    by_time = options.times is not None or options.widths is not None
    if by_time and (options.architectures or options.features or added):
        raise UsageError(
            "--times and --widths draw the one-layer network by time and width; "
            "--architectures, --features and --add-features are for curves by size"
        )
    say = Console(options.quiet)
    out = prepare_out_dir(options.out, options.command)
    sample, _ = load_from_options(options, say)
    largest = len(sample.y_train) // sample.n_classes
    if by_time:
        return _curve_by_time_and_width(options, say, out, sample, largest)
    sizes = options.sizes or sorted({int(s) for s in np.geomspace(1, largest, 10).round()})
    if max(sizes) > largest:
        raise InvalidParameterError(
            f"--sizes asks for {max(sizes)} images per class but the sample has {largest}; "
            f"raise --train-per-class to {max(sizes)}"
        )
    held = held_images(sizes, sample.n_classes, options.whole_images)
    if held:
        check_whole_kernels(
            held,
            len(sample.y_test),
            available=free_bytes(),
            option="--whole-images",
            added_columns=_added_columns(added),
        )
    networks = ", ".join([f"depths {options.depths}", *options.architectures])
    say(f"kernels of {networks}, sizes per class {sizes} ...")
    curve = learning_curve(
        sample,
        sizes,
        depths=options.depths,
        architectures=options.architectures,
        features=options.features,
        feature_width=options.feature_width,
        feature_dtype=options.feature_dtype,
        added=added,
        svc_baseline=not options.no_svc,
        whole_matrix_rows=options.whole_images,
        svc_max_rows=options.svc_max_images,
        progress=say,
        bars=say.progress,
    )
    models = list(curve.accuracy)

    def shown(value: float) -> float | str:
        return "-" if np.isnan(value) else float(value)

    print_table(
        say,
        ["per class", *models],
        [
            [int(size), *(shown(curve.accuracy[m][i]) for m in models)]
            for i, size in enumerate(curve.sizes)
        ],
    )
    write_outputs(
        out,
        "curve",
        {
            "dataset": sample.dataset,
            "sizes_per_class": curve.sizes.tolist(),
            "test_images": len(sample.y_test),
            "accuracy": {  # null: not computed at that size
                name: [None if np.isnan(v) else float(v) for v in values]
                for name, values in curve.accuracy.items()
            },
        },
        learning_curve_figure(curve.sizes, curve.accuracy, sample.n_classes),
        log_lines=options.diagnostics.lines,
    )
    say(f"wrote curve.json and curve.png to {out}/")
    return 0


def _added_columns(added) -> int:
    """Feature columns the curve keeps for every image with ``added`` (its NNGP's and
    its NTK's, both held for every network), 0 without."""
    if added is None:
        return 0
    from ..spec import KernelSpec

    summed = (added(KernelSpec(kernel=kernel)).added for kernel in ("nngp", "ntk"))
    return sum(spec.feature_columns for spec in summed if spec is not None)


def _curve_by_time_and_width(options, say: Console, out, sample, largest: int) -> int:
    """``ntkdemo curve --times ... --widths ...``: the kernel by time beside networks by width."""
    from ..figures import time_width_figure
    from ..theory.experiments import accuracy_by_time_and_width

    classes = sample.n_classes
    default_sizes = {min(largest, max(1, round(2**k / classes))) for k in range(6, 12)}
    sizes = sorted(options.sizes or default_sizes)
    if max(sizes) > largest:
        raise InvalidParameterError(
            f"--sizes asks for {max(sizes)} images per class but the sample has {largest}; "
            f"raise --train-per-class to {max(sizes)}"
        )
    times = options.times or [10.0, 1e3, 1e5, 1e7, float("inf")]
    widths = options.widths or [64, 256, 1024, 2048]
    training = {"gd": "gradient descent", "sgd": "sgd"}[options.training]
    networks_fit(
        sample,
        widths,
        steps=len(sizes) * (options.steps if options.training == "gd" else options.epochs),
        n_images=max(sizes) * classes,
    )
    say(
        f"kernels at times {times}; networks of widths {widths} ({training}); images per "
        f"class {sizes} ..."
    )
    curves = accuracy_by_time_and_width(
        sample,
        sizes,
        times,
        widths,
        rng=np.random.default_rng([options.seed, 2]),
        steps=options.steps,
        training=training,
        epochs=options.epochs,
        progress=say,
    )
    images = [int(size * classes) for size in curves.sizes]
    time_names = ["inf" if np.isinf(t) else f"{t:g}" for t in curves.times]
    print_table(
        say,
        ["images", *(f"NTK t={name}" for name in time_names)],
        [[n, *map(float, curves.kernel_accuracy["NTK"][:, i])] for i, n in enumerate(images)],
    )
    say()
    at_time = [] if training == "sgd" else ["NTK at networks' t"]
    print_table(
        say,
        ["images", *(f"width {w}" for w in curves.widths), *at_time],
        [
            [
                n,
                *map(float, curves.network_accuracy[:, i]),
                *([] if training == "sgd" else [float(curves.ntk_at_network_time[i])]),
            ]
            for i, n in enumerate(images)
        ],
    )
    write_outputs(
        out,
        "curve-time-width",
        {
            "dataset": sample.dataset,
            "sizes_per_class": curves.sizes.tolist(),
            "images": images,
            "test_images": len(sample.y_test),
            "times": time_names,
            "kernel_accuracy": {
                name: {t: values[j].tolist() for j, t in enumerate(time_names)}
                for name, values in curves.kernel_accuracy.items()
            },
            "training": training,
            "steps": options.steps if training != "sgd" else None,
            "epochs": options.epochs if training == "sgd" else None,
            "widths": curves.widths.tolist(),
            "network_accuracy": {
                str(w): curves.network_accuracy[i].tolist() for i, w in enumerate(curves.widths)
            },
            "network_time": [None if np.isnan(t) else float(t) for t in curves.network_time],
            "ntk_at_network_time": [
                None if np.isnan(a) else float(a) for a in curves.ntk_at_network_time
            ],
        },
        time_width_figure(curves, classes),
        log_lines=options.diagnostics.lines,
    )
    say(f"wrote curve-time-width.json and curve-time-width.png to {out}/")
    return 0


def command_dynamics(options) -> int:
    """``ntkdemo dynamics``: loss and accuracy against training time."""
    from ..figures import training_curve_figure
    from ..outputs import prepare_out_dir
    from ..theory.experiments import training_curve

    if options.t_min >= options.t_max:
        raise InvalidParameterError(
            f"--t-min ({options.t_min:g}) must be below --t-max ({options.t_max:g})"
        )
    say = Console(options.quiet)
    out = prepare_out_dir(options.out, options.command)
    sample, _ = load_from_options(options, say)
    if not 2 <= options.points <= MAX_TIME_POINTS:
        raise InvalidParameterError(
            f"--points {options.points}: the times from --t-min to --t-max need "
            f"2 <= points <= {MAX_TIME_POINTS}"
        )
    times = np.geomspace(options.t_min, options.t_max, options.points)
    curve = training_curve(sample, times, depth=options.depth)
    header = ["t"] + [
        f"{name} {split} {what}"
        for name in ("NTK", "NNGP")
        for what in ("loss", "acc")
        for split in ("train", "test")
    ]
    rows = []
    for i, t in enumerate(curve.times):
        row: list[object] = [f"{t:.3g}"]
        for name in ("NTK", "NNGP"):
            row += [float(curve.loss[name][s][i]) for s in ("train", "test")]
            row += [float(curve.accuracy[name][s][i]) for s in ("train", "test")]
        rows.append(row)
    print_table(say, header, rows)
    write_outputs(
        out,
        "dynamics",
        {
            "dataset": sample.dataset,
            "depth": options.depth,
            "learning_rate": 1.0,
            "normalisation_m": int(len(sample.y_train) * sample.n_classes),
            "times": curve.times.tolist(),
            "loss": {k: {s: v.tolist() for s, v in d.items()} for k, d in curve.loss.items()},
            "accuracy": {
                k: {s: v.tolist() for s, v in d.items()} for k, d in curve.accuracy.items()
            },
        },
        training_curve_figure(curve.times, curve.loss, curve.accuracy),
        log_lines=options.diagnostics.lines,
    )
    say(f"wrote dynamics.json and dynamics.png to {out}/")
    return 0


def command_spectrum(options) -> int:
    """``ntkdemo spectrum``: Gram spectra and the norm bound."""
    from ..figures import spectrum_panels_figure
    from ..kernels import ntk
    from ..outputs import prepare_out_dir
    from ..theory.experiments import circle_points, norm_bound_curve

    if len(options.bound_classes) != 2:
        raise InvalidParameterError(
            f"--bound-classes needs exactly two class ids such as 1,3, got {options.bound_classes}"
        )
    say = Console(options.quiet)
    out = prepare_out_dir(options.out, options.command)
    check_gram(options.circle_points, available=free_bytes(), option="--circle-points")
    sample, _ = load_from_options(options, say)
    data_eigenvalues = np.linalg.eigvalsh(ntk(sample.X_train))[::-1]
    circle_eigenvalues = np.linalg.eigvalsh(ntk(circle_points(options.circle_points)))[::-1]
    pair, _ = load_from_options(
        options,
        say,
        classes=options.bound_classes,
        train_per_class=options.bound_per_class,
        test_per_class=1,
    )
    signs = np.where(pair.y_train == 0, -1.0, 1.0)
    n_max = len(signs)
    if n_max < 4:
        raise InvalidParameterError(
            f"--bound-per-class {options.bound_per_class} gives {n_max} images; the bound "
            "needs several sizes: use at least 2 per class"
        )
    sizes = np.unique(np.geomspace(min(10, n_max), n_max, 8).round().astype(int))
    bound = norm_bound_curve(pair.X_train, signs, sizes, np.random.default_rng([options.seed, 1]))
    say("eigenvalues of the training NTK Gram matrix (decreasing):")
    picks = sorted(
        {i for i in (1, 2, 10, 100, 1000) if i <= len(data_eigenvalues)} | {len(data_eigenvalues)}
    )
    print_table(
        say, ["index", "eigenvalue"], [[i, f"{data_eigenvalues[i - 1]:.4g}"] for i in picks]
    )
    say(f"\nsqrt(y' K^-1 y / n) on {pair.class_names[0]} vs {pair.class_names[1]}:")
    print_table(
        say,
        ["n", *bound],
        [[int(n), *(float(v[i]) for v in bound.values())] for i, n in enumerate(sizes)],
    )
    write_outputs(
        out,
        "spectrum",
        {
            "dataset": sample.dataset,
            "train_eigenvalues": data_eigenvalues.tolist(),
            "circle_points": options.circle_points,
            "circle_eigenvalues": circle_eigenvalues.tolist(),
            "bound_classes": list(pair.class_names),
            "bound_sizes": sizes.tolist(),
            "bound": {name: values.tolist() for name, values in bound.items()},
        },
        spectrum_panels_figure(
            data_eigenvalues,
            circle_eigenvalues,
            sizes,
            bound,
            data_label=f"{Path(sample.dataset).name} training Gram",
        ),
        log_lines=options.diagnostics.lines,
    )
    say(f"wrote spectrum.json and spectrum.png to {out}/")
    return 0


def command_verify(options) -> int:
    """``ntkdemo verify``: Monte-Carlo check of the formula."""
    from ..figures import monte_carlo_figure
    from ..outputs import prepare_out_dir
    from ..theory.experiments import monte_carlo_error

    say = Console(options.quiet)
    out = prepare_out_dir(options.out, options.command)
    sample, _ = load_from_options(options, say)
    networks_fit(sample, options.widths, steps=options.repeats)
    say(f"empirical NTK of random networks on {len(sample.y_train)} images ...")
    result = monte_carlo_error(
        sample.X_train,
        options.widths,
        repeats=options.repeats,
        rng=np.random.default_rng([options.seed, 1]),
    )
    print_table(
        say,
        ["width", "mean rel. error", "std"],
        [[int(w), float(e.mean()), float(e.std())] for w, e in zip(result.widths, result.errors)],
    )
    say(f"fitted slope of log(error) against log(width): {result.slope:.3f} (theory: -0.5)")
    write_outputs(
        out,
        "verify",
        {
            "dataset": sample.dataset,
            "images": len(sample.y_train),
            "widths": result.widths.tolist(),
            "errors": result.errors.tolist(),
            "slope": result.slope,
        },
        monte_carlo_figure(result.widths, result.errors, result.slope),
        log_lines=options.diagnostics.lines,
    )
    say(f"wrote verify.json and verify.png to {out}/")
    return 0


def command_compare_network(options) -> int:
    """``ntkdemo compare-network``: trained finite networks against the kernel."""
    from ..figures import network_comparison_figure
    from ..outputs import prepare_out_dir
    from ..theory.experiments import compare_with_networks

    say = Console(options.quiet)
    out = prepare_out_dir(options.out, options.command)
    sample, _ = load_from_options(options, say)
    networks_fit(sample, options.widths, steps=options.steps)
    say(f"training networks of widths {options.widths} for {options.steps} steps ...")
    result = compare_with_networks(
        sample,
        options.widths,
        steps=options.steps,
        rng=np.random.default_rng([options.seed, 1]),
        learning_rate=options.learning_rate,
    )
    say(
        f"learning rate {result.learning_rate:.4g}, {result.steps} steps (t = {result.time:.4g}): "
        f"infinite network test accuracy {result.kernel_accuracy:.4f} after the same steps, "
        f"{result.flow_accuracy:.4f} after gradient flow to t "
        f"(distance {result.discretisation:.3f}, from finite steps)"
    )
    print_table(
        say,
        ["width", "network acc", "agreement", "output distance"],
        [
            [int(w), float(a), float(g), float(d)]
            for w, a, g, d in zip(
                result.widths, result.network_accuracy, result.agreement, result.output_distance
            )
        ],
    )
    write_outputs(
        out,
        "compare-network",
        {
            "dataset": sample.dataset,
            "widths": result.widths.tolist(),
            "network_accuracy": result.network_accuracy.tolist(),
            "agreement": result.agreement.tolist(),
            "output_distance": result.output_distance.tolist(),
            "kernel_accuracy": result.kernel_accuracy,
            "flow_accuracy": result.flow_accuracy,
            "discretisation": result.discretisation,
            "time": result.time,
            "learning_rate": result.learning_rate,
            "steps": result.steps,
        },
        network_comparison_figure(
            result.widths, result.agreement, result.network_accuracy, result.kernel_accuracy
        ),
        log_lines=options.diagnostics.lines,
    )
    say(f"wrote compare-network.json and compare-network.png to {out}/")
    return 0
