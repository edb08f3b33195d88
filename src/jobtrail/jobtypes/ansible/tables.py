"""A playbook's results as data: the hosts table (the PLAY RECAP) and the tasks table.

Folded from the job's log records, oldest first, by the log summary's keeper
(``logstore.summary.SummaryKeeper``, one ``PlaybookFold`` per job and table), so both
answer at once on a long log, cover what rotation already deleted, and survive a restart
(``to_json``). The records are the ones ``events.py`` writes (logger ``ansible``):

* ``host_start`` (a host starts a task): a row ``running`` until its result;
* a result (any record with ``status``): the row's status, ``started``, ``ended``,
  ``duration_s`` from the runner; the host's counts as ansible-core's strategy counts them
  (changed is also ok; an ignored failure or unreachable is ok and ignored, and changed too
  if it says ``changed``);
* ``recap``: its ``stats`` replace the counts, so the hosts table is the terminal's
  PLAY RECAP exactly, failed runs included; until then (and for a run stopped before it)
  the counts are the ones folded so far.

Ansible's events do not say that a block's ``rescue`` handled a failure; its recap does.
So a failure is taken as rescued when the same host goes on in the same play, and the recap
corrects that guess: a host has as many ``rescued`` rows as its recap says (the guess is
wrong only for an ``always`` section after a fatal failure, until the recap).

Memory is bounded: past ``MAX_ROWS`` rows the oldest finished ones are dropped (counted in
``dropped``); running rows are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NEEDLE = b'"logger":"ansible"'
COUNTS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
MAX_ROWS = 20_000
# What a result adds to its host's counts, as ansible-core's strategy counts it.
_COUNTED = {
    "ok": ("ok",),
    "changed": ("ok", "changed"),
    "failed": ("failed",),
    "skipped": ("skipped",),
    "unreachable": ("unreachable",),
    "rescued": ("rescued",),
}

Row = dict[str, Any]


class PlaybookTables:
    """The hosts and tasks of one playbook job, folded record by record."""

    def __init__(self, saved: Mapping[str, Any] | None = None, *, rows: bool = True) -> None:
        saved = saved or {}
        self.keep_rows = rows  # False: the hosts table only (no rows kept, saved or shown)
        self.seen = bool(saved.get("seen"))
        self.rows: list[Row] = [dict(row) for row in saved.get("rows", [])]
        self.counts: dict[str, dict[str, int]] = {
            host: dict(row) for host, row in (saved.get("counts") or {}).items()
        }
        recap = saved.get("recap")
        self.recap: dict[str, dict[str, int]] | None = dict(recap) if recap else None
        self.dropped = int(saved.get("dropped", 0))
        self._open: dict[tuple[Any, Any, Any], Row] = {
            _key(row): row for row in self.rows if row["status"] == "running"
        }
        # host -> its latest unignored failure in the current play, until the host goes on
        self._failed: dict[str, Row] = {}
        for host, play, index in saved.get("failed", []):
            kept = index is not None and 0 <= index < len(self.rows)
            row = self.rows[index] if kept else {"play": play, "host": host, "status": "failed"}
            self._failed[host] = row

    # -- folding ------------------------------------------------------------------------------
    def add(self, record: Mapping[str, Any]) -> None:
        if record.get("logger") != "ansible":
            return
        self.seen = True
        event = record.get("event")
        if event == "play_start":
            self._failed.clear()
        elif event == "recap":
            stats = record.get("stats")
            if isinstance(stats, dict):
                self._take_recap(stats)
        elif event == "host_start":
            self._went_on(record)
            row = {
                "play": record.get("play"),
                "task": record.get("task"),
                "host": record.get("host"),
                "status": "running",
                "started": record.get("timestamp"),
                "ended": None,
                "duration_s": None,
            }
            self._append(row)
            self._open[_key(row)] = row
        elif "status" in record and record.get("host") is not None:
            self._result(record)

    def _result(self, record: Mapping[str, Any]) -> None:
        self._went_on(record)
        key = (record.get("play"), record.get("task"), record.get("host"))
        row = self._open.pop(key, None)
        if row is None:  # a result without its start (a saved fold cut short, say)
            row = {"play": key[0], "task": key[1], "host": key[2]}
            self._append(row)
        status = str(record["status"])
        row["status"] = status
        row["started"] = record.get("started") or row.get("started") or record.get("timestamp")
        row["ended"] = record.get("ended") or record.get("timestamp")
        duration = record.get("duration_s")
        row["duration_s"] = duration if isinstance(duration, (int, float)) else None
        host = str(key[2])
        if status == "ignored":
            self._count(
                host, ("ok", "ignored", "changed") if record.get("changed") else ("ok", "ignored")
            )
        else:
            self._count(host, _COUNTED.get(status, ()))
        if status == "failed":
            self._failed[host] = row

    def _went_on(self, record: Mapping[str, Any]) -> None:
        """A host that failed and goes on in the same play was rescued (see the docstring)."""
        host = record.get("host")
        failed = self._failed.get(str(host)) if host is not None else None
        if failed is None or failed["play"] != record.get("play"):
            return
        del self._failed[str(host)]
        failed["status"] = "rescued"
        self._count(str(host), ("rescued",))
        self._count(str(host), ("failed",), -1)

    def _take_recap(self, stats: Mapping[str, Any]) -> None:
        self.recap = {
            str(host): {name: int(row.get(name, 0)) for name in COUNTS}
            for host, row in stats.items()
            if isinstance(row, dict)
        }
        for host, row in self.recap.items():  # as many rescued rows as the recap says
            rescued = [r for r in self.rows if r["host"] == host and r["status"] == "rescued"]
            for extra in rescued[row["rescued"] :]:
                extra["status"] = "failed"
        self._failed.clear()

    def _count(self, host: str, names: tuple[str, ...], by: int = 1) -> None:
        row = self.counts.setdefault(host, dict.fromkeys(COUNTS, 0))
        for name in names:
            row[name] += by

    def _append(self, row: Row) -> None:
        if not self.keep_rows:
            return
        self.rows.append(row)
        if len(self.rows) > MAX_ROWS:  # drop the oldest tenth of finished rows at once
            cut = MAX_ROWS // 10
            kept: list[Row] = []
            for item in self.rows:
                if cut and item["status"] != "running" and item is not row:
                    cut -= 1
                    self.dropped += 1
                    if self._failed.get(str(item["host"])) is item:
                        del self._failed[str(item["host"])]
                else:
                    kept.append(item)
            self.rows = kept

    # -- answers ------------------------------------------------------------------------------
    def hosts(self) -> list[dict[str, Any]] | None:
        """HOSTROWs sorted by host as PLAY RECAP lists them; None if no playbook output."""
        if not self.seen:
            return None
        counts = self.recap if self.recap is not None else self.counts
        return [{"host": host, **counts[host]} for host in sorted(counts)]

    def tasks(self) -> list[Row]:
        return [dict(row) for row in self.rows]

    def failed_hosts(self) -> list[str]:
        return [h["host"] for h in self.hosts() or [] if h["failed"] or h["unreachable"]]

    def to_json(self) -> dict[str, Any]:
        index = {id(row): i for i, row in enumerate(self.rows)}
        return {
            "seen": self.seen,
            "rows": self.rows,
            "counts": self.counts,
            "recap": self.recap,
            "dropped": self.dropped,
            "failed": [[h, row["play"], index.get(id(row))] for h, row in self._failed.items()],
        }


def _key(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return (row.get("play"), row.get("task"), row.get("host"))


class PlaybookFold:
    """``PlaybookTables`` as the summary keeper's ``RecordFold``: ``view`` names the table
    its ``result()`` is (``"hosts"``: the summary's ``hosts``, ``"tasks"``)."""

    needle = NEEDLE

    def __init__(self, view: str, saved: Mapping[str, Any] | None = None) -> None:
        self.view = view
        self.tables = PlaybookTables(saved, rows=view != "hosts")

    def add(self, record: Mapping[str, Any]) -> None:
        self.tables.add(record)

    def to_json(self) -> dict[str, Any]:
        return self.tables.to_json()

    def result(self) -> Any:
        if self.view == "hosts":
            return self.tables.hosts()
        return {"tasks": self.tables.tasks(), "dropped": self.tables.dropped}


def hosts_fold(saved: Mapping[str, Any] | None) -> PlaybookFold:
    """The summary keeper's fold "hosts" (the summary's ``hosts``): no rows kept."""
    return PlaybookFold("hosts", saved)


def tasks_fold(saved: Mapping[str, Any] | None) -> PlaybookFold:
    """The summary keeper's fold "tasks": ``{"tasks": rows, "dropped": n}``."""
    return PlaybookFold("tasks", saved)
