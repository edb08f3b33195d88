"""``jobtrail logs ID --grep TEXT``: the server searches the whole kept log; this prints the
matches as ``grep -C N`` does.

Each match comes with up to N records before and after it from the unfiltered log. Groups
that touch or overlap are printed as one, each record once (a match inside another's context
is still shown as a match: bold on a terminal), and ``--`` separates groups that do not touch,
as grep does when given -C (also -C 0). The last line counts the matches.
"""

from __future__ import annotations

from jobtrail.cli.exits import CLIError
from jobtrail.cli.output import Display
from jobtrail.client import SearchResult

SEPARATOR = "--"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 'es'}"


def match_lines(result: SearchResult, shown: Display) -> list[str]:
    """The matches with their context, grouped, then the count line."""
    matched = {match.record.seq for match in result.matches}
    lines: list[str] = []
    last: int | None = None  # the seq of the last record printed
    for match in result.matches:
        group = [*match.before, match.record, *match.after]
        new = [record for record in group if last is None or record.seq > last]
        if not new:
            continue
        if last is not None and new[0].seq > last + 1:
            lines.append(SEPARATOR)
        lines += [shown.record(record.raw, match=record.seq in matched) for record in new]
        last = new[-1].seq
    lines.append(count_line(result))
    return lines


def count_line(result: SearchResult) -> str:
    """How many matched, how many are shown, and how to see the rest."""
    shown, total = len(result.matches), result.total_matches
    if total == 0:
        line = f"no match for {result.q!r}"
    elif shown == total:
        line = _plural(total, "match")
    else:
        line = f"{shown:,} of {_plural(total, 'match')} shown"
        if result.more and result.next_after is not None:
            line += f" (the next: --after {result.next_after}, or a larger --max)"
    if result.truncated_before and result.truncated_before > 1:
        line += f"; records before seq {result.truncated_before} were removed by log rotation"
    return line


def parse_fields(pairs: list[str] | None) -> dict[str, str]:
    """``--field KEY:VALUE`` options as the client's ``fields`` (the value stays text: the
    server compares it with the JSON text of the field's value)."""
    fields: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise CLIError(f"--field takes KEY:VALUE (such as attempt:3); got {pair!r}")
        fields[key] = value
    return fields
