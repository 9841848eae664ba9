"""Regenerate ``conv_reference.npz`` (not run by the tests): convolutional NNGP and NTK
from neural-tangents, the reference for ``ntkdemo.kernels.conv``.

Needs neural-tangents 0.6.5 with jax 0.4.30 and numpy < 2 in a separate environment::

    python -m venv nt-venv
    nt-venv/bin/pip install "jax==0.4.30" "jaxlib==0.4.30" "numpy<2" "neural-tangents==0.6.5"
    nt-venv/bin/python tests/data/make_conv_reference.py IMAGES.npy

``IMAGES.npy`` holds real 28 x 28 images as uint8 (e.g. the first six of
``../shared/fashion_mnist``'s training split). The inputs are stored in the file beside
the kernels, so the tests never need this script, neural-tangents or the images.
"""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

FACTORS = {"myrtle5": (2, 1, 1), "myrtle7": (2, 2, 2)}


def conv(w_std, b_std):
    return [stax.Conv(1, (3, 3), padding="SAME", W_std=w_std, b_std=b_std), stax.Relu()]


def composed(name, w_std, b_std):
    """The layer lists the tests name ``composed-*`` (ntkdemo's layer values)."""
    plain_conv = stax.Conv(1, (3, 3), padding="SAME", W_std=w_std, b_std=b_std)
    if name == "composed-pool":  # pooled pixels, a ReLU alone, an unrectified conv
        return [stax.AvgPool((2, 2), strides=(2, 2)), plain_conv, stax.Relu(), plain_conv]
    return [plain_conv, stax.Relu(), plain_conv]  # composed-diagonal


def network(name, w_std, b_std):
    if name.startswith("composed-"):
        layers = composed(name, w_std, b_std) + conv(w_std, b_std) + [stax.Flatten()]
    elif name.startswith("cnn-flatten-"):
        layers = sum((conv(w_std, b_std) for _ in range(int(name.rsplit("-", 1)[1]))), [])
        layers += [stax.Flatten()]
    elif name.startswith("cnn-gap-"):
        layers = sum((conv(w_std, b_std) for _ in range(int(name.rsplit("-", 1)[1]))), [])
        layers += [stax.GlobalAvgPool()]
    else:
        f1, f2, f3 = FACTORS[name]
        pool = [stax.AvgPool((2, 2), strides=(2, 2))]
        layers = sum((conv(w_std, b_std) for _ in range(f1)), []) + pool
        layers += sum((conv(w_std, b_std) for _ in range(f2)), []) + pool
        layers += sum((conv(w_std, b_std) for _ in range(f3)), []) + [stax.GlobalAvgPool()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w_std, b_std=b_std))
    return kernel_fn


real = np.load(sys.argv[1]).astype(np.float64) / 255.0  # (6, 28, 28)
rng = np.random.default_rng(20261204)
shifted = np.roll(real[0], 1, axis=1)
shifted[:, 0] = 0.0
grey = np.stack(
    [
        real[0],
        real[1],
        real[2],
        -real[3],  # negated
        np.full((28, 28), 0.5),  # constant
        rng.standard_normal((28, 28)),  # noise
        shifted,  # one pixel to the right
        2.5 * real[1],  # rescaled duplicate of image 1
        real[1] + 1e-9 * rng.standard_normal((28, 28)),  # near-duplicate of image 1
    ]
)[..., None]
colour = rng.random((5, 8, 8, 3))
colour[3] = colour[0] * 3.0
payload = {"grey": grey, "colour": colour}
cases = [
    ("grey", "cnn-flatten-3", 2**0.5, 0.0),
    ("grey", "cnn-gap-2", 2**0.5, 0.0),
    ("grey", "myrtle5", 2**0.5, 0.0),
    ("grey", "cnn-flatten-2", 1.3, 0.2),
    ("colour", "cnn-gap-2", 1.3, 0.2),
    ("colour", "myrtle7", 2**0.5, 0.1),
    ("colour", "cnn-flatten-1", 2**0.5, 0.0),
    ("grey", "composed-pool", 1.3, 0.2),
    ("colour", "composed-diagonal", 1.1, 0.3),
]
for number, (inputs, name, w_std, b_std) in enumerate(cases):
    x = payload[inputs]
    kernels = network(name, w_std, b_std)(x, None, ("nngp", "ntk"))
    payload[f"case{number}"] = np.array([inputs, name, repr(w_std), repr(b_std)])
    payload[f"case{number}_nngp"] = np.asarray(kernels.nngp)
    payload[f"case{number}_ntk"] = np.asarray(kernels.ntk)
    print(number, name, flush=True)
np.savez_compressed(Path(__file__).with_name("conv_reference.npz"), **payload)
