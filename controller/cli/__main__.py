"""``python -m controller.cli``: the same as the ``ds01ctl`` entry point."""

import sys

from controller.cli.main import main

sys.exit(main())
