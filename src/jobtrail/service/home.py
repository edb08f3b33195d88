"""A server's home: the private directory it alone uses, whichever backend runs its jobs.

Opening it (``open_home``) imports the job types, creates the directory private, takes the
lock in ``server.lock`` (a second server on the same home is refused, and told which one
holds it) and names the mark every process of this server carries in its environment, so a
restarted server can find what a killed one left running.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import TextIO

from jobtrail.registry import import_job_modules
from jobtrail.service.config import ServerConfig
from jobtrail.worker.runtime import PLAYBOOKS_ENV

LOCK_FILE = "server.lock"


def home_mark(home: Path) -> str:
    """The mark every process of a server on this home carries in its environment."""
    return "jt-" + hashlib.sha256(str(home.expanduser().resolve()).encode()).hexdigest()[:16]


class HomeInUse(RuntimeError):
    """Another jobtrail server already uses this home; the message names it (pid, URL)
    from what it wrote into ``server.lock``."""

    def __init__(self, home: Path, holder: str) -> None:
        try:
            found = json.loads(holder)
        except ValueError:
            found = {}
        about = [f"pid {found['pid']}"] if isinstance(found, dict) and found.get("pid") else []
        if isinstance(found, dict) and found.get("url"):
            about.append(str(found["url"]))
        named = f" ({', '.join(about)})" if about else ""
        super().__init__(f"home {home} is in use by another jobtrail server{named}")
        self.home = home


class Home:
    """An open, locked home; ``close`` releases it for the next server."""

    def __init__(self, path: Path, lock_file: TextIO) -> None:
        self.path = path
        self.mark = home_mark(path)
        self._lock_file = lock_file
        self.publish_address(None)

    def publish_address(self, url: str | None) -> None:
        """Write this server's pid and URL into the lock it holds, so a second server on
        the same home can say which one is in the way."""
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
        self._lock_file.flush()

    def close(self) -> None:
        self._lock_file.close()


def open_home(config: ServerConfig) -> Home:
    """The job types imported, then ``config.home`` created private and locked to this
    server; HomeInUse if another server holds it."""
    # job types read it in the server (param checks) and in workers, which inherit it
    if config.playbooks is not None:
        os.environ[PLAYBOOKS_ENV] = str(config.playbooks.expanduser().resolve())
    else:
        os.environ.pop(PLAYBOOKS_ENV, None)
    import_job_modules(config.job_modules)
    path = config.home.expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # a lock file from an older version may be 0644
    lock_file = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_file.read()
        lock_file.close()
        raise HomeInUse(path, holder) from None
    return Home(path, lock_file)
