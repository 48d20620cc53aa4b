"""How a background loop reports a pass that failed: the first failure of a run with its
traceback, then a line a minute while the failures go on, then one line when a pass works
again. An outage of the database or Redis otherwise wrote a traceback per loop per
interval (every second or two, from every worker) for as long as it lasted.
"""

from __future__ import annotations

import logging
import time

# While passes keep failing, one line this often.
REPEAT_SECONDS = 60.0


class FailureLog:
    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.log = logger
        self.what = what
        self.failures = 0
        self._last_logged = 0.0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1:
            self.log.exception("%s failed", self.what)
        elif now - self._last_logged >= REPEAT_SECONDS:
            self.log.warning("%s failed %d times in a row: %s", self.what, self.failures, exc)
        else:
            return
        self._last_logged = now

    def worked(self) -> None:
        if self.failures:
            self.log.info("%s works again after %d failed", self.what, self.failures)
            self.failures = 0
