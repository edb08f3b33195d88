"""Job types for tests/test_isolation.py: what a job sees of itself when it runs isolated."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from jobtrail import job


@job("whoami")
def whoami() -> dict[str, Any]:
    """Who the job runs as, its temporary folder and HOME, and whether it can become root."""
    tmp = Path(tempfile.mkdtemp())  # where a job's own temporary files go
    folder = os.stat(tmp.parent)
    try:
        os.setuid(0)
        back_to_root = True
    except PermissionError:
        back_to_root = False
    child = subprocess.run(["id", "-u"], capture_output=True, text=True, check=True)
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "child_uid": int(child.stdout),
        "tmpdir": os.environ.get("TMPDIR"),
        "home": os.environ.get("HOME"),
        "mkdtemp_parent": str(tmp.parent),
        "folder_mode": folder.st_mode & 0o7777,
        "folder_uid": folder.st_uid,
        "back_to_root": back_to_root,
        "pid": os.getpid(),
        "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "executable": sys.executable,
    }
