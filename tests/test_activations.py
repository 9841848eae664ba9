"""The activations beyond ReLU (``ntkdemo.kernels.activations``): each layer's kernel rule
against neural-tangents, exact self pairs, no NaN where variances vanish, and the ReLU's
reference rule against its fused and compiled paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ntkdemo.errors import InvalidParameterError
from ntkdemo.kernels import (
    ABRelu,
    Abs,
    AvgPool,
    Conv,
    Dense,
    Erf,
    Flatten,
    Gelu,
    GlobalAvgPool,
    Identity,
    LayerNorm,
    LeakyRelu,
    Parallel,
    Relu,
    conv_kernels,
)
from ntkdemo.kernels.activations import Activation
from ntkdemo.kernels.architecture import network_layers
from ntkdemo.kernels.conv import _activation_code, _encode
from ntkdemo.kernels.conv_arrays import pair_kernels
from ntkdemo.kernels.layers import check_layers, every_layer

REFERENCE = np.load(Path(__file__).parent / "data" / "activation_reference.npz")
ACTIVATIONS = {
    "erf": lambda: Erf(),
    "erf-scaled": lambda: Erf(a=1.3, b=0.7, c=0.2),
    "leaky-relu": lambda: LeakyRelu(0.1),
    "abrelu": lambda: ABRelu(-0.4, 1.2),
    "abs": lambda: Abs(),
    "identity": lambda: Identity(),
    "relu": lambda: Relu(),
    "gelu": lambda: Gelu(),
}
DUPLICATES = {"grey": [(1, 7), (1, 8), (7, 8)], "colour": [(0, 3)], "wide": []}
"""Pairs of parallel images in the inputs (a rescaled and a near duplicate)."""
CASES = sorted(
    (key for key in REFERENCE.files if key.startswith("case") and "_" not in key),
    key=lambda key: int(key[4:]),
)


def network(form: str, activation: str, w_std: float, b_std: float) -> list:
    """The layers of ``make_activation_reference.py``'s network of that form."""
    act = ACTIVATIONS[activation]
    if form == "strided":
        first = [Conv(w_std, b_std, (5, 5), (2, 2), "SAME"), Relu()]
        first += [Conv(w_std, b_std, (3, 3), (1, 1), "VALID"), act(), AvgPool((3, 3), (1, 1))]
        return [*first, GlobalAvgPool(), Dense(w_std, b_std)]
    if form == "strided-flatten":
        first = [Conv(w_std, b_std, (1, 3), (1, 1), "VALID"), act()]
        first += [Conv(w_std, b_std, (3, 3), (2, 2), "SAME"), act()]
        return [*first, Flatten(), Dense(w_std, b_std)]
    if form == "norm":
        first = [Conv(w_std, b_std), LayerNorm(), Relu(), Conv(w_std, b_std), LayerNorm()]
        return [*first, act(), GlobalAvgPool(), Dense(w_std, b_std)]
    if form == "residual":
        block = [act(), Conv(w_std, b_std), act(), Conv(w_std, b_std)]
        residual = Parallel([], block)
        return [Conv(w_std, b_std), residual, residual, act(), GlobalAvgPool(), Dense(w_std, b_std)]
    if form == "fc":
        return [Flatten(), Dense(w_std, b_std), act(), Dense(w_std, b_std), act()] + [
            Dense(w_std, b_std)
        ]
    if form == "mixed":
        return [Conv(w_std, b_std), Relu(), Conv(w_std, b_std), act(), AvgPool()] + [
            Conv(w_std, b_std),
            act(),
            GlobalAvgPool(),
            Dense(w_std, b_std),
        ]
    read_out = GlobalAvgPool() if form == "gap" else Flatten()
    return [Conv(w_std, b_std), act(), Conv(w_std, b_std), act(), read_out, Dense(w_std, b_std)]


@pytest.mark.parametrize("case", CASES)
def test_every_activation_equals_neural_tangents(case):
    """Within 1e-11 of the largest entry, on real grey images (with a negated one, a
    constant one, noise, a rescaled and a near duplicate) and colour ones; within 3e-8
    where the angle is 0 (self pairs and parallel images): ntkdemo's angle there is
    exactly 0, neural-tangents' carries the rounding of arccos near 1 (the square root
    of an ulp), as the exact self-pair test below shows."""
    inputs, form, activation, w_std, b_std = (str(value) for value in REFERENCE[case])
    layers = network(form, activation, float(w_std), float(b_std))
    computed = conv_kernels(REFERENCE[inputs], architecture=layers)
    for kernel, expected in zip(computed, (REFERENCE[f"{case}_nngp"], REFERENCE[f"{case}_ntk"])):
        errors = np.abs(kernel - expected) / np.abs(expected).max()
        parallel = np.eye(len(expected), dtype=bool)
        for i, j in DUPLICATES[inputs]:
            parallel[i, j] = parallel[j, i] = True
        assert errors[~parallel].max() <= 1e-11
        assert errors[parallel].max() <= 3e-8
        np.testing.assert_array_equal(kernel, kernel.T)


@pytest.mark.parametrize("activation", [LeakyRelu(0.1), ABRelu(-0.4, 1.2), Abs(), Relu()])
def test_self_pairs_follow_the_exact_recursion(activation):
    """At angle 0 the ABRelu rules are q' = (a^2 + b^2) q / 2 and a derivative kernel of
    (a^2 + b^2) / 2: a scalar recursion, computed here apart from any fold."""
    X = REFERENCE["grey"].reshape(len(REFERENCE["grey"]), -1)
    w_std, b_std = 1.3, 0.2
    layers = [Flatten(), Dense(w_std, b_std), activation, Dense(w_std, b_std), activation]
    nngp, ntk = conv_kernels(REFERENCE["grey"], architecture=[*layers, Dense(w_std, b_std)])
    factor = (activation.a**2 + activation.b**2) / 2
    q = np.einsum("ij,ij->i", X, X) / X.shape[1]
    tangent = np.zeros_like(q)
    for _ in range(2):
        q = w_std**2 * q + b_std**2
        tangent = q + w_std**2 * tangent
        q, tangent = factor * q, factor * tangent
    q = w_std**2 * q + b_std**2
    tangent = q + w_std**2 * tangent
    np.testing.assert_allclose(np.diagonal(nngp), q, rtol=1e-14)
    np.testing.assert_allclose(np.diagonal(ntk), tangent, rtol=1e-14)


@pytest.mark.parametrize("activation", [Erf(), Erf(2.0, 3.0, 0.5), ABRelu(-0.4, 1.2), Abs()])
def test_zero_variance_positions_give_numbers(activation):
    """A black border at b_std = 0 has variance 0: every rule gives a finite value."""
    images = np.zeros((3, 6, 6, 1))
    images[:, 2:4, 2:4, 0] = np.random.default_rng(0).random((3, 2, 2))
    layers = [Conv(1.0, 0.0), activation, Conv(1.0, 0.0), activation, GlobalAvgPool()]
    for kernel in conv_kernels(images, architecture=[*layers, Dense(1.0, 0.0)]):
        assert np.isfinite(kernel).all()


def test_the_relu_reference_rule_equals_its_fused_and_compiled_paths():
    """ABRelu(0, 1) is the ReLU through the general ABRelu rule, Relu() through its own
    (both compiled): the same kernel to rounding."""
    images = REFERENCE["colour"]
    general = [Conv(1.3, 0.2), ABRelu(0.0, 1.0), AvgPool(), Conv(1.3, 0.2), ABRelu(0.0, 1.0)]
    compiled = [Conv(1.3, 0.2), Relu(), AvgPool(), Conv(1.3, 0.2), Relu()]
    ending = [GlobalAvgPool(), Dense(1.3, 0.2)]
    for by_rule, by_loops in zip(
        conv_kernels(images, architecture=general + ending),
        conv_kernels(images, architecture=compiled + ending),
    ):
        np.testing.assert_allclose(by_rule, by_loops, rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_compiled_loops_equal_the_array_fold(case):
    """Every reference network the compiled loops can run (3 x 3 convolutions, 2 x 2
    pools, residual blocks, every activation with a compiled rule) gives the array
    fold's kernels within 1e-13 of the largest entry (other arithmetic: each angle by
    one ``atan2``), 1e-9 between parallel images, where an angle within rounding of 0
    takes a rounding's square root; the strided ones must stay in the array fold."""
    inputs, form, activation, w_std, b_std = (str(value) for value in REFERENCE[case])
    layers = check_layers(network(form, activation, float(w_std), float(b_std)))
    images = REFERENCE[inputs]
    compiled_rules = all(
        _activation_code(layer) is not None
        for layer in every_layer(layers)
        if isinstance(layer, Activation)
    )
    runs_compiled = form not in ("strided", "strided-flatten") and compiled_rules
    assert (_encode(layers, images.shape[1:3]) is not None) == runs_compiled
    if not runs_compiled:
        return
    reference = pair_kernels(np, layers, images, memory_bytes=10**9)
    parallel = np.eye(len(images), dtype=bool)
    for i, j in DUPLICATES[inputs]:
        parallel[i, j] = parallel[j, i] = True
    for compiled, expected in zip(conv_kernels(images, architecture=layers), reference):
        errors = np.abs(compiled - expected) / np.abs(expected).max()
        assert errors[~parallel].max() <= 1e-13
        assert errors[parallel].max() <= 1e-9


def test_every_built_in_activation_has_a_compiled_rule():
    """The activations shipped run in the compiled loops (a new one may run in the array
    fold alone until it gets a rule: docs/extending.md)."""
    for activation in [make() for make in ACTIVATIONS.values()] + [LayerNorm()]:
        assert _activation_code(activation) is not None, activation


@pytest.mark.parametrize(
    "written",
    [
        "conv+(relu+conv|gelu+conv|)+relu+gap+dense+erf+dense",
        "conv+(abs+conv|)+layernorm+relu+pool+conv+(erf:1.3:0.7:0.2+conv|identity+conv)+gelu+gap+dense",
        "conv+(relu+conv|erf+conv)+leaky-relu+flatten+dense+gelu+dense",
        "conv:1.2:0.3+erf:1:2:0.5+conv+(|erf+conv)+abs+flatten+dense",
    ],
)
def test_compiled_branches_and_read_out_activations_equal_the_array_fold(written):
    """Parallel blocks of several non-empty branches, activations after the read-out,
    biases, both read-outs (the pooling fold and the diagonal fold): the compiled loops
    against the array fold, on images with a black patch and a duplicate."""
    rng = np.random.default_rng(5)
    images = rng.random((5, 6, 6, 2))
    images[0, :3] = 0.0
    images[4] = images[1]
    layers = check_layers(network_layers(written, 1.1, 0.0))
    assert _encode(layers, (6, 6)) is not None
    reference = pair_kernels(np, layers, images, memory_bytes=10**9)
    for compiled, expected in zip(conv_kernels(images, architecture=layers), reference):
        errors = np.abs(compiled - expected) / np.abs(expected).max()
        assert errors.max() <= 1e-13


def test_an_activation_needs_gaussian_inputs():
    with pytest.raises(InvalidParameterError, match="Erf needs a Conv or Dense before it"):
        conv_kernels(
            REFERENCE["colour"], architecture=[Erf(), Conv(1.0, 0.0), Flatten(), Dense(1.0, 0.0)]
        )


def test_mirror_symmetry_and_the_spec_serve_any_composition():
    """A run's kernel of a composition: mirror-symmetric when no pool sees an odd width."""
    from ntkdemo.kernels import unit_rows
    from ntkdemo.kernels.mirror import mirrored
    from ntkdemo.spec import KernelSpec

    layers = (Conv(1.0, 0.1), Erf(), AvgPool(), Conv(1.0, 0.1), Abs(), GlobalAvgPool())
    spec = KernelSpec(architecture=(*layers, Dense(1.0, 0.1)), image_shape=(8, 8, 3))
    X = unit_rows(REFERENCE["colour"].reshape(5, -1))
    K = spec.matrix(X)
    K_mirrored = spec.matrix(mirrored(X, (8, 8, 3)))
    np.testing.assert_allclose(K_mirrored, K, rtol=1e-12)


def test_a_network_written_as_words_is_its_layers():
    from ntkdemo.kernels import architecture_layers

    assert architecture_layers("conv+erf+conv+erf+gap+dense", 1.5, 0.1) == (
        Conv(1.5, 0.1),
        Erf(),
        Conv(1.5, 0.1),
        Erf(),
        GlobalAvgPool(),
        Dense(1.5, 0.1),
    )
    written = architecture_layers("conv:2:0.5+leaky-relu:0.2+pool+conv+abs+gap+dense:1:0")
    expected = (Conv(2.0, 0.5), LeakyRelu(0.2), AvgPool(), Conv(1.0, 0.0), Abs())
    assert written == (*expected, GlobalAvgPool(), Dense(1.0, 0.0))
    assert architecture_layers("conv+relu+conv+relu+gap+dense") == architecture_layers("cnn-gap-2")
    residual = architecture_layers("conv+(|relu+conv+relu+conv)+relu+gap+dense", 1.0, 0.0)
    block = (Relu(), Conv(1.0, 0.0), Relu(), Conv(1.0, 0.0))
    assert residual == (Conv(1.0, 0.0), Parallel([], block), Relu(), GlobalAvgPool()) + (
        Dense(1.0, 0.0),
    )
    with pytest.raises(InvalidParameterError, match="parentheses of architecture .* match"):
        architecture_layers("conv+(relu+conv+gap+dense")
    with pytest.raises(InvalidParameterError, match="unknown layer 'tanh' in architecture"):
        architecture_layers("conv+tanh+gap+dense")
    with pytest.raises(InvalidParameterError, match="layer 'relu:3' of architecture .* takes"):
        architecture_layers("conv+relu:3+gap+dense")


def test_a_written_network_runs_from_the_command_line_and_the_estimators(tiny_dataset, tmp_path):
    """The same composition through ``ntkdemo --architecture`` and ``NTKClassifier``."""
    import json

    from ntkdemo import NTKClassifier, load_sample
    from ntkdemo.cli import main

    written = "conv:1.2:0.1+erf+conv:1.2:0.1+abs+gap+dense:1.2:0.1"
    arguments = ["--dataset", str(tiny_dataset), "--architecture", written, "--quiet"]
    code = main(
        [*arguments, "--train-per-class", "4", "--test-per-class", "2", "--out", str(tmp_path)]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["network"].startswith(f"NTK of {written}")
    sample = load_sample(str(tiny_dataset), 4, 2)
    layers = [Conv(1.2, 0.1), Erf(), Conv(1.2, 0.1), Abs(), GlobalAvgPool(), Dense(1.2, 0.1)]
    model = NTKClassifier(architecture=layers, image_shape=sample.image_shape)
    predicted = model.fit(sample.X_train, sample.y_train).predict(sample.X_test)
    assert np.mean(predicted == sample.y_test) == metrics["test_accuracy"]


@pytest.mark.parametrize(
    ("branches", "message"),
    [
        (([], [Relu()]), "2 branches, 2 of them without a Conv or Dense"),
        (([], [AvgPool(), Conv(1.0, 0.0)]), "the branches of a Parallel keep the positions"),
        ((), "a Parallel of 0 branches"),
    ],
)
def test_a_sum_of_dependent_branches_is_refused(branches, message):
    layers = [Conv(1.0, 0.0), Parallel(*branches), GlobalAvgPool(), Dense(1.0, 0.0)]
    with pytest.raises(InvalidParameterError, match=message):
        conv_kernels(REFERENCE["colour"], architecture=layers)


def test_a_residual_relu_network_equals_its_unrolled_sum():
    """x + f(x) for independent f: the kernel of the sum is the sum of the kernels, so a
    block with an identity branch equals the plain network plus its skip path."""
    conv, block = Conv(1.1, 0.1), [Relu(), Conv(1.1, 0.1), Relu(), Conv(1.1, 0.1)]
    images = REFERENCE["colour"]
    ending = [GlobalAvgPool(), Dense(1.0, 0.0)]
    summed = conv_kernels(images, architecture=[conv, Parallel([], block), *ending])
    skip = conv_kernels(images, architecture=[conv, *ending])
    path = conv_kernels(images, architecture=[conv, *block, *ending])
    for kernel, skipped, through in zip(summed, skip, path):  # Dense(1, 0) is linear
        np.testing.assert_allclose(kernel, skipped + through, rtol=1e-13)


@pytest.mark.parametrize("activation", [Gelu(), Erf(1.3, 0.7, 0.2)])
def test_each_smooth_dual_is_the_gaussian_expectation_it_claims(activation):
    """E[phi(u) phi(v)] and E[phi'(u) phi'(v)] by 2-D Gauss-Hermite quadrature (120 x 120
    nodes, independent of any closed form) at a few variances and covariances (the kinked
    ABRelu family, whose quadrature converges slowly, is held by the exact self-pair
    recursion and neural-tangents)."""
    from scipy.special import erf

    functions = {
        Gelu: (
            lambda x: x * (1 + erf(x / np.sqrt(2))) / 2,
            lambda x: (1 + erf(x / np.sqrt(2))) / 2 + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi),
        ),
        Erf: (
            lambda x: 1.3 * erf(0.7 * x) + 0.2,
            lambda x: 1.3 * 0.7 * 2 / np.sqrt(np.pi) * np.exp(-((0.7 * x) ** 2)),
        ),
    }
    phi, derivative = functions[type(activation)]
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / weights.sum()
    for q_a, q_b, correlation in [(1.0, 1.0, 0.3), (0.5, 2.0, -0.7), (3.0, 0.2, 0.95)]:
        covariance = correlation * np.sqrt(q_a * q_b)
        # u = sqrt(q_a) z1, v = c / sqrt(q_a) z1 + sqrt(q_b - c^2 / q_a) z2
        u = np.sqrt(q_a) * nodes[:, None] + 0 * nodes[None, :]
        v = (
            covariance / np.sqrt(q_a) * nodes[:, None]
            + np.sqrt(q_b - covariance**2 / q_a) * nodes[None, :]
        )
        grid = weights[:, None] * weights[None, :]
        expected_nngp = float((grid * phi(u) * phi(v)).sum())
        expected_dot = float((grid * derivative(u) * derivative(v)).sum())
        nngp, ntk = activation.dual(
            np, np.array(covariance), np.array(1.0), np.array(q_a), np.array(q_b)
        )
        assert abs(nngp - expected_nngp) <= 1e-9 * abs(expected_nngp)
        assert abs(ntk - expected_dot) <= 1e-9 * abs(expected_dot)


@pytest.mark.parametrize(
    ("layers", "width", "symmetric"),
    [
        ([Conv(1.0, 0.0)], 28, True),
        ([Conv(1.0, 0.0), Relu(), AvgPool()], 27, False),  # the last column dropped
        ([Conv(1.0, 0.0, (5, 5), (2, 2))], 28, False),  # one zero padded, after only
        ([Conv(1.0, 0.0, (3, 3), (2, 2))], 27, True),
        ([Conv(1.0, 0.0, (3, 3), (1, 1), "VALID"), Relu(), AvgPool((3, 3), (1, 1))], 9, True),
    ],
)
def test_mirror_symmetry_is_decided_from_every_window(layers, width, symmetric):
    """Decided from the windows, and true of the kernel: K(Fx, Fy) = K(x, y) exactly
    where decided so, and not where not."""
    from ntkdemo.kernels.mirror import is_mirror_symmetric, mirrored

    network = [*layers, GlobalAvgPool(), Dense(1.0, 0.0)]
    assert is_mirror_symmetric(network, (9, width)) == symmetric
    X = np.random.default_rng(4).random((3, 9 * width))
    plain = conv_kernels(X, architecture=network, image_shape=(9, width))[1]
    flipped = conv_kernels(mirrored(X, (9, width)), architecture=network, image_shape=(9, width))
    assert np.allclose(flipped[1], plain, rtol=1e-12) == symmetric


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([Conv(1.0, 0.0, (9, 9), (1, 1), "VALID")], r"images of 8 x 8 are too small .* Conv"),
        ([Conv(1.0, 0.0), Parallel([], [Relu(), Conv(1.0, 0.0, stride=2)])], "keep the positions"),
    ],
)
def test_shapes_that_cannot_run_are_refused(layers, message):
    with pytest.raises(InvalidParameterError, match=message):
        conv_kernels(REFERENCE["colour"], architecture=[*layers, GlobalAvgPool(), Dense(1.0, 0.0)])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Conv(1.0, 0.0, filter=(0, 3)), r"Conv filter must be two whole numbers >= 1"),
        (lambda: Conv(1.0, 0.0, stride=1.5), r"Conv stride must be two whole numbers"),
        (lambda: Conv(1.0, 0.0, padding="FULL"), r"padding must be 'SAME' or 'VALID'"),
        (lambda: AvgPool((2, 2, 2)), r"AvgPool window must be two whole numbers"),
    ],
)
def test_bad_layer_settings_are_named(make, message):
    with pytest.raises(InvalidParameterError, match=message):
        make()


def test_a_network_in_a_json_file_is_its_layers(tmp_path):
    """The same residual network as words and as a JSON file."""
    import json

    from ntkdemo.kernels import architecture_layers

    path = tmp_path / "net.json"
    items = ["conv", {"layer": "erf", "a": 1.3}, {"parallel": [[], ["relu", "conv"]]}]
    items += [{"layer": "conv", "w_std": 1.2, "filter": [5, 5], "stride": 2}, "relu", "gap"]
    path.write_text(json.dumps([*items, "dense"]))
    written = "conv+erf:1.3+(|relu+conv)+conv:1.2:0:5:2+relu+gap+dense"
    assert architecture_layers(str(path)) == architecture_layers(written)
    path.write_text(json.dumps(["conv", {"layer": "erf", "d": 1}, "gap", "dense"]))
    with pytest.raises(InvalidParameterError, match=r"layer \{'layer': 'erf', 'd': 1\} in"):
        architecture_layers(str(path))
    with pytest.raises(InvalidParameterError, match="cannot read the architecture file"):
        architecture_layers(str(tmp_path / "missing.json"))
