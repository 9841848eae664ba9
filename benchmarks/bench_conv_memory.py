"""Memory of a convolutional Gram matrix beyond the matrices themselves.

Each size runs in a fresh process: ``conv_kernels`` of ``n`` images (28 x 28, random,
since memory does not depend on the pixels), the whole call as a run makes it (the
per-image variances computed, every round's pairs listed, per-thread workspaces, the two
returned matrices written entry by entry and mirrored), except that the compiled fold
of each round's pairs is replaced by one that writes zeros to their entries: the
arithmetic does not change what is held, and a 2,000-image Myrtle-5 Gram would take
two hours here. The table gives the peak resident memory the call added
(``ru_maxrss`` after, less the resident memory before), the two returned n x n
matrices (NNGP and NTK) and what is left beyond them.

Usage: ``python benchmarks/bench_conv_memory.py [--sizes 500,1000,2000]
[--architecture myrtle5]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
import psutil
from ntkdemo.kernels import conv_kernels, conv_loops

def zeros_written(fold, images_a, images_b, rows, cols, *others):
    nngp, ntk = others[-3], others[-2]
    nngp[rows, cols] = ntk[rows, cols] = 0.0

n, architecture = int(sys.argv[1]), sys.argv[2]
images = np.random.default_rng(0).random((n, 28, 28, 1))
conv_kernels(images[:2], architecture=architecture)  # load the compiled loops
conv_loops.fold_pairs = zeros_written
before = psutil.Process().memory_info().rss
conv_kernels(images, architecture=architecture)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"added": peak - before}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000")
    parser.add_argument("--architecture", default="myrtle5")
    options = parser.parse_args()
    print(f"{options.architecture}, 28 x 28 images, float64")
    print(f"{'images':>7} {'added (MB)':>11} {'2 Grams (MB)':>13} {'beyond them (MB)':>17}")
    for n in (int(size) for size in options.sizes.split(",")):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), options.architecture],
            capture_output=True,
            text=True,
            check=True,
        )
        added = json.loads(done.stdout.strip().splitlines()[-1])["added"] / 1e6
        grams = 2 * n * n * 8 / 1e6
        print(f"{n:>7} {added:>11.0f} {grams:>13.0f} {added - grams:>17.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
