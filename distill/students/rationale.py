"""Evidence rationales for windows ranked by a teacher that scores but does not reason.

A listwise student learns its reasoning mode from the teacher's ``<think>`` text. A cross-encoder
or TREC teacher has none, so the student would have no reasoning mode to learn. A rationale
fills that gap with what *can* be said truthfully about such a ranking: which of the query's
content words each passage contains, in the teacher's order. It is labelled as such in the
samples' provenance (``reasoning_source: "evidence-rationale"``) and is never presented as the
teacher's own thinking; labels from a reasoning teacher keep their reasoning untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Function words that carry no evidence: a short English list is enough for an explanation.
_FUNCTION_WORDS = """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my no nor
    not now of off on once only or other our out over own same she should so some such than that the
    their them then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your"""
_STOPWORDS = frozenset(_FUNCTION_WORDS.split())
_WORD = re.compile(r"[a-z0-9][a-z0-9\-]+")


def content_words(text: str) -> list[str]:
    """Lower-cased words of three or more characters that are not function words, first use order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if len(word) >= 3 and word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def _matches(query_words: Sequence[str], passage: str) -> list[str]:
    words = set(content_words(passage))
    stems = {w[:5] for w in words}
    return [q for q in query_words if q in words or q[:5] in stems]


def evidence_rationale(query: str, passages: Sequence[str], order: Sequence[int], head: int = 3) -> str:
    """A short explanation of `order` (0-based positions into `passages`, best first).

    Names the query's content words, what the top `head` passages share with them, and which
    passages share none; identifiers are the prompt's ``[1]..[n]`` (input positions + 1).
    """
    if sorted(order) != list(range(len(passages))):
        raise ValueError("order must be a permutation of the passages' positions")
    query_words = content_words(query)[:8]
    if not query_words:
        return "The query has no content words to match; the order follows the passages' overall relevance."
    lines = [f"Key terms: {', '.join(query_words)}."]
    for rank, position in enumerate(order[:head]):
        shared = _matches(query_words, passages[position])
        evidence = (
            f"covers {', '.join(shared[:4])}" if shared else "matches the topic without the exact terms"
        )
        lead = "Most relevant" if rank == 0 else "Next"
        lines.append(f"{lead}: [{position + 1}] {evidence}.")
    unrelated = [p + 1 for p in order[head:] if not _matches(query_words, passages[p])]
    if unrelated:
        names = ", ".join(f"[{p}]" for p in unrelated)
        verb = "shares no key terms and goes" if len(unrelated) == 1 else "share no key terms and go"
        lines.append(f"{names} {verb} last.")
    return " ".join(lines)
