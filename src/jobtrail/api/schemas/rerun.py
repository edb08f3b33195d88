"""The body of ``POST /api/jobs/{id}/rerun``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RerunJob(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    failed_hosts_only: bool = Field(
        default=False,
        description="A playbook only: `limit` set to the hosts that failed or were unreachable.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Params that replace the job's, key by key; secret params, never stored, "
        "must be sent again.",
    )
