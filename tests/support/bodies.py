"""The answers the models gave before the hot routes spliced stored bytes, to compare with.

``ordered`` turns JSON into nested (key, value) lists, so equality includes key order;
``old_search`` is ``GET /api/jobs/{id}/logs/search`` as the pydantic models built it.
"""

from __future__ import annotations

from typing import Any

from jobtrail.api.schemas.search import search_out
from support.live import Live


def ordered(value: Any) -> Any:
    """JSON as nested (key, value) lists, so equality includes key order."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


SEARCH_ARGS = {"max": "max_matches", "level": "min_level"}  # query name -> service keyword


def old_search(live: Live, job_id: str, **query: Any) -> dict[str, Any]:
    """The search answer as ``SearchOut`` dumps it, from the service's own page."""
    options = {SEARCH_ARGS.get(k, k): v for k, v in query.items()}
    q = options.pop("q")
    page = live.server.search(job_id, q, **options)
    regex, ignore_case = bool(query.get("regex")), bool(query.get("ignore_case"))
    return search_out(job_id, q, regex, ignore_case, page).model_dump(mode="json")
