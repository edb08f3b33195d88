"""What a rerun of an ended job runs: its params as stored, the overrides sent, and for
``failed_hosts_only`` a playbook's ``limit`` set to the hosts that failed or were unreachable.

A job's record holds its params with secret values masked (they are never written down),
so a rerun of such a job needs them sent again: ``missing_secrets`` names each one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jobtrail.errors import CannotRerun
from jobtrail.models import Job
from jobtrail.secrets import MASK

PLAYBOOK_TYPE = "ansible_playbook"


def rerun_params(
    job: Job, overrides: dict[str, Any], failed_hosts: Iterable[str] | None
) -> dict[str, Any]:
    """The new job's params (checked against the job type later, as any submit's are):
    the old ones, each override replacing its key whole, and ``limit`` for failed hosts."""
    params = {**job.params, **overrides}
    if failed_hosts is not None:
        params["limit"] = ",".join(failed_hosts)
    missing = missing_secrets(params)
    if missing:
        raise CannotRerun(
            f"job {job.job_id!r} had secret params, which are never stored: send "
            f"{', '.join(missing)} in params"
            + (" (the whole value of each top-level key)" if any("." in m for m in missing) else "")
        )
    return params


def check_failed_hosts(job: Job, hosts: list[str]) -> list[str]:
    """``hosts`` if a rerun on them makes sense; CannotRerun saying why not."""
    if job.job_type != PLAYBOOK_TYPE:
        raise CannotRerun(
            f"failed_hosts_only: job {job.job_id!r} is a {job.job_type!r} job, not a playbook "
            f"({PLAYBOOK_TYPE})"
        )
    if not hosts:
        raise CannotRerun(
            f"failed_hosts_only: no host failed or was unreachable in job {job.job_id!r} "
            f"({job.status.value})"
        )
    return hosts


def missing_secrets(params: Any, path: str = "") -> list[str]:
    """Where ``MASK`` stands for a value never stored (``password``, ``extra_vars.token``)."""
    if isinstance(params, dict):
        return [
            found
            for key, value in params.items()
            for found in missing_secrets(value, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(params, list):
        return [
            found
            for i, value in enumerate(params)
            for found in missing_secrets(value, f"{path}[{i}]")
        ]
    return [path] if params == MASK else []
