"""``python -m graphscope``: the same command line as ``graphscope``."""

import sys

from graphscope.cli import main

sys.exit(main())
