"""Retention: the one way a service deletes rows it no longer needs (ADR 0029).

A service declares, once, which of its tables age out: `runtime.retention.keep(table,
column, period_s, where=...)`. Servicekit declares its own (inbox, replayed dead letters,
sent outbox rows); scheduling its fired timers; notifications its finished webhook
deliveries (their attempts go with them) and messages to people. One background task per
replica (`periodic`, every `LINLI_RETENTION_INTERVAL_S`) purges every rule.

Why this shape:
* **Bounded statements.** Each DELETE removes at most `LINLI_RETENTION_BATCH` rows (5,000)
  picked by the rule's index, so no purge holds many row locks or a long transaction,
  and a run stops after `max_batches` statements per table; the next run goes on.
* **Replicas share the work.** The rows are picked `FOR UPDATE SKIP LOCKED`, so two
  replicas purging at once delete different rows instead of waiting on each other, and a
  row a use case holds is left for the next run.
* **Identifiers come from code**, checked against the identifier pattern; conditions are
  constants written by the service; the period is a bound parameter.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from . import metrics
from .db import quote_ident

log = logging.getLogger(__name__)

DEFAULT_BATCH = 5000
DEFAULT_MAX_BATCHES = 200
"""Statements per table and run: at most a million rows per table between two runs."""


@dataclass(frozen=True)
class Rule:
    """Rows of `table` whose `column` is older than `period_s` (and that match `where`)."""

    table: str
    column: str
    period_s: float
    where: str = ""

    def statement(self) -> str:
        table, column = quote_ident(self.table), quote_ident(self.column)
        extra = f" AND ({self.where})" if self.where else ""
        # ctid = ANY(ARRAY(...)) is a TID scan: the subquery picks the rows by the
        # rule's index and the DELETE touches exactly those, with no join on the table.
        # Identifiers are checked above; the condition is a constant from the service.
        return (
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608
            f"SELECT ctid FROM {table} "
            f"WHERE {column} < now() - make_interval(secs => $1::float8){extra} "
            f"LIMIT $2 FOR UPDATE SKIP LOCKED))"
        )


class Retention:
    """The retention rules of one service and the purge that applies them."""

    def __init__(
        self, *, batch: int = DEFAULT_BATCH, max_batches: int = DEFAULT_MAX_BATCHES
    ) -> None:
        if batch < 1 or max_batches < 1:
            raise ValueError("batch and max_batches must be positive")
        self.batch = batch
        self.max_batches = max_batches
        self.rules: list[Rule] = []

    def keep(self, table: str, column: str, period_s: float, *, where: str = "") -> Rule:
        """Declare that rows of `table` older than `period_s` by `column` are deleted."""
        if period_s <= 0:
            raise ValueError(f"retention period of {table} must be positive")
        rule = Rule(table, column, period_s, where)
        rule.statement()  # refuses unsafe identifiers now, not at the first purge
        if any(r.table == table for r in self.rules):
            raise ValueError(f"{table} already has a retention rule")
        self.rules.append(rule)
        return rule

    async def purge(self, pool: asyncpg.Pool) -> dict[str, int]:
        """Apply every rule once; rows deleted per table."""
        purged = {}
        for rule in self.rules:
            purged[rule.table] = sum(await self.purge_rule(pool, rule))
        return purged

    async def purge_rule(self, pool: asyncpg.Pool, rule: Rule) -> list[int]:
        """Delete `rule`'s expired rows in bounded statements; rows deleted by each."""
        sql = rule.statement()
        counts: list[int] = []
        for _ in range(self.max_batches):
            status = await pool.execute(sql, rule.period_s, self.batch)
            deleted = int(status.split()[-1])
            counts.append(deleted)
            if deleted:
                metrics.RETENTION_PURGED.labels(rule.table).inc(deleted)
            if deleted < self.batch:
                break
            await asyncio.sleep(0)  # let the service's own work run between statements
        if sum(counts):
            log.info("retention purged", extra={"table": rule.table, "rows": sum(counts)})
        return counts
