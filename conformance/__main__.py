"""`python -m conformance`: the same as `uffd-uabi conform`, for machines
(a QEMU guest, a CI runner) that have the source tree but not the script."""

import sys

from tools.cli import main

sys.exit(main(["conform", *sys.argv[1:]]))
