"""ds01ctl: the command line (``controller.cli.main:main``); see docs/cli.md."""
