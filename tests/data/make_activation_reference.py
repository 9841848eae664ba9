"""Regenerate ``activation_reference.npz`` (not run by the tests): NNGP and NTK from
neural-tangents of networks with the activations beyond ReLU, the reference for
``ntkdemo.kernels.activations``.

Needs neural-tangents 0.6.5 with jax 0.4.30 and numpy < 2 in a separate environment
(see ``make_conv_reference.py``)::

    nt-venv/bin/python tests/data/make_activation_reference.py

The inputs are those of ``conv_reference.npz`` (real grey 28 x 28 images with a
negated one, a constant one, noise, a shifted one, a rescaled and a near duplicate;
random colour 8 x 8 x 3 images with a rescaled duplicate), read from it: the tests
need neither this script nor neural-tangents.
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
}


def conv(w_std, b_std):
    return stax.Conv(1, (3, 3), padding="SAME", W_std=w_std, b_std=b_std)


def network(form, activation, w_std, b_std):
    """``fc``: Flatten, (Dense, act) x 2, Dense; ``gap``/``flatten``: (Conv, act) x 2,
    the read-out, Dense; ``mixed``: Conv, Relu, Conv, act, AvgPool, Conv, act, GAP, Dense."""
    act = ACTIVATIONS[activation]
    if form == "fc":
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


cases = [(inputs, "fc", name, 1.3, 0.2) for name in ACTIVATIONS for inputs in ("grey",)]
cases += [("colour", "gap", name, 1.1, 0.1) for name in ACTIVATIONS if name != "identity"]
cases += [("grey", "flatten", "erf", 1.2, 0.3), ("grey", "flatten", "abs", 2**0.5, 0.0)]
cases += [("colour", "mixed", "erf", 1.3, 0.2), ("colour", "mixed", "leaky-relu", 1.0, 0.0)]
for number, (name, form, activation, w_std, b_std) in enumerate(cases):
    x = payload[name]
    kernels = network(form, activation, w_std, b_std)(x, None, ("nngp", "ntk"))
    payload[f"case{number}"] = np.array([name, form, activation, repr(w_std), repr(b_std)])
    payload[f"case{number}_nngp"] = np.asarray(kernels.nngp)
    payload[f"case{number}_ntk"] = np.asarray(kernels.ntk)
    print(number, form, activation, flush=True)
np.savez_compressed(HERE / "activation_reference.npz", **payload)
