"""compare_capture's ``--baseline-src`` and ``--variants``: another checkout's jobtrail as a
variant of the same run, and a subset of the variants."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


@contextlib.contextmanager
def pythonpath(src: str | None) -> Iterator[None]:
    """``src`` first on the PYTHONPATH of what starts meanwhile (a baseline's server)."""
    if src is None:
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, before]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def source_tree(src: str) -> str:
    """``src`` resolved, refused unless it holds the jobtrail package."""
    path = Path(src).resolve()
    if not (path / "jobtrail" / "__init__.py").exists():
        raise SystemExit(f"--baseline-src {src}: no jobtrail package there")
    return str(path)


def chosen(
    variants: Sequence[str], wanted: str, short: Mapping[str, str], always: str
) -> list[str]:
    """``variants`` cut to those ``wanted`` names (comma separated, full or ``short``)."""
    names = {short.get(v.strip(), v.strip()) for v in wanted.split(",") if v.strip()}
    unknown = names - set(variants)
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(sorted(unknown))}")
    return [v for v in variants if v in names or v == always]
