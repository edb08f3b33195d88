"""What a job type declares it needs in ``--sandbox``: host paths to read, and to write.

::

    @job("deploy", sandbox_paths=SandboxPaths(read=("/srv/config",), write=("/srv/app",)))

The sandbox shows a read-only system with its own /tmp and the home hidden; a declared path
is bound into it at the same place, read-only or writable. Local mode binds the union of
every registered type's paths into each pool worker (it runs jobs of every type in-process,
as USER, and can change no mount between them); distributed mode binds each job's own type's
paths in its mount namespace. Outside the sandbox a declaration changes nothing.

Checked twice: its form when the type is registered (``@job`` raises ValueError), and at
start, with ``--sandbox`` (``check_declared``, then ``first_unreachable`` as USER): each
refusal is one line that names the job type and the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# The sandbox's own: a declared path may not cover them, nor lie in the kernel's folders
OWN = ("/tmp", "/dev/shm")
KERNEL = ("/proc", "/dev", "/sys")


@dataclass(frozen=True)
class SandboxPaths:
    """``read`` bound read-only, ``write`` writable: absolute host paths (no ``~``: the
    sandbox runs as another user, whose home is not the author's)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for kind in ("read", "write"):
            paths = getattr(self, kind)
            if not isinstance(paths, str):  # a str is refused by check(), not split up
                paths = tuple(os.path.normpath(p) if isinstance(p, str) else p for p in paths)
                object.__setattr__(self, kind, tuple(dict.fromkeys(paths)))

    def check(self, job_type: str) -> None:
        """ValueError, naming ``job_type`` and the path, unless each is an absolute path."""
        for kind in ("read", "write"):
            paths = getattr(self, kind)
            if isinstance(paths, str):  # ("/srv/x") without its comma
                raise ValueError(
                    f"job {job_type!r}: sandbox_paths {kind} must be a tuple of paths, "
                    f"not the string {paths!r}"
                )
            for path in paths:
                if not isinstance(path, str) or not path.startswith("/") or "~" in path:
                    raise ValueError(
                        f"job {job_type!r}: sandbox_paths {kind} {path!r} is not an absolute "
                        "path without ~"
                    )

    def __bool__(self) -> bool:
        return bool(self.read or self.write)

    def binds(self) -> list[tuple[str, bool]]:
        """(path, writable), outer paths first so that an inner one's bind lands on top; a
        path both read and written is writable."""
        both = {**{path: False for path in self.read}, **{path: True for path in self.write}}
        return sorted(both.items(), key=lambda item: (item[0].count("/"), item[0]))

    def to_json(self) -> dict[str, list[str]]:
        return {"read": list(self.read), "write": list(self.write)}


def union(paths: Iterable[SandboxPaths]) -> SandboxPaths:
    """What a pool worker binds: every type's paths (a path one type writes is writable)."""
    read: list[str] = []
    write: list[str] = []
    for declared in paths:
        read += declared.read
        write += declared.write
    return SandboxPaths(tuple(read), tuple(write))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_declared(declared: Mapping[str, SandboxPaths], hidden: Iterable[str]) -> str | None:
    """The first declared path the sandbox cannot bind, as one line (None: all can be): one
    overlapping a ``hidden`` folder (the home), covering the sandbox's own /tmp or /dev/shm,
    in the kernel's folders, or missing. Symlinks resolved: a link into the home is the home."""
    hidden_paths = [Path(os.path.realpath(h)) for h in hidden]
    for job_type, paths in sorted(declared.items()):
        for path, _ in paths.binds():
            real = Path(os.path.realpath(path))
            where = f"job type {job_type!r}: sandbox path {path}"
            for folder in hidden_paths:
                if _inside(real, folder) or _inside(folder, real):
                    return f"{where} overlaps {folder}, which the sandbox hides"
            for own in map(Path, OWN):
                if _inside(own, real):
                    return f"{where} would cover the sandbox's own {own}"
            for kernel in map(Path, KERNEL):
                if _inside(real, kernel):
                    return f"{where} lies in {kernel}, which the sandbox makes itself"
            if not real.exists():
                return f"{where} does not exist"
    return None


def first_unreachable(declared: Mapping[str, SandboxPaths]) -> dict[str, str | None] | None:
    """Run as USER (in the sandbox, in local mode): the first declared path it cannot read,
    or write when declared writable, with the first folder on the way it cannot enter."""
    for job_type, paths in sorted(declared.items()):
        for path, writable in paths.binds():
            real = os.path.realpath(path)
            last = os.R_OK | (os.W_OK if writable else 0) | (os.X_OK if os.path.isdir(real) else 0)
            if os.access(real, last):
                continue
            parts = real.split("/")
            blocked = next(
                (
                    "/".join(parts[:i])
                    for i in range(2, len(parts))
                    if not os.access("/".join(parts[:i]), os.X_OK)
                ),
                real,
            )
            kind = "write" if writable else "read"
            return {"job_type": job_type, "path": path, "kind": kind, "blocked": blocked}
    return None


def describe_unreachable(found: Mapping[str, str | None], who: str, user: str | None) -> str:
    """One line: which type's path ``who`` cannot reach, and what to open up."""
    path, blocked = str(found["path"]), str(found["blocked"])
    line = f"job type {found['job_type']!r}: {who} cannot {found['kind']} sandbox path {path}"
    if blocked != os.path.realpath(path):
        return f"{line}: open up {blocked} (chmod o+x {blocked})"
    if found["kind"] == "write":
        return f"{line}: make it writable for it" + (f" (chown {user} {blocked})" if user else "")
    mode = "o+rx" if Path(blocked).is_dir() else "o+r"
    return f"{line}: open up {blocked} (chmod {mode} {blocked})"
