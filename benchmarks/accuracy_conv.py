"""Test accuracy of each architecture x kernel x training size, with ZCA and flips on
and off, on ``../shared/fashion_mnist_60k``'s test images: one table.

Every row is ``run_demo`` with the Cholesky strategy (kernel regression, ridge 0) on a
class-balanced sample (seed 0): ``--sizes`` images per class for training, the first
``--test`` test images (all 3,000 by default; the pooling kernels cost milliseconds per
image pair, so give them fewer). A row's time is printed beside it. Flips take the
form ``ntkdemo --flip`` takes (:func:`ntkdemo.preprocess.flip_kernel`): the kernel
averaged over mirrors where it is mirror symmetric, else the mirrored images added.

Usage: ``python benchmarks/accuracy_conv.py [--architectures fc-1,cnn-flatten-3]
[--sizes 10,100] [--test 3000] [--kernels ntk,nngp] [--variants plain,zca]``
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

VARIANTS = ("plain", "zca", "flip", "zca+flip")
"""The preprocessings a row can take: none, ZCA whitening, flips, both."""


def main() -> int:
    from ntkdemo.cli.options import (
        architecture_name,
        comma_list,
        one_of,
        positive_float,
        positive_int,
        script_parser,
    )

    parser = script_parser(__doc__)
    parser.add_argument("--dataset", default="../shared/fashion_mnist_60k", help="dataset folder")
    parser.add_argument(
        "--architectures",
        type=comma_list(architecture_name),
        default="fc-1,cnn-flatten-3,cnn-flatten-6",
        help="networks, comma-separated",
    )
    parser.add_argument(
        "--kernels", type=comma_list(one_of("ntk", "nngp")), default="ntk,nngp", help="kernels"
    )
    parser.add_argument(
        "--sizes", type=comma_list(positive_int), default="10,100", help="images per class"
    )
    parser.add_argument("--test", type=positive_int, default=3000, help="test images")
    parser.add_argument("--zca", type=positive_float, default=0.1, help="epsilon of the ZCA rows")
    parser.add_argument(
        "--variants",
        type=comma_list(one_of(*VARIANTS)),
        default=",".join(VARIANTS),
        help="preprocessings to run",
    )
    options = parser.parse_args()
    from ntkdemo import KernelSpec, load_sample, run_demo
    from ntkdemo.preprocess import flip_kernel, with_flips, zca_whitened

    print(
        f"{'architecture':<15} {'kernel':<6} {'per class':>9} {'zca':>5} {'flip':>5} "
        f"{'test':>5} {'accuracy':>8} {'seconds':>8}",
        flush=True,
    )
    for size in options.sizes:
        base = load_sample(options.dataset, size, None, seed=0)
        base = replace(
            base,
            X_test=base.X_test[: options.test],
            y_test=base.y_test[: options.test],
            test_indices=base.test_indices[: options.test],
        )
        for architecture in options.architectures:
            for kernel in options.kernels:
                for variant in options.variants:
                    zca, flip = "zca" in variant, "flip" in variant
                    spec = KernelSpec(kernel=kernel, architecture=architecture, w_std=2**0.5)
                    averaged = flip_kernel(spec, base.image_shape)[0] if flip else None
                    spec = averaged or spec
                    sample = with_flips(base) if flip and averaged is None else base
                    if zca:
                        sample = zca_whitened(sample, options.zca, with_mirrors=spec.flip)
                    start = time.perf_counter()
                    result = run_demo(sample, spec, spectrum_rows=10)
                    seconds = time.perf_counter() - start
                    print(
                        f"{architecture:<15} {kernel:<6} {size:>9} {'yes' if zca else 'no':>5} "
                        f"{'yes' if flip else 'no':>5} {len(sample.y_test):>5} "
                        f"{result.test_report.accuracy:>8.4f} {seconds:>8.1f}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    from ntkdemo.cli.options import run_script

    sys.exit(run_script(main))
