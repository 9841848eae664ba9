"""What the field teaches around the demo: learning and training curves, the Monte-Carlo
check of the formula, finite networks as evidence (:mod:`.experiments`, :mod:`.network`).
Beside the demo, on the same kernels and solvers; nothing below imports it."""
