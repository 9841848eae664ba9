"""What a run computes: the kernel and how the network is read out, validated once.

A :class:`KernelSpec` names the kernel (the one-layer formula, a deep fully connected
or a convolutional NTK/NNGP with weight and bias scales, averaged over mirrors or not),
the ridge and the training time. Every layer below the
command line receives one and trusts it: the decisions that depend on it (is this the
one-layer formula the fast paths serve? converged network or finite time?) are its
properties, made here once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from .dynamics import check_times
from .errors import InvalidParameterError
from .kernels.architecture import fully_connected_depth, network_layers
from .kernels.averaged import InputAverage
from .kernels.features import RandomFeatures, check_feature_dtype, check_feature_layers
from .kernels.in_range import check_kernel_informative
from .kernels.layers import Layer
from .kernels.matrix import PairTally, is_default_kernel, kernel_of_unit_rows
from .kernels.mirror import is_mirror_symmetric
from .validation import check_nonnegative_float, check_nonnegative_int, check_positive_int


def image_reader(architecture: object, flip: bool, shifts: int) -> str | None:
    """The parameter that makes a kernel read its rows as images (so that it needs their
    shape), in its own words for a message: a convolutional ``architecture``, an average
    over ``shifts`` or mirrors (``flip``); None for a fully connected kernel of the
    rows as they are."""
    if architecture is not None:
        return f"architecture {architecture!r}"
    if shifts:
        return f"shifts={shifts}"
    return "flip=True" if flip else None


@dataclass(frozen=True)
class KernelSpec:
    r"""The kernel of a run and how its network is read out.

    Parameters
    ----------
    kernel : {"ntk", "nngp"}, default="ntk"
        The whole network trained (NTK) or only its readout (NNGP).
    depth : int, default=1
        Hidden ReLU layers.
    w_std, b_std : float, default=1.0 and 0.0
        Weight and bias standard deviations (``w_std > 0``).
    ridge : float, default=0.0
        Added to the kernel's diagonal; 0 is the trained network, which interpolates.
    time : float or None, default=None
        Gradient-descent time of the infinite network (learning rate 1,
        neural-tangents' convention); None (or inf) is convergence. Not with a ridge.
    architecture : str, sequence of layers or None, default=None
        A network of :func:`ntkdemo.kernels.conv_kernels` (``cnn-flatten-L``,
        ``cnn-gap-L``, ``myrtle5``, ..., or its layers, kept as a tuple, whose own
        scales then apply) in place of the fully connected one; ``fc-L``
        is the fully connected network of depth L (it sets ``depth``; another ``depth``
        than 1, the default, or L is refused).
    image_shape : tuple of int, default=()
        ``(H, W)`` or ``(H, W, C)`` of one image, which a convolutional architecture
        and ``flip`` need to see the flat rows as images (``run_demo`` takes it from the
        sample).
    flip : bool, default=False
        The kernel averaged over left-right mirrors, :math:`(K(x, y) + K(x, Fy)) / 2`
        (:mod:`ntkdemo.kernels.mirror`): on the original images, the network trained on
        them and their mirrors (whose ridge is twice this one). Needs a mirror-symmetric
        kernel (every ``AvgPool`` of the architecture sees an even width).
    shifts : int, default=0
        The network averaged over its input cyclically shifted by ``0 .. shifts``
        pixels down and right (and mirrored, with ``flip``): the kernel
        :math:`K(ax, by)` averaged over all pairs of copies :math:`a, b`
        (:mod:`ntkdemo.kernels.averaged`), ``(2 shifts + 1)^2`` times the plain kernel's
        cost. Fully connected kernels only (they are invariant under the shifts).
    features : int or None, default=None
        Approximate the kernel by random features (:mod:`ntkdemo.kernels.features`):
        ``features`` NNGP columns (twice as many for the NTK) of one random network of
        the architecture, solved in the primal; None: the exact kernel. Every run with
        features measures its own error against the exact kernel.
    feature_width : int, default=128
        Channels of the random network's hidden layers but the last.
    feature_seed : int, default=0
        Seed of the random network and its sketch.
    feature_dtype : {"float64", "float32"}, default="float64"
        Precision the random network runs in: ``"float32"`` about 1.5 times as fast, its
        rounding far below the features' own error (:mod:`ntkdemo.kernels.features`).
    added : KernelSpec or None, default=None
        A second network's kernel added to this one, approximated by its random
        features (``added.features`` set): the kernel of the sum of the two networks'
        outputs, :math:`K(x, y) + c\,\phi(x)^T \phi(y)` with ``c = added_weight``
        (an exact kernel plus, say, Myrtle-5's features). The rows the solvers see carry
        each image's features after its values (:meth:`row_width`,
        :class:`ntkdemo.solvers.features.AddedFeatures`); the exact part is this spec's
        kernel of the values. Not with ``features`` or a finite ``time``.
    added_weight : float, default=1.0
        ``c``, the weight of the added kernel (> 0); choose it on held-out training
        images, never on the test images.
    tally : PairTally or None, default=None
        Counts the image pairs whose kernel this process computes for the spec
        (:meth:`matrix` and :meth:`count_pairs`); not part of the spec's identity.

    Raises
    ------
    InvalidParameterError
        If a value is out of range, a ridge is combined with a time, or ``flip`` with a
        kernel that is not mirror symmetric on ``image_shape``, or ``shifts`` with a
        convolutional kernel or random features.
    """

    kernel: str = "ntk"
    depth: int = 1
    w_std: float = 1.0
    b_std: float = 0.0
    ridge: float = 0.0
    time: float | None = None
    architecture: str | tuple[Layer, ...] | None = None
    image_shape: tuple[int, ...] = ()
    flip: bool = False
    shifts: int = 0
    features: int | None = None
    feature_width: int = 128
    feature_seed: int = 0
    feature_dtype: str = "float64"
    added: KernelSpec | None = None
    added_weight: float = 1.0
    tally: PairTally | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kernel not in ("ntk", "nngp"):
            raise InvalidParameterError(f"kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        if self.architecture is not None:
            named = fully_connected_depth(self.architecture)
            if named is not None:
                if self.depth not in (1, named):  # 1: the default, so not a conflict
                    raise InvalidParameterError(
                        f"architecture {self.architecture!r} has depth {named} but depth="
                        f"{self.depth} was asked too; give one of them"
                    )
                object.__setattr__(self, "depth", named)
                object.__setattr__(self, "architecture", None)
            else:
                if not isinstance(self.architecture, str):  # layers: a tuple, hashable
                    object.__setattr__(self, "architecture", tuple(self.architecture))
                network_layers(self.architecture)  # refuses unknown names, bad layers
        check_positive_int("depth", self.depth)
        if check_nonnegative_float("w_std", self.w_std) == 0:
            raise InvalidParameterError(
                "w_std must be > 0: with zero weights the network ignores its input and its "
                "kernel is constant (no image can be told from another); try w_std=1 or sqrt(2)"
            )
        check_nonnegative_float("b_std", self.b_std)
        check_nonnegative_float("ridge", self.ridge)
        if self.time is not None:
            times = check_times(self.time)
            if times.ndim != 0:
                raise InvalidParameterError(
                    f"time must be one training time (a number >= 0 or inf), got "
                    f"{self.time!r}; fit one estimator per time"
                )
            object.__setattr__(self, "time", float(times))
            if math.isinf(self.time):
                object.__setattr__(self, "time", None)
            elif self.ridge:
                raise InvalidParameterError(
                    f"ridge={self.ridge:g} and time={self.time:g} cannot be combined: the "
                    "time is that of plain gradient descent; drop one of them"
                )
        if self.features is not None:
            self._check_features()
        check_nonnegative_int("shifts", self.shifts)
        if self.shifts and (self.architecture is not None or self.features is not None):
            raise InvalidParameterError(
                f"shifts={self.shifts} averages a fully connected network over shifted "
                "copies of its input (exact where the kernel sees only inner products); a "
                "convolutional kernel pads with zeros, not cyclically, and random features "
                "do not average: drop shifts, or the architecture and features"
            )
        if self.added is not None:
            self._check_added()
        if self.image_shape:
            self.average.check_image_shape(self.image_shape)
        if self.flip and self.image_shape and not self.mirror_symmetric:
            raise InvalidParameterError(
                f"the kernel of {self.architecture} on images of {self.image_shape} is not "
                "mirror symmetric (an AvgPool sees an odd width), so it cannot be averaged "
                "over mirrors; add the mirrored images instead (ntkdemo.preprocess.with_flips)"
            )

    def _check_features(self) -> None:
        """Refuse random features where they cannot serve: a finite time, the one-layer
        formula (exact at 60,000 images), layers without a finite form.

        Raises
        ------
        InvalidParameterError
        """
        check_positive_int("features", self.features)
        check_positive_int("feature_width", self.feature_width)
        check_feature_dtype("feature_dtype", self.feature_dtype)
        if self.time is not None:
            raise InvalidParameterError(
                f"random features are solved at convergence only, got time={self.time:g}; "
                "drop the time or the features"
            )
        if self.architecture is None and is_default_kernel(
            self.kernel, self.depth, self.w_std, self.b_std
        ):
            raise InvalidParameterError(
                "random features approximate deep and convolutional kernels; the one-layer "
                "formula is exact on 60,000 images in minutes: drop the features or give an "
                "architecture (e.g. myrtle5)"
            )
        check_feature_layers(network_layers(self.network))

    def _check_added(self) -> None:
        """Refuse an added kernel that is not random features, or a sum the solvers cannot
        serve; share this spec's tally with it.

        Raises
        ------
        InvalidParameterError
        """
        added = self.added
        if not isinstance(added, KernelSpec) or added.features is None:
            raise InvalidParameterError(
                "added must be a KernelSpec with features (the added network's random "
                f"features, e.g. KernelSpec(architecture='myrtle5', features=2048)), got {added!r}"
            )
        if self.features is not None or self.time is not None:
            raise InvalidParameterError(
                "added features join an exact kernel at convergence: drop features or time"
            )
        if check_nonnegative_float("added_weight", self.added_weight) == 0:
            raise InvalidParameterError(
                "added_weight must be > 0 (with 0 the added kernel is nothing: drop added)"
            )
        if added.tally is not self.tally:
            object.__setattr__(self, "added", replace(added, tally=self.tally))

    def with_added_features(
        self,
        dimension: int,
        architecture: str | None = None,
        weight: float = 1.0,
        *,
        flip: bool = False,
    ) -> KernelSpec:
        """This kernel plus ``weight`` times the kernel of ``dimension`` random features of
        ``architecture`` (default ``"myrtle5"``): the added network has this spec's
        ``kernel`` (NTK or NNGP), ``feature_width``, ``feature_seed`` and
        ``feature_dtype``; with ``flip`` it is averaged over mirrors (each image's features
        the mean of its own and its mirror's: twice their time), as ``flip`` averages this
        spec's kernel.

        Raises
        ------
        InvalidParameterError
            As the constructor, for the added spec or the sum.
        """
        added = KernelSpec(
            kernel=self.kernel,
            architecture=architecture or "myrtle5",
            features=dimension,
            feature_width=self.feature_width,
            feature_seed=self.feature_seed,
            feature_dtype=self.feature_dtype,
            image_shape=self.image_shape,
            flip=flip,
        )
        return replace(self, added=added, added_weight=weight)

    def for_images(self, image_shape: tuple[int, ...]) -> KernelSpec:
        """This spec told the images' shape where its kernel, or its added one, reads
        rows as images (:attr:`sees_images`) and was not told yet."""
        added = self.added.for_images(image_shape) if self.added is not None else None
        shape = image_shape if self.sees_images and not self.image_shape else self.image_shape
        return replace(self, image_shape=tuple(shape), added=added)

    def row_width(self, n_values: int) -> int:
        """Values of each row a solver sees for images of ``n_values`` values: those, then
        the added kernel's feature columns (if any)."""
        return n_values + (self.added.feature_columns if self.added is not None else 0)

    @property
    def network(self) -> str | tuple[Layer, ...]:
        """The architecture, or ``fc-L`` for the fully connected network."""
        return self.architecture if self.architecture is not None else f"fc-{self.depth}"

    @property
    def feature_columns(self) -> int:
        """Columns of the random features of the kernel asked for (0 without features):
        ``features`` for the NNGP, twice that for the NTK."""
        if self.features is None:
            return 0
        return self.features * (2 if self.kernel == "ntk" else 1)

    def feature_map(self, n_features: int) -> RandomFeatures:
        """The random network of the features, for flat rows of ``n_features`` values
        (of ``image_shape``, else one 1 x 1 image of that many channels)."""
        if self.features is None:
            raise InvalidParameterError("this spec has no features: set features=D")
        return RandomFeatures(
            self.network,
            self.image_shape or (1, 1, n_features),
            dimension=self.features,
            width=self.feature_width,
            w_std=self.w_std,
            b_std=self.b_std,
            seed=self.feature_seed,
            dtype=self.feature_dtype,
        )

    @property
    def average(self) -> InputAverage:
        """The copies of each input the network averages over (``flip``, ``shifts``)."""
        return InputAverage(self.shifts, self.flip)

    @property
    def sees_images(self) -> bool:
        """Whether the kernel reads the rows as images (``image_shape`` needed):
        :func:`image_reader` names a parameter."""
        return image_reader(self.architecture, self.flip, self.shifts) is not None

    @property
    def mirror_symmetric(self) -> bool:
        """Whether :math:`K(Fx, Fy) = K(x, y)` for left-right mirrors ``F`` of images of
        ``image_shape`` (:func:`~ntkdemo.kernels.mirror.is_mirror_symmetric`)."""
        return is_mirror_symmetric(self.architecture, self.image_shape)

    @property
    def is_one_layer_formula(self) -> bool:
        """The default kernel at convergence: what the strips, CG and CUDA paths serve."""
        return (
            self.time is None
            and self.architecture is None
            and self.average.terms == 1
            and self.added is None
            and is_default_kernel(self.kernel, self.depth, self.w_std, self.b_std)
        )

    def count_pairs(self, n_rows: int, n_columns: int | None) -> None:
        """Count pairs computed outside :meth:`matrix` (the one-layer formula's streamed
        products; ``n_columns`` None: a Gram matrix's triangle)."""
        if self.tally is not None:
            self.tally.add(n_rows, n_columns)

    def describe(self) -> str:
        """The network in a few words, for the console."""
        network = (
            ", ".join(type(layer).__name__ for layer in self.architecture)
            if isinstance(self.architecture, tuple)
            else self.architecture or f"fc-{self.depth}"
        )
        mirrors = f", averaged over {self.average.describe()}" if self.average.terms > 1 else ""
        approximated = (
            f", approximated by {self.feature_columns} random features (width "
            f"{self.feature_width}{', float32' if self.feature_dtype == 'float32' else ''})"
            if self.features is not None
            else ""
        )
        added = (
            f" + {self.added_weight:g} x the {self.added.describe()}"
            if self.added is not None
            else ""
        )
        return (
            f"{self.kernel.upper()} of {network} (w_std {self.w_std:g}, b_std {self.b_std:g})"
            f"{mirrors}{approximated}{added}"
        )

    def matrix(
        self,
        X_unit: np.ndarray,
        Y_unit: np.ndarray | None = None,
        *,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> np.ndarray:
        """The exact kernel of unit rows ``X_unit`` (against ``Y_unit``, default
        themselves); ``features``, if set, are the solver's approximation of it.

        With an ``added`` kernel the rows carry their features after their values
        (:meth:`row_width`): the exact kernel of the values plus ``added_weight`` times
        the features' inner products.

        A finite time fixes what a unit of time means, so then the kernel is in
        neural-tangents' scale (:func:`ntkdemo.kernels.fc_kernels`). A convolutional
        architecture sees the rows rescaled to ``x.x/d = 1`` as images of
        ``image_shape`` (:func:`ntkdemo.kernels.conv_kernels`). With ``flip`` the
        kernel is averaged over the mirrors of ``Y_unit``. A Gram matrix (no ``Y_unit``)
        that is constant to rounding while its rows differ is refused
        (:func:`~ntkdemo.kernels.in_range.check_kernel_informative`).
        """
        if self.added is not None:
            return self._sum_matrix(X_unit, Y_unit, progress)
        needs = image_reader(self.architecture, self.flip, self.shifts)
        if needs and not self.image_shape:
            raise InvalidParameterError(
                f"{needs} needs the images' shape: pass image_shape=(H, W) or (H, W, C)"
            )
        kernel = kernel_of_unit_rows(
            X_unit,
            Y_unit,
            tally=self.tally,
            kernel=self.kernel,
            depth=self.depth,
            w_std=self.w_std,
            b_std=self.b_std,
            architecture=self.architecture,
            image_shape=self.image_shape,
            reference_scale=self.time is not None,
            average=self.average,
            progress=progress,
        )
        if Y_unit is None:  # a Gram matrix, to be solved: it must tell the images apart
            check_kernel_informative(kernel, X_unit, self.describe())
        return kernel

    def _sum_matrix(
        self,
        X_rows: np.ndarray,
        Y_rows: np.ndarray | None,
        progress: Callable[[Iterable], Iterable] | None,
    ) -> np.ndarray:
        """:meth:`matrix` of rows that carry the added kernel's features: the exact kernel
        of their values plus ``added_weight`` times the features' inner products."""
        assert self.added is not None
        values = X_rows.shape[1] - self.added.feature_columns
        exact = replace(self, added=None)
        Y_values = None if Y_rows is None else Y_rows[:, :values]
        kernel = exact.matrix(X_rows[:, :values], Y_values, progress=progress)
        features = X_rows[:, values:]
        Y_features = features if Y_rows is None else Y_rows[:, values:]
        kernel += self.added_weight * (features @ Y_features.T)
        return kernel
