"""Regenerate ``activation_reference.npz`` (not run by the tests): NNGP and NTK from
neural-tangents of networks with the activations beyond ReLU, the reference for
``ntkdemo.kernels.activations``.

Needs neural-tangents 0.6.5 with jax 0.4.30 and numpy < 2 in a separate environment
(see ``make_conv_reference.py``)::

    nt-venv/bin/python tests/data/make_activation_reference.py

The inputs are those of ``conv_reference.npz`` (real grey 28 x 28 images with a
negated one, a constant one, noise, a shifted one, a rescaled and a near duplicate;
random colour 8 x 8 x 3 images with a rescaled duplicate), read from it, and four
random 32 x 32 x 3 images for a residual network: the tests need neither this script
nor neural-tangents.
"""

from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = Path(__file__).parent
inputs = np.load(HERE / "conv_reference.npz")
payload = {"grey": inputs["grey"], "colour": inputs["colour"]}

ACTIVATIONS = {
    "erf": lambda: stax.Erf(),
    "erf-scaled": lambda: stax.Erf(a=1.3, b=0.7, c=0.2),
    "leaky-relu": lambda: stax.LeakyRelu(0.1),
    "abrelu": lambda: stax.ABRelu(-0.4, 1.2),
    "abs": lambda: stax.Abs(),
    "identity": lambda: stax.Identity(),
    "relu": lambda: stax.Relu(),
    "gelu": lambda: stax.Gelu(),
}


def conv(w_std, b_std):
    return stax.Conv(1, (3, 3), padding="SAME", W_std=w_std, b_std=b_std)


def network(form, activation, w_std, b_std):
    """``fc``: Flatten, (Dense, act) x 2, Dense; ``gap``/``flatten``: (Conv, act) x 2,
    the read-out, Dense; ``mixed``: Conv, Relu, Conv, act, AvgPool, Conv, act, GAP, Dense;
    ``residual``: Conv, two blocks x + Conv(act(Conv(act(x)))), act, GAP, Dense;
    ``norm``: Conv, LayerNorm, Relu, Conv, LayerNorm, act, GAP, Dense; ``strided`` and
    ``strided-flatten``: other filters, strides, paddings and pool windows."""
    act = ACTIVATIONS[activation]
    if form == "strided":  # 5 x 5 stride 2 'SAME', 3 x 3 'VALID', a 3 x 3 pool of stride 1
        layers = [stax.Conv(1, (5, 5), (2, 2), "SAME", W_std=w_std, b_std=b_std), stax.Relu()]
        layers += [stax.Conv(1, (3, 3), (1, 1), "VALID", W_std=w_std, b_std=b_std), act()]
        layers += [stax.AvgPool((3, 3), strides=(1, 1)), stax.GlobalAvgPool()]
    elif form == "strided-flatten":  # 1 x 3 'VALID', then 3 x 3 stride 2 'SAME', Flatten
        layers = [stax.Conv(1, (1, 3), (1, 1), "VALID", W_std=w_std, b_std=b_std), act()]
        layers += [stax.Conv(1, (3, 3), (2, 2), "SAME", W_std=w_std, b_std=b_std), act()]
        layers += [stax.Flatten()]
    elif form == "norm":  # Conv, LayerNorm, Relu, Conv, LayerNorm, act, GAP, Dense
        norm = lambda: stax.LayerNorm(axis=-1)  # noqa: E731
        layers = [conv(w_std, b_std), norm(), stax.Relu(), conv(w_std, b_std), norm(), act()]
        layers += [stax.GlobalAvgPool()]
    elif form.startswith("residual"):  # Conv, then two residual blocks around act-Conv-act-Conv
        block = stax.serial(act(), conv(w_std, b_std), act(), conv(w_std, b_std))
        residual = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), block))
        layers = [conv(w_std, b_std), residual, stax.FanInSum(), residual, stax.FanInSum()]
        layers += [act(), stax.GlobalAvgPool()]
    elif form == "fc":
        dense = lambda: stax.Dense(1, W_std=w_std, b_std=b_std)  # noqa: E731
        layers = [stax.Flatten(), dense(), act(), dense(), act()]
    elif form == "mixed":
        layers = [conv(w_std, b_std), stax.Relu(), conv(w_std, b_std), act()]
        layers += [stax.AvgPool((2, 2), strides=(2, 2)), conv(w_std, b_std), act()]
        layers += [stax.GlobalAvgPool()]
    else:
        layers = [conv(w_std, b_std), act(), conv(w_std, b_std), act()]
        layers += [stax.GlobalAvgPool() if form == "gap" else stax.Flatten()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w_std, b_std=b_std))
    return kernel_fn


cases = [("grey", "fc", name, 1.3, 0.2) for name in ACTIVATIONS if name not in ("relu", "gelu")]
cases += [
    ("colour", "gap", name, 1.1, 0.1) for name in ACTIVATIONS if name not in ("identity", "relu")
]
cases += [("grey", "flatten", "erf", 1.2, 0.3), ("grey", "flatten", "abs", 2**0.5, 0.0)]
cases += [("colour", "mixed", "erf", 1.3, 0.2), ("colour", "mixed", "leaky-relu", 1.0, 0.0)]
cases += [("colour", "residual", "relu", 1.0, 0.1), ("wide", "residual", "erf", 1.2, 0.0)]
cases += [("grey", "fc", "gelu", 1.3, 0.2), ("colour", "gap", "gelu", 1.1, 0.1)]
cases += [("colour", "norm", "erf", 1.2, 0.1), ("colour", "norm", "gelu", 1.0, 0.0)]
cases += [("grey", "strided", "erf", 1.3, 0.1), ("colour", "strided-flatten", "relu", 1.1, 0.2)]
payload["wide"] = np.random.default_rng(20261206).standard_normal((4, 32, 32, 3))
for number, (name, form, activation, w_std, b_std) in enumerate(cases):
    x = payload[name]
    kernels = network(form, activation, w_std, b_std)(x, None, ("nngp", "ntk"))
    payload[f"case{number}"] = np.array([name, form, activation, repr(w_std), repr(b_std)])
    payload[f"case{number}_nngp"] = np.asarray(kernels.nngp)
    payload[f"case{number}_ntk"] = np.asarray(kernels.ntk)
    print(number, form, activation, flush=True)
np.savez_compressed(HERE / "activation_reference.npz", **payload)
