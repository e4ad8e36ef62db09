"""``python -m mlcodec``: the ``mlcodec`` command line."""

import sys

from mlcodec.cli import main

sys.exit(main())
