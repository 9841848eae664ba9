"""Regenerate ``neural_tangents_reference.json`` (not run by the tests).

Needs neural-tangents 0.6.5 with jax 0.4.30 and numpy < 2 in a separate environment:
``python tests/data/make_neural_tangents_reference.py``. The inputs are stored in the
file, so the tests never need the generator.
"""

import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import predict, stax  # noqa: E402

rng = np.random.default_rng(20261122)
x_train = rng.standard_normal((7, 5))
x_train[3] = x_train[1]  # a duplicated row
x_train[5] = -2.0 * x_train[0]  # an antipodal, rescaled row
x_test = rng.standard_normal((4, 5))
y_train = rng.standard_normal((7, 2))
times = [0.0, 0.5, 3.0, 40.0]
cases = []
for depth, w_std, b_std in ((1, 1.0, 0.0), (2, 1.5, 0.1), (3, 0.8, 0.4)):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=w_std, b_std=b_std), stax.Relu()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w_std, b_std=b_std))
    train = kernel_fn(x_train, None, ("nngp", "ntk"))
    cross = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    mean = predict.gradient_descent_mse_ensemble(
        kernel_fn, x_train, y_train, learning_rate=0.7, diag_reg=0.0
    )
    # x_train has a duplicated row, so only the NNGP/NTK of distinct rows is invertible:
    # dynamics use the distinct rows.
    distinct = [0, 1, 2, 4, 5, 6]
    mean_distinct = predict.gradient_descent_mse_ensemble(
        kernel_fn, x_train[distinct], y_train[distinct], learning_rate=0.7, diag_reg=0.0
    )
    dynamics = {
        get: [np.asarray(mean_distinct(t, x_test, get=get)).tolist() for t in times]
        + [np.asarray(mean_distinct(None, x_test, get=get)).tolist()]
        for get in ("nngp", "ntk")
    }
    cases.append({
        "depth": depth, "w_std": w_std, "b_std": b_std,
        "train_nngp": np.asarray(train.nngp).tolist(), "train_ntk": np.asarray(train.ntk).tolist(),
        "cross_nngp": np.asarray(cross.nngp).tolist(), "cross_ntk": np.asarray(cross.ntk).tolist(),
        "dynamics_rows": distinct, "dynamics": dynamics,
    })
payload = {"x_train": x_train.tolist(), "x_test": x_test.tolist(), "y_train": y_train.tolist(),
           "learning_rate": 0.7, "times": times + [None], "cases": cases}
Path(__file__).with_name("neural_tangents_reference.json").write_text(json.dumps(payload))
