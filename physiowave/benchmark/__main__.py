"""``python -m physiowave.benchmark``: see :mod:`physiowave.benchmark.cli`."""
import sys

from .cli import main

sys.exit(main())
