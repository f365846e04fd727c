"""``python -m physiowave ...`` is the ``physiowave`` command."""
import sys

from .cli import main

sys.exit(main())
