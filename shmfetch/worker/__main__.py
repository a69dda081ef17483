"""``python -m shmfetch.worker INDEX``: the worker's entry point (spec as JSON on stdin)."""

import sys

# Before the heavy imports of the worker module (requests, lxml: seconds on a loaded machine): a master
# SIGKILLed while we boot must take us along. main() then checks that the master is still our parent.
from .parentdeath import die_with_parent

die_with_parent()

from .process import main  # noqa: E402

sys.exit(main())
