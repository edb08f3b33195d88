"""``JobService``'s log reads: what the API asks of a job's log, the store's answers behind
the checks every read shares (the job exists, its logs were not expired). A part of the
facade of its own so that ``service.py`` keeps the jobs' life (submit, cancel, the backend's
events) and this the reads; the API still sees one ``JobService``."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import Any

from jobtrail.errors import LogsExpired
from jobtrail.logstore import (
    FieldMatch,
    JobLogStore,
    LinePage,
    LogPage,
    LogStats,
    Record,
    SearchPage,
    Summary,
    SummaryKeeper,
    search_query,
)
from jobtrail.models import Job
from jobtrail.service import playbook
from jobtrail.service.config import ServerConfig


class LogReads:
    """The log reads of ``JobService``, which sets the attributes and defines ``get`` and
    ``peek_on_loop`` (the job, or JobNotFound; the job if it is had on the loop, else None)."""

    config: ServerConfig
    store: JobLogStore
    summaries: SummaryKeeper

    def get(self, job_id: str) -> Job:
        raise NotImplementedError

    def peek(self, job_id: str) -> Job | None:
        raise NotImplementedError

    async def peek_on_loop(self, job_id: str) -> Job | None:
        raise NotImplementedError

    # -- the log reads: the API calls these, never the store --------------------------------
    def check_logs(self, job_id: str) -> Job:
        """The job, if its logs can be read; LogsExpired once retention removed them."""
        return self._readable(self.get(job_id))

    def _readable(self, job: Job) -> Job:
        if job.logs_expired:
            raise LogsExpired(job.job_id, self.config.retention_hours)
        return job

    def log_file(self, job_id: str) -> str:
        return str(self.store.log_path(job_id))

    def recent(self, job_id: str, n: int = 50) -> builtins.list[Record]:
        return self.store.recent(job_id, n)

    # -- the same reads as JSON bytes, for answers that splice them (logstore/raw.py) -------
    def recent_heads(self, job_id: str, n: int = 50) -> builtins.list[bytes]:
        """The JSON of the ``n`` newest records' heads (seq, timestamp, level, logger,
        message), newest first, cut from the stored lines; ``read``'s ``LogPage.lines``
        are its records' stored JSON."""
        return self.store.recent_heads(job_id, n)

    def read(
        self,
        job_id: str,
        *,
        tail: int = 100,
        min_level: str = "DEBUG",
        after: int | None = None,
        since: str | None = None,
        match: Mapping[str, str] | None = None,
        fields: FieldMatch | None = None,
    ) -> LogPage:
        return self.store.read(
            job_id,
            tail=tail,
            min_level=min_level,
            after=after,
            since=since,
            match=match,
            fields=fields,
        )

    async def logs_on_loop(self, job_id: str, tail: int) -> LogPage | None:
        """The newest ``tail`` records, unfiltered, if the job can be had without blocking
        the event loop and they are in memory; None: call ``check_logs`` and ``read``, in a
        thread. Raises as ``check_logs`` does for a job it has."""
        job = await self.peek_on_loop(job_id)
        if job is None:
            return None
        self._readable(job)
        return self.store.tail_at_once(job_id, tail)

    def recent_heads_at_once(self, job_id: str, n: int = 50) -> builtins.list[bytes] | None:
        """``recent_heads`` if they are in memory; None: call it, in a thread."""
        return self.store.recent_heads_at_once(job_id, n)

    def read_lines(self, job_id: str, *, after: int, limit: int = 2000) -> LinePage:
        return self.store.read_lines(job_id, after=after, limit=limit)

    def watch(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (in the store's writer thread) after each append to the job."""
        return self.store.watch(job_id, callback)

    def stats(self, job_id: str) -> LogStats:
        return self.store.stats(job_id)

    # -- search: the text of every kept segment (logstore/search.py) --------------------------
    def search(
        self,
        job_id: str,
        q: str,
        *,
        match: Mapping[str, str] | None = None,
        fields: FieldMatch | None = None,
        **options: Any,
    ) -> SearchPage:
        """Records whose message or traceback holds ``q`` (options: ``regex``,
        ``ignore_case``, ``context``, ``max_matches``, ``min_level``, ``after``, ``since``,
        ``count_all``: see ``search_query``); ValueError says what to fix."""
        query = search_query(q, match=match, fields=fields, **options)
        return self.store.search(job_id, query)

    # -- the log summary --------------------------------------------------------------------
    def summary(self, job_id: str) -> Summary:
        """The job's whole-log summary, kept as its records are written (rotated-away lines
        included); once the job ended its drop count is the job's (what its process lost
        too), as the job's JSON shows it."""
        job = self.check_logs(job_id)
        found = self.summaries.summary(job_id)
        if job.status.terminal:
            found.records_dropped = int(job.extra.get("dropped", 0))
        return found

    # -- a playbook's results as data (service/playbook.py) ---------------------------------
    def hosts(self, job_id: str) -> builtins.list[dict[str, Any]]:
        """Per host what PLAY RECAP prints (the counts so far while the playbook runs)."""
        return playbook.hosts(self.check_logs(job_id), self.summaries)

    def tasks(self, job_id: str, status: str | None = None) -> playbook.TaskRows:
        """One row per task and host, oldest first; ``status="running"``: the hosts being
        acted on now."""
        return playbook.task_rows(self.check_logs(job_id), self.summaries, status)

    def failed_hosts(self, job_id: str) -> builtins.list[str]:
        """The hosts a playbook job failed or could not reach, sorted ([] for another job)."""
        return playbook.failed_hosts(self.get(job_id), self.summaries)
