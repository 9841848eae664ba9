"""``python -m ntkdemo`` runs the command line (see :mod:`ntkdemo.supervisor`)."""

import sys

from .supervisor import main

sys.exit(main())
