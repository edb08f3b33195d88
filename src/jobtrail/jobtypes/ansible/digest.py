"""What a failed playbook run is reduced to: a one-line error and a structured ``failure``.

``EventTranslator`` (``events.py``) collects the run's failures, the ``[ERROR]`` text
printed outside any task and the recap; ``failure_digest`` turns them into::

    Task "X" failed on host: why (rc=N) [and 2 more failures]
    Task "X" failed on web1, web3 (2 hosts): why (rc=N)
    Syntax error in playbook site.yml: … (rc=4)
    Playbook site.yml failed: ansible-playbook ended with status timeout (rc=None)

The warning blocks Ansible prints (``split_warnings``) are cut here too, so the terminal's
text is read in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# A task's msg that says nothing by itself: its stderr is the better reason.
GENERIC_MESSAGES = frozenset(
    {
        "",
        "non-zero return code",
        "MODULE FAILURE",
        "One or more items failed",
        "All items completed",
    }
)
WARNING_START = ("[WARNING]", "[DEPRECATION WARNING]")
ORIGIN_END = re.compile(r"^\s*\^ column \d+\s*$|^\(source not shown")


@dataclass
class Failure:
    kind: str  # failed | unreachable
    play: str | None
    task: str | None
    host: str | None
    res: dict[str, Any]


class Run(Protocol):
    """What the digest needs from a translated run (``EventTranslator`` is one)."""

    @property
    def mask(self) -> Callable[[str], str]: ...
    @property
    def root(self) -> str: ...  # the private data dir, cut from paths in messages
    @property
    def failures(self) -> list[Failure]: ...
    @property
    def errors(self) -> list[str]: ...
    @property
    def stats(self) -> dict[str, dict[str, int]]: ...


def split_warnings(text: str) -> list[tuple[bool, str]]:
    """The text cut into (is_warning, chunk) pieces in order; blank edges trimmed."""
    pieces: list[tuple[bool, list[str]]] = []
    in_warning = in_origin = False
    for line in text.split("\n"):
        if line.startswith(WARNING_START):
            in_warning, in_origin = True, False
        elif in_warning and not in_origin:
            if line.startswith("Origin:"):
                in_origin = True
            else:
                in_warning = False
        if not pieces or pieces[-1][0] != in_warning:
            pieces.append((in_warning, []))
        pieces[-1][1].append(line)
        if in_origin and ORIGIN_END.match(line):
            in_warning = in_origin = False
    result = []
    for warning, lines in pieces:
        chunk = "\n".join(lines).strip("\n")
        if chunk.strip():
            result.append((warning, chunk))
    return result


def failure_digest(
    run: Run, playbook: str, rc: int | None, status: str
) -> tuple[str, dict[str, Any]]:
    """The one-line error and the structured failure of a run that did not succeed."""
    if run.failures:
        return _task_digest(run, playbook, rc)
    if run.errors:
        message = _oneline(run.errors[0], keep_lines=1).replace(run.root or "\0", "")
        what = "Syntax error in playbook" if rc == 4 else "Playbook"
        verb = "" if rc == 4 else " could not run"
        error = f"{what} {playbook}{verb}: {message} (rc={rc})"
        failure: dict[str, Any] = {
            "kind": "syntax_error" if rc == 4 else "error",
            "playbook": playbook,
            "message": message,
            "rc": rc,
        }
        return run.mask(error), _mask_dict(run.mask, failure)
    message = f"ansible-playbook ended with status {status}"
    error = f"Playbook {playbook} failed: {message} (rc={rc})"
    return run.mask(error), {"kind": "error", "playbook": playbook, "message": message, "rc": rc}


def _task_digest(run: Run, playbook: str, rc: int | None) -> tuple[str, dict[str, Any]]:
    # A failure a rescue block handled leaves the host's failed count at 0: prefer real ones.
    fatal = [
        f
        for f in run.failures
        if run.stats.get(run.mask(str(f.host)), {}).get(
            "failed" if f.kind == "failed" else "unreachable"
        )
    ]
    first = (fatal or run.failures)[0]
    res = first.res
    msg = _oneline(res.get("msg") or "")
    stderr_raw = res.get("stderr") or res.get("module_stderr") or ""
    stderr = _oneline(stderr_raw)
    task_rc = res.get("rc") if isinstance(res.get("rc"), int) else None
    if msg in GENERIC_MESSAGES and stderr:
        reason = stderr
    elif msg and msg not in GENERIC_MESSAGES:
        reason = f"{msg}: {stderr}" if stderr and stderr not in msg else msg
    elif res.get("censored"):
        reason = _oneline(res["censored"])
    else:
        reason = msg or _oneline(res.get("stdout") or "") or "no error message"
    where = (first.kind, first.play, first.task)
    alike = [f for f in fatal or run.failures if (f.kind, f.play, f.task) == where]
    on = _named_hosts(sorted({str(f.host) for f in alike}))
    if first.kind == "unreachable":
        error = f'Host {on} unreachable in task "{first.task}": {reason}'
    else:
        error = f'Task "{first.task}" failed on {on}: {reason}'
    if task_rc is not None:
        error += f" (rc={task_rc})"
    others = len(fatal or run.failures) - len(alike)
    if others > 0:
        error += f" [and {others} more failure{'s' if others > 1 else ''}]"
    failure: dict[str, Any] = {
        "kind": "unreachable" if first.kind == "unreachable" else "task_failed",
        "playbook": playbook,
        "play": first.play,
        "task": first.task,
        "host": first.host,
        "hosts": failed_hosts(run),
        "message": reason,
        "rc": task_rc,
        "stderr": str(stderr_raw) or None,
        "ansible_rc": rc,
    }
    masked = _mask_dict(run.mask, failure)
    masked["hosts"] = [run.mask(host) for host in failure["hosts"]]
    return run.mask(error), masked


def failed_hosts(run: Run) -> list[str]:
    """Every host that failed or was unreachable, sorted: from the recap once there is one
    (a failure a rescue handled is not counted there), else from the failures seen."""
    if run.stats:
        return sorted(h for h, row in run.stats.items() if row["failed"] or row["unreachable"])
    return sorted({str(f.host) for f in run.failures if f.host is not None})


def _named_hosts(hosts: list[str], shown: int = 5) -> str:
    """``web1``, ``web1, web3 (2 hosts)``, ``web1, …, web5 and 7 more (12 hosts)``."""
    if len(hosts) == 1:
        return hosts[0]
    names = ", ".join(hosts[:shown])
    more = f" and {len(hosts) - shown} more" if len(hosts) > shown else ""
    return f"{names}{more} ({len(hosts)} hosts)"


def _oneline(text: Any, keep_lines: int = 3, limit: int = 300) -> str:
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    joined = " | ".join([line for line in lines if line][-keep_lines:])
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def _mask_dict(mask: Callable[[str], str], values: dict[str, Any]) -> dict[str, Any]:
    return {k: mask(v) if isinstance(v, str) else v for k, v in values.items()}
