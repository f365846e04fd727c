"""``python -m physiowave.preprocess NAME --input ... [flags]``: run one data set's preprocessing.

NAME is one of ptbxl, cpsc2018, shaoxing, mimic, epn612, db6 (the same as the scripts in ECG/ and EMG/) or
``folder`` for any folder of WFDB/CSV recordings."""
from __future__ import annotations

import sys

from . import SOURCES, source_class
from .cli import main_for


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip() + "\n\n`python -m physiowave.preprocess NAME --help` lists the flags of one data set.")
        return 0
    if not argv or argv[0] not in SOURCES:
        print(__doc__.strip(), file=sys.stderr)
        print(f"\nerror: expected a data set name, one of: {', '.join(SOURCES)}", file=sys.stderr)
        return 1
    name = argv[0]
    return main_for(source_class(name), argv[1:], prog=f"python -m physiowave.preprocess {name}")


if __name__ == "__main__":
    sys.exit(main())
