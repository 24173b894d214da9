"""The one error type ``ds01ctl`` commands raise: a single line naming the problem and the fix.

``main`` prints ``ds01ctl: <message>`` and exits with ``exit_code``; it never shows a traceback
unless ``--debug`` is given.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PENDING = 2  # `plan`: actions are pending


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
