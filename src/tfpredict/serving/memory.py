"""One memory budget for what clients make the server hold: request bytes buffered before their call
runs (HTTP/1.1 bodies, HTTP/2 DATA) and answers their clients have not read yet, across every connection
of both front ends.

Each connection has an Account. Its first `allowance` bytes are free (bounded by the connection cap), so
an ordinary small request always gets in however full the budget is; bytes past that are charged to the
budget. A request that would overrun it is refused (503 / RESOURCE_EXHAUSTED) at once, and when unread
answers overrun it, the connections holding the most unread bytes are dropped (`shed_slow_readers`).
Everything runs on the server's one event loop: no locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

DEFAULT_BUDGET_BYTES = 192 * 1024 * 1024
DEFAULT_ALLOWANCE_BYTES = 64 * 1024


class MemoryBudget:
    """Bytes held for clients, and what was refused or dropped because of the limit (for metrics/logs)."""

    def __init__(self, limit_bytes: int = DEFAULT_BUDGET_BYTES, allowance: int = DEFAULT_ALLOWANCE_BYTES):
        self.limit = limit_bytes if limit_bytes > 0 else 1 << 62  # 0: no budget
        self.allowance = allowance
        self.used = 0
        self.refused = 0  # requests refused because they would overrun the budget
        self.dropped = 0  # connections closed because their unread answers overran it

    def account(self) -> Account:
        return Account(self)

    @property
    def over(self) -> bool:
        return self.used > self.limit


class Account:
    """One connection's bytes: `request` (buffered request data, refusable) plus `backlog` (what cannot be
    refused: answers the client has not read, an HTTP/2 frame not yet complete)."""

    __slots__ = ("budget", "request", "backlog", "charged")

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.request = 0
        self.backlog = 0
        self.charged = 0  # what this account adds to budget.used

    def _recharge(self) -> int:
        """Charge the budget for what is held now; the change in charge."""
        over = self.request + self.backlog - self.budget.allowance
        charged = over if over > 0 else 0
        delta = charged - self.charged
        self.budget.used += delta
        self.charged = charged
        return delta

    def grow_request(self, n: int) -> bool:
        """Hold `n` more request bytes; False (nothing held) when they would overrun the budget."""
        request = self.request + n
        if not self.charged and request + self.backlog <= self.budget.allowance:
            self.request = request  # within the free allowance before and after: the budget is not touched
            return True
        self.request = request
        over = request + self.backlog - self.budget.allowance
        charged = over if over > 0 else 0
        if charged > self.charged and self.budget.used + charged - self.charged > self.budget.limit:
            self.request -= n
            self.budget.refused += 1
            return False
        self._recharge()
        return True

    def shrink_request(self, n: int) -> None:
        request = self.request - n
        self.request = request if request > 0 else 0
        if self.charged:  # uncharged, it was within the allowance, and holds less now
            self._recharge()

    def set_backlog(self, n: int) -> None:
        """Bytes the connection holds that no refusal can free: a transport's write buffer, answers waiting
        for flow-control window, a partly received frame."""
        self.backlog = n
        self._recharge()

    def close(self) -> None:
        self.request = self.backlog = 0
        self._recharge()


class Reader(Protocol):
    """A connection as the budget sees it."""

    account: Account

    def backlog_bytes(self) -> int: ...

    def drop(self) -> None: ...


def shed_slow_readers(budget: MemoryBudget, connections: Iterable[Reader]) -> int:
    """Recount every connection's backlog; while the budget is overrun, drop the connection with the most
    (a client that does not read its answers is the one holding the memory). Returns how many dropped."""
    readers = list(connections)
    for c in readers:
        c.account.set_backlog(c.backlog_bytes())
    if not budget.over:
        return 0
    dropped = 0
    for c in sorted(readers, key=lambda c: c.account.backlog, reverse=True):
        if not budget.over or c.account.backlog <= budget.allowance:
            break
        c.drop()
        c.account.close()
        dropped += 1
    budget.dropped += dropped
    return dropped


__all__ = ["DEFAULT_BUDGET_BYTES", "Account", "MemoryBudget", "shed_slow_readers"]
