"""From ansible-runner events to jobtrail records and progress (``digest.py`` sums up failures).

Pure Python with no Ansible import, so it is cheap to import and easy to test. ``job.py``
feeds each event of a run to ``EventTranslator.handle`` and logs what comes back.

Output: each event's ``stdout`` is what ``ansible-playbook`` prints to a terminal for it, line
for line, so records carry that text unchanged (one record per event; multi-line output stays
one record). Warning blocks (``[WARNING]``, ``[DEPRECATION WARNING]`` with their ``Origin:``
snippet) inside an event are split off into a record of their own at WARNING, in place, so
line order is kept. Levels:

* failed, unreachable → ERROR; a failure that ``ignore_errors`` ignores → WARNING (the
  terminal says ``...ignoring``; ERROR is kept for what made the run fail);
* warnings, deprecations, retries → WARNING;
* ok, changed, skipped, headers and the recap → INFO: skipped is INFO (not DEBUG) so that
  ``level=INFO`` shows exactly what a terminal shows;
* ``[ERROR]`` lines Ansible prints outside any task (syntax errors, missing roles) → ERROR.

Results as data (``tables.py`` folds them into the hosts and tasks tables): a host's result
of a task carries ``status`` (ok, changed, failed, skipped, unreachable, ignored) and the
runner's ``started``, ``ended`` and ``duration_s``; the recap record carries ``stats`` (per
host, as PLAY RECAP prints it). Two events print nothing on a terminal, so they get a DEBUG
record of their own (``level=INFO`` still shows exactly the terminal's lines): a host
starting a task (``host_start``, worded as Ansible's ``show_per_host_start`` option prints
it), which is how a running job says which hosts are being acted on now; and a result with
no output (a loop's overall result, or ``display_ok_hosts``/``display_skipped_hosts`` off:
``host_done``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobtrail.jobtypes.ansible.digest import (
    ORIGIN_END,
    WARNING_START,
    Failure,
    failure_digest,
    split_warnings,
)
from jobtrail.secrets import Masker

Scalar = str | int | float | bool
# The events that end one host's run of a task (items of a loop come before their task's).
_RESULTS = frozenset(
    {"runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"}
)
# How ansible-core starts an error printed outside any task: "[ERROR]: …" since 2.19,
# "ERROR! …" before (2.17 is the newest that runs on Python 3.10).
_ERROR_PREFIXES = ("[ERROR]:", "[ERROR]", "ERROR! ")


# -- progress ----------------------------------------------------------------------------------
def estimate_plan(playbook: Any) -> list[int] | None:
    """Tasks per play of a parsed playbook (a guess: roles and includes count as one task)."""
    if not isinstance(playbook, list):
        return None
    plan = []
    for play in playbook:
        if not isinstance(play, dict):
            return None
        tasks = sum(
            _count_tasks(play.get(key)) for key in ("pre_tasks", "tasks", "post_tasks")
        ) + len(play.get("roles") or [])
        if (
            play.get("gather_facts", True) not in (False, "no", "false", "False")
            and "hosts" in play
        ):
            tasks += 1
        plan.append(tasks)
    return plan


def _count_tasks(tasks: Any) -> int:
    if not isinstance(tasks, list):
        return 0
    total = 0
    for task in tasks:
        if isinstance(task, dict) and "block" in task:
            total += sum(_count_tasks(task.get(key)) for key in ("block", "rescue", "always"))
        else:
            total += 1
    return total


@dataclass
class Progress:
    """Monotone progress: plays done plus the share of the current play's tasks started."""

    plan: list[int] | None
    play_index: int = -1
    tasks_started: int = 0
    pct: float = 0.0

    def play_started(self) -> None:
        self.play_index += 1
        self.tasks_started = 0

    def task_started(self) -> float:
        self.tasks_started += 1
        plays = len(self.plan) if self.plan else 0
        index = max(self.play_index, 0)
        expected = self.plan[index] if self.plan and index < plays else 0
        known = expected + 1  # the +1 leaves room for handlers
        started = self.tasks_started
        share = started / known if started < known else 1 - 1 / (started + 2)
        pct = 100 * (index + share) / max(plays, index + 1)
        self.pct = max(self.pct, min(pct, 99.0))
        return self.pct


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One log record to emit: level, text, structured fields."""

    level: int
    text: str
    fields: dict[str, Any]  # scalars, but for the recap's ``stats``


_EVENT_NAMES = {
    "playbook_on_play_start": "play_start",
    "playbook_on_task_start": "task_start",
    "playbook_on_handler_task_start": "handler_start",
    "playbook_on_stats": "recap",
    "playbook_on_no_hosts_matched": "no_hosts_matched",
    "playbook_on_no_hosts_remaining": "no_hosts_remaining",
    "runner_retry": "retry",
    "runner_on_start": "host_start",
    "deprecated": "warning",
    "system_warning": "warning",
}


def event_name(event: str, res: Mapping[str, Any]) -> str:
    """ok, changed, failed, skipped, unreachable, task_start, recap, warning, verbose, …"""
    if event in _EVENT_NAMES:
        return _EVENT_NAMES[event]
    for prefix in ("runner_item_on_", "runner_on_", "playbook_on_"):
        if event.startswith(prefix):
            name = event[len(prefix) :]
            if name == "ok" and res.get("changed"):
                return "changed"
            return name
    return event


def _level_for(name: str, data: Mapping[str, Any]) -> int:
    if name == "failed":
        return logging.WARNING if data.get("ignore_errors") else logging.ERROR
    if name == "unreachable":
        return logging.WARNING if data.get("ignore_unreachable") else logging.ERROR
    if name in ("warning", "retry"):
        return logging.WARNING
    if name == "error":
        return logging.ERROR
    if name in ("debug", "host_start", "host_done"):
        return logging.DEBUG
    return logging.INFO


class EventTranslator:
    """Keeps the state of one run: where it is, what failed, the recap."""

    def __init__(self, mask: Masker, plan: list[int] | None = None, root: str = "") -> None:
        self.mask = mask
        self.root = root.rstrip("/") + "/" if root else ""  # cut from paths in the digest
        self.progress = Progress(plan)
        self.play: str | None = None
        self.task: str | None = None
        self.failures: list[Failure] = []
        self.item_failures: dict[tuple[str | None, str | None], dict[str, Any]] = {}
        self.errors: list[str] = []  # [ERROR] text printed outside any task
        self.stats: dict[str, dict[str, int]] = {}
        self._in_handler = False
        self._verbose_level = logging.INFO
        self._verbose_warning: list[bool] = [False, False]  # in a warning, in its Origin

    def step(self) -> str | None:
        if self.play is None:
            return None
        return self.mask(f"{self.play}: {self.task}" if self.task else self.play)

    def handle(self, event: Mapping[str, Any]) -> list[Entry]:
        kind = str(event.get("event", ""))
        data: Mapping[str, Any] = event.get("event_data") or {}
        raw = data.get("res")
        res: dict[str, Any] = raw if isinstance(raw, dict) else {}
        name = event_name(kind, res)
        self._track(kind, name, data, res)
        stdout = str(event.get("stdout") or "").replace("\r\n", "\n")
        if kind == "verbose":
            return self._verbose(stdout)
        self._verbose_level = logging.INFO
        fields = self._fields(name, data, res)
        level = _level_for(name, data)
        if name == "host_start":
            task, host = fields.get("task", ""), fields.get("host", "")
            what = "RUNNING HANDLER" if self._in_handler else "TASK"
            return [Entry(level, f"[started {what}: {task} on {host}]", fields)]
        entries = []
        for warning, chunk in split_warnings(stdout):
            if name == "ok" and chunk.startswith("changed:"):  # no_log results hide "changed"
                fields["event"] = "changed"
            if warning:
                entries.append(
                    Entry(logging.WARNING, self.mask(chunk), {**fields, "event": "warning"})
                )
            else:
                entries.append(Entry(level, self.mask(chunk), dict(fields)))
        if kind in _RESULTS:
            self._add_result(entries, fields, data, res)
        elif kind == "playbook_on_stats":
            for entry in entries:
                entry.fields["stats"] = {host: dict(row) for host, row in self.stats.items()}
        return entries

    def _add_result(
        self,
        entries: list[Entry],
        fields: dict[str, Scalar],
        data: Mapping[str, Any],
        res: Mapping[str, Any],
    ) -> None:
        """Put the host's result of the task on its (last) output record, or on a DEBUG
        record of its own when the terminal shows nothing for it. An ignored failure that
        changed something says so (``changed``): the recap counts it as changed too."""
        event = str(fields["event"])
        result: dict[str, Scalar] = {"status": "ignored" if fields.get("ignored") else event}
        if res.get("changed") is True and result["status"] == "ignored":
            result["changed"] = True
        for key, name in (("start", "started"), ("end", "ended")):
            value = data.get(key)
            if isinstance(value, str) and value:
                result[name] = value[:-6] + "Z" if value.endswith("+00:00") else value
        duration = data.get("duration")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            result["duration_s"] = round(float(duration), 6)
        for entry in reversed(entries):
            if entry.fields.get("event") != "warning":
                entry.fields.update(result)
                return
        task, host = fields.get("task", ""), fields.get("host", "")
        what = "RUNNING HANDLER" if self._in_handler else "TASK"
        text = f"[finished {what}: {task} on {host}: {result['status']}]"
        done = {**fields, "event": "host_done", **result}
        entries.append(Entry(logging.DEBUG, text, done))

    def _fields(
        self, name: str, data: Mapping[str, Any], res: Mapping[str, Any]
    ) -> dict[str, Scalar]:
        fields: dict[str, Scalar] = {"event": name}
        for key in ("play", "task", "host"):
            value = data.get(key)
            if isinstance(value, str) and value:
                fields[key] = self.mask(value)
        rc = res.get("rc")
        if isinstance(rc, int) and not isinstance(rc, bool):
            fields["rc"] = rc
        if name in ("failed", "unreachable") and (
            data.get("ignore_errors") or data.get("ignore_unreachable")
        ):
            fields["ignored"] = True
        return fields

    def _verbose(self, stdout: str) -> list[Entry]:
        """Lines Ansible prints outside callbacks, one per event: errors before a run, -v output."""
        entries = []
        for line in stdout.split("\n"):
            level = self._verbose_line_level(line)
            if line.strip():
                entries.append(Entry(level, self.mask(line), {"event": "verbose"}))
        return entries

    def _verbose_line_level(self, line: str) -> int:
        in_warning, in_origin = self._verbose_warning
        prefix = next((p for p in _ERROR_PREFIXES if line.startswith(p)), None)
        if prefix is not None:
            self._verbose_level = logging.ERROR  # the rest explains the error
            self.errors.append(line[len(prefix) :].strip())
            return logging.ERROR
        if self._verbose_level == logging.ERROR:
            if line.startswith("Origin:") and self.errors:
                self.errors[-1] += f" ({line[len('Origin:') :].strip()})"
            return logging.ERROR
        if line.startswith(WARNING_START):
            self._verbose_warning = [True, False]
            return logging.WARNING
        if in_warning and not in_origin:
            if line.startswith("Origin:"):
                self._verbose_warning = [True, True]
                return logging.WARNING
            self._verbose_warning = [False, False]
            return logging.INFO
        if in_origin:
            if ORIGIN_END.match(line):
                self._verbose_warning = [False, False]
            return logging.WARNING
        return logging.INFO

    def _track(self, kind: str, name: str, data: Mapping[str, Any], res: dict[str, Any]) -> None:
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play") or data.get("name") or "")
            self.task = None
            self.progress.play_started()
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.task = str(data.get("task") or data.get("name") or "")
            self._in_handler = kind == "playbook_on_handler_task_start"
            self.progress.task_started()
        elif kind == "runner_item_on_failed":
            self.item_failures[(data.get("host"), data.get("task"))] = res
        elif name == "failed" and not data.get("ignore_errors"):
            if res.get("results") and (data.get("host"), data.get("task")) in self.item_failures:
                res = self.item_failures[(data.get("host"), data.get("task"))]
            self.failures.append(
                Failure("failed", data.get("play"), data.get("task"), data.get("host"), res)
            )
        elif name == "unreachable" and not data.get("ignore_unreachable"):
            self.failures.append(
                Failure("unreachable", data.get("play"), data.get("task"), data.get("host"), res)
            )
        elif kind == "playbook_on_stats":
            self._collect_stats(data)

    def _collect_stats(self, data: Mapping[str, Any]) -> None:
        """The recap per host: ok, changed, failed, unreachable, skipped, rescued, ignored."""
        names = {"failures": "failed", "dark": "unreachable"}
        keys = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
        for host in data.get("processed") or {}:  # a host with nothing to count is in the recap
            self.stats.setdefault(self.mask(str(host)), {names.get(k, k): 0 for k in keys})
        for key in keys:
            per_host = data.get(key)
            if isinstance(per_host, dict):
                for host in per_host:
                    self.stats.setdefault(self.mask(str(host)), {names.get(k, k): 0 for k in keys})
                for host, count in per_host.items():
                    self.stats[self.mask(str(host))][names.get(key, key)] = int(count)

    def digest(self, playbook: str, rc: int | None, status: str) -> tuple[str, dict[str, Any]]:
        """The one-line error and the structured failure of a run that did not succeed."""
        return failure_digest(self, playbook, rc, status)
