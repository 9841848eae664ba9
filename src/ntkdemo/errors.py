"""Exceptions raised by ntkdemo.

Every error a user can cause is an :class:`NTKDemoError`; the command line turns
it into one line on stderr and exit code 2. Each subclass also derives from the
built-in type a Python user would expect to catch (``ValueError``, ``MemoryError``).
"""


class NTKDemoError(Exception):
    """Base class of the errors a user can cause; the message says how to fix it."""


class InvalidParameterError(NTKDemoError, ValueError):
    """A parameter (size, class id, ridge, depth, time, ...) is out of its valid range."""


class InvalidInputError(NTKDemoError, ValueError):
    """An input array cannot be used: wrong shape, NaN or inf, a zero-norm row."""


class DatasetError(NTKDemoError, ValueError):
    """A dataset cannot be found or read, or lacks what the demo needs."""


class MemoryPlanError(NTKDemoError, MemoryError):
    """The requested problem does not fit in the memory allowed."""
