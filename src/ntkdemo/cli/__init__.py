"""The command line: ``main`` (:mod:`.main`), ``run`` (:mod:`.run`), the theory
subcommands (:mod:`.theory`), and the option types and console they share
(:mod:`.options`)."""

from .main import main

__all__ = ["main"]
