"""The iterative solver's pieces: clustering, the preconditioner, conjugate gradients."""

import numpy as np
import pytest

from ntkdemo.errors import InvalidInputError
from ntkdemo.kernels import ntk, unit_rows
from ntkdemo.solvers import ntk_strips, one_hot, solve
from ntkdemo.solvers.cg import (
    CGNotConverged,
    CGOptions,
    CGSolver,
    conjugate_gradients,
    solve_cg,
)
from ntkdemo.solvers.preconditioners import block_nystrom_preconditioner, cluster_order
from ntkdemo.spec import KernelSpec


@pytest.fixture
def near_duplicates():
    """Image-like rows, each present four times with small noise (like tiled data)."""
    rng = np.random.default_rng(0)
    base = rng.random((150, 40)) ** 3
    rows = np.tile(base, (4, 1)) + rng.uniform(0, 0.01, size=(600, 40))
    labels = np.tile(rng.integers(0, 5, 150), 4)
    return rows, labels, len(base)


def test_cluster_order_keeps_near_duplicates_together(near_duplicates):
    X, _, n_base = near_duplicates
    order, blocks = cluster_order(unit_rows(X), block_size=100)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(X)))
    assert blocks[0].start == 0 and blocks[-1].stop == len(X)
    assert all(a.stop == b.start for a, b in zip(blocks[:-1], blocks[1:]))
    block_of = np.empty(len(X), dtype=int)
    for number, block in enumerate(blocks):
        block_of[order[block]] = number
    copies = block_of.reshape(4, n_base)  # row i + k * n_base is a copy of row i
    together = np.mean((copies == copies[0]).all(axis=0))
    assert together >= 0.95


def test_cluster_order_single_block_when_small():
    X = np.random.default_rng(1).random((50, 5))
    order, blocks = cluster_order(unit_rows(X), block_size=100)
    np.testing.assert_array_equal(order, np.arange(50))
    assert blocks == [slice(0, 50)]


def test_block_preconditioner_with_one_block_inverts_the_matrix(near_duplicates):
    """One block makes D = K - F F^T exactly, so P = K (plus a 1e-7 relative shift)."""
    X, _, _ = near_duplicates
    K = ntk_strips(X[:200], strip_rows=64)
    dense = K.to_dense()
    R = np.random.default_rng(2).normal(size=(200, 3))
    apply = block_nystrom_preconditioner(K, [slice(0, 200)], 20, np.random.default_rng(0))
    np.testing.assert_allclose(apply(dense @ R), R, rtol=0, atol=1e-3 * np.abs(R).max())
    ridged = block_nystrom_preconditioner(
        K, [slice(0, 200)], 20, np.random.default_rng(0), ridge=0.5
    )
    np.testing.assert_allclose(ridged(dense @ R + 0.5 * R), R, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("rank", "strip_rows"), [(7, 16), (103, 5)])
def test_block_preconditioner_matches_the_kernel_on_its_blocks(rank, strip_rows):
    """P = F F^T + D equals K on every diagonal block (D_b = K_bb - F_b F_b^T, plus a
    1e-7 relative shift) and, with every column a landmark, everywhere. Uneven blocks,
    one of a single row, strips of the inverted blocks that end short, an odd number of
    columns and a rank that is no multiple of four exercise the edges of the compiled
    passes; the preconditioner's matrix is read off column by column."""
    X = np.random.default_rng(3).random((103, 30))
    K = ntk_strips(X, strip_rows=16)
    dense = K.to_dense()
    blocks = [slice(0, 37), slice(37, 38), slice(38, 70), slice(70, 103)]
    seen = []
    apply = block_nystrom_preconditioner(
        K,
        blocks,
        rank,
        np.random.default_rng(0),
        strip_rows=strip_rows,
        progress=lambda numbers: (seen.append(number) or number for number in numbers),
    )
    assert seen == [0, 1, 2, 3]  # the progress wrapper sees every block once, in order
    inverse = apply(np.eye(103))
    np.testing.assert_allclose(inverse, inverse.T, rtol=0, atol=1e-8 * np.abs(inverse).max())
    P = np.linalg.inv(inverse)
    for block in blocks:
        np.testing.assert_allclose(P[block, block], dense[block, block], rtol=0, atol=1e-5)
    off_block = np.abs(P - dense).max()
    assert off_block < 1e-5 if rank == 103 else off_block > 1e-3


def test_block_factor_undoes_failed_attempts_in_place():
    """D_b = I - F F^T with F = 0.2 (one column of 50) has eigenvalue -1: the shift
    must grow past 1, and every retry must start again from K_bb (a retry that kept the
    previous attempt's update would subtract F F^T twice). The factor is written into
    the block's own storage."""
    from ntkdemo.solvers.preconditioners import _factor_block

    block = np.asfortranarray(np.eye(50))
    update = np.asfortranarray(np.full((50, 1), 0.2))
    factor = _factor_block(block, update, 0.0, 1.0)
    assert np.shares_memory(factor, block)
    lower = np.tril(factor)
    D = lower @ lower.T
    shift = D[0, 0] - (1 - 0.04)
    assert 1 < shift <= 10
    np.testing.assert_allclose(D - shift * np.eye(50), np.eye(50) - 0.04, rtol=0, atol=1e-12)


def test_blocks_of_near_duplicates_cut_the_iterations(near_duplicates):
    """Against the same low rank plus only the diagonal (blocks of one row)."""
    X, labels, _ = near_duplicates
    order, blocks = cluster_order(unit_rows(X), block_size=100)
    K = ntk_strips(X[order], strip_rows=64)
    Y = one_hot(labels[order], 5)
    diagonal = [slice(i, i + 1) for i in range(len(X))]
    runs = {}
    for name, chosen in (("diagonal", diagonal), ("clusters", blocks)):
        precondition = block_nystrom_preconditioner(K, chosen, 50, np.random.default_rng(0))
        runs[name] = conjugate_gradients(K.__matmul__, Y, precondition, tol=1e-6, max_iter=2000)
    assert runs["clusters"][2] < 1e-6
    assert 2 * runs["clusters"][1] <= runs["diagonal"][1]


def test_block_cg_needs_no_more_iterations_than_one_column_alone(near_duplicates):
    """The block Krylov space holds every column's own: each column's error is minimised
    over at least what its single-column CG sees."""
    X, labels, _ = near_duplicates
    order, blocks = cluster_order(unit_rows(X), block_size=100)
    K = ntk_strips(X[order], strip_rows=64)
    Y = one_hot(labels[order], 5)
    precondition = block_nystrom_preconditioner(K, blocks, 20, np.random.default_rng(0))
    _, together, residual = conjugate_gradients(
        K.__matmul__, Y, precondition, tol=1e-8, max_iter=2000
    )
    alone = [
        conjugate_gradients(K.__matmul__, Y[:, [j]], precondition, tol=1e-8, max_iter=2000)[1]
        for j in range(Y.shape[1])
    ]
    assert residual < 1e-8
    assert together <= max(alone)
    assert together < sum(alone) / 2


def test_block_cg_drops_dependent_columns():
    """Equal and zero right-hand sides make the block rank deficient; the answer is still
    each column's own solution."""
    rng = np.random.default_rng(5)
    X = rng.random((120, 10))
    K = ntk_strips(X, strip_rows=16)
    b = rng.normal(size=120)
    B = np.column_stack([b, b, np.zeros(120), 2 * b])
    solution, _, residual = conjugate_gradients(
        K.__matmul__, B, lambda R: R / 2.0, tol=1e-10, max_iter=500
    )
    exact = np.linalg.solve(ntk(X), b)
    assert residual < 1e-10
    for column, factor in ((0, 1), (1, 1), (2, 0), (3, 2)):
        np.testing.assert_allclose(solution[:, column], factor * exact, rtol=0, atol=1e-6)


def test_solve_cg_matches_cholesky(near_duplicates):
    X, labels, _ = near_duplicates
    order, blocks = cluster_order(unit_rows(X), block_size=100)
    X_ordered = X[order]
    Y = one_hot(labels[order], 5)
    K = ntk(X_ordered)
    exact = solve(K, Y)
    lines = []
    iterative, fitted = solve_cg(
        ntk_strips(X_ordered, strip_rows=64),
        Y,
        blocks,
        options=CGOptions(rank=50),
        report=lines.append,
    )
    assert np.linalg.norm(Y - K @ iterative.coef) <= 1e-6 * np.linalg.norm(Y)
    np.testing.assert_allclose(fitted, K @ iterative.coef, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(
        (ntk(X[:40], X_ordered) @ iterative.coef).argmax(axis=1),
        (ntk(X[:40], X_ordered) @ exact.coef).argmax(axis=1),
    )
    assert len(lines) == 1 and lines[0].startswith("CG: ")
    assert "CG iterations, relative residual" in iterative.message
    assert "not reached" not in iterative.message


def test_cg_strategy_reports_progress_of_every_long_stage(near_duplicates):
    X, labels, _ = near_duplicates
    counts: dict[str, int] = {}
    sized: dict[str, bool] = {}

    def progress(description):
        def count(iterable):
            sized[description] = hasattr(iterable, "__len__")
            for item in iterable:
                counts[description] = counts.get(description, 0) + 1
                yield item

        return count

    solver = CGSolver(options=CGOptions(rank=30, cluster_size=40, strip_rows=32))
    fitted = solver.fit(unit_rows(X), one_hot(labels, 5), KernelSpec(), progress=progress)
    fitted.predict(unit_rows(X[:10]), progress=progress)
    _, blocks = cluster_order(unit_rows(X), 40)
    assert counts["kernel strips"] == -(-len(X) // 32)
    assert counts["preconditioner blocks"] == len(blocks) > 1
    assert counts["CG iterations"] == fitted.solution.iterations
    assert counts["prediction blocks"] == 1
    # a bar sized to the iteration limit would show a time left many times the truth
    assert sized == {
        "kernel strips": True,
        "preconditioner blocks": True,
        "CG iterations": False,
        "prediction blocks": True,
    }


@pytest.mark.parametrize(
    ("options", "n", "expected"),
    [
        (CGOptions(), 300, 300),  # every row a landmark
        (CGOptions(), 5000, 500),  # the floor
        (CGOptions(), 10000, 834),  # ceil(10000 / 12)
        (CGOptions(), 20000, 1667),
        (CGOptions(), 60000, 2500),  # the cap
        (CGOptions(rank=1500), 60000, 1500),
        (CGOptions(rank=50), 10000, 50),
        (CGOptions(rows_per_landmark=4, min_rank=10), 100, 25),
    ],
)
def test_nystrom_rank_grows_with_the_rows_up_to_its_cap(options, n, expected):
    assert options.nystrom_rank(n) == expected


def test_solve_cg_with_a_ridge_matches_the_direct_solve():
    rng = np.random.default_rng(4)
    X = rng.random((300, 20)) ** 3
    Y = one_hot(rng.integers(0, 4, 300), 4)
    blocks = [slice(0, 150), slice(150, 300)]
    iterative, fitted = solve_cg(
        ntk_strips(X, strip_rows=32), Y, blocks, ridge=0.1, options=CGOptions(rank=30)
    )
    exact = np.linalg.solve(ntk(X) + 0.1 * np.eye(300), Y)
    np.testing.assert_allclose(iterative.coef, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    assert iterative.ridge == 0.1
    np.testing.assert_allclose(fitted + 0.1 * iterative.coef, Y, rtol=0, atol=1e-5)


def test_solve_cg_raises_when_it_falls_short(near_duplicates):
    """Two iterations per run cannot reach 1e-6: every restart is reported, then CG refuses
    to return the answer, saying the target was missed and what to try."""
    X, labels, _ = near_duplicates
    lines = []
    with pytest.raises(
        CGNotConverged, match=r"after [46] iterations .target 1e-06 not reached.*--ridge"
    ):
        solve_cg(
            ntk_strips(X, strip_rows=64),
            one_hot(labels, 5),
            [slice(0, 300), slice(300, 600)],
            options=CGOptions(rank=10, max_iter=2, max_restarts=2),
            report=lines.append,
        )
    runs = [line.split(":")[0] for line in lines]  # restarts end when they stop helping
    assert runs in (["CG", "CG restart 1"], ["CG", "CG restart 1", "CG restart 2"])


@pytest.mark.parametrize("storage", [np.float64, np.float32])
def test_cg_on_relabelled_duplicates_falls_back_to_jitter(storage):
    """Exact duplicates with other labels make K singular and the system inconsistent: CG
    diverges (review: accuracy below chance, exit 0). Now it retries with jitter and
    agrees with Cholesky, which adds jitter too."""
    from ntkdemo.solvers.cholesky import solve

    rng = np.random.default_rng(1)
    X = rng.random((200, 30)) ** 3
    labels = rng.integers(0, 4, 200)
    X = np.vstack([X, X[:5]])
    labels = np.concatenate([labels, (labels[:5] + 1) % 4])
    Y = one_hot(labels, 4)
    options = CGOptions(storage=storage, rank=40, cluster_size=60, strip_rows=32)
    lines = []
    fitted = CGSolver(options=options).fit(unit_rows(X), Y, KernelSpec(), report=lines.append)
    assert any(line.startswith("CG missed its target") for line in lines)
    assert fitted.solution.jitter > 0 and "added jitter" in fitted.solution.message
    K = ntk(X)
    residual = Y - (K + fitted.solution.jitter * np.eye(len(K))) @ fitted.solution.coef
    assert np.linalg.norm(residual) <= 1e-6 * np.linalg.norm(Y)
    test = unit_rows(rng.random((50, 30)) ** 3)
    direct = solve(K, Y)
    agree = fitted.predict(test).argmax(1) == (ntk(test, unit_rows(X)) @ direct.coef).argmax(1)
    assert agree.mean() >= 0.96


def test_cg_with_a_ridge_that_dwarfs_the_kernel_is_one_clear_error():
    X = np.random.default_rng(2).random((80, 10))
    with pytest.raises(InvalidInputError, match=r"--ridge 1e\+308: it dwarfs the kernel"):
        CGSolver(options=CGOptions(rank=20, cluster_size=40, max_iter=50)).fit(
            unit_rows(X), one_hot(np.arange(80) % 2, 2), KernelSpec(ridge=1e308)
        )


def test_float32_triangle_refined_in_float64_matches_cholesky(near_duplicates):
    """The cg32 strategy: CG on the rounded triangle, then float64 refinement passes, reaches
    the float64 residual target and the Cholesky predictions."""
    from ntkdemo.solvers import CGSolver
    from ntkdemo.spec import KernelSpec

    X, labels, _ = near_duplicates
    X_unit = unit_rows(X)
    Y = one_hot(labels, 5)
    options = CGOptions(storage=np.float32, rank=40, cluster_size=100, strip_rows=32)
    lines = []
    fitted = CGSolver(name="cg32", options=options).fit(
        X_unit, Y, KernelSpec(), report=lines.append
    )
    K = ntk(X)
    assert np.linalg.norm(Y - K @ fitted.solution.coef) <= 1e-6 * np.linalg.norm(Y)
    np.testing.assert_allclose(fitted.train_scores, K @ fitted.solution.coef, rtol=0, atol=1e-9)
    exact = solve(K, Y)
    np.testing.assert_array_equal(
        fitted.predict(X_unit[:50]).argmax(1), (K[:50] @ exact.coef).argmax(1)
    )
    assert (
        lines[0].startswith("CG float64 pass 0") and "float32 triangle" in fitted.solution.message
    )
    assert len(lines) >= 2  # float32 alone does not reach 1e-6 on near-duplicates
