"""Teacher samples: the reasoning-ranking data the teacher is trained on, ours and ReasonRank's.

A sample is one query's candidate list (``initial_list``), the labeller's reranked list
(``final_list``) with its reasoning, the relevant passages (``relevant_docids``) and the
self-consistency score (``ndcg_self``) — the fields of ReasonRank's released 13k set
(``training_data_all.jsonl``), so a model can be trained on either without conversion.

Two layouts are read:

- **rrdistill JSONL** (what ``rrdistill synthesize`` writes): each line is a RankLLM request
  (``query`` + ``candidates`` with passage text, in initial order) plus the fields above and
  ``provenance``; self-contained.
- **ReasonRank's release**: ``training_data_all.jsonl`` (``dataset``, ``qid``, ``initial_list``,
  ``final_list``, ``reasoning``, ``relevant_docids``) with the texts beside it in
  ``id_query/<dataset>.json`` (qid → query) and ``id_doc/<dataset>.json`` (docid → passage).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrdistill.io import LineError, ReadReport, iter_jsonl, parse_request, request_to_json
from rrdistill.types import Candidate, Passage, Query, Request


@dataclass
class TeacherSample:
    request: Request
    """The query and its candidate list in initial order (``initial_list``)."""
    final_list: list[str]
    reasoning: str | None
    relevant_docids: list[str]
    ndcg_self: float | None = None
    dataset: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def qid(self) -> str:
        return self.request.qid

    @property
    def initial_list(self) -> list[str]:
        return self.request.docids

    @property
    def final_order(self) -> list[int]:
        """``final_list`` as 0-based positions into ``initial_list``."""
        position = {d: i for i, d in enumerate(self.initial_list)}
        return [position[d] for d in self.final_list]

    @property
    def relevant_positions(self) -> list[int]:
        position = {d: i for i, d in enumerate(self.initial_list)}
        return sorted(position[d] for d in self.relevant_docids)

    def validate(self) -> None:
        """Raise ValueError unless final_list reorders initial_list and the positives are in it."""
        initial = self.initial_list
        if sorted(self.final_list) != sorted(initial):
            raise ValueError("final_list must be a permutation of initial_list")
        missing = [d for d in self.relevant_docids if d not in set(initial)]
        if missing:
            raise ValueError(f"relevant_docids {missing[:3]} are not in initial_list")

    def to_json(self) -> dict[str, Any]:
        record = request_to_json(Request(self.request.query, self.request.candidates))
        record.update(
            {
                "dataset": self.dataset,
                "qid": self.qid,
                "initial_list": self.initial_list,
                "final_list": self.final_list,
                "reasoning": self.reasoning,
                "relevant_docids": self.relevant_docids,
                "ndcg_self": self.ndcg_self,
                "provenance": self.provenance,
            }
        )
        return record


_SAMPLE_FIELDS = ("dataset", "qid", "initial_list", "final_list", "reasoning", "relevant_docids")


def _string_list(obj: dict[str, Any], key: str) -> list[str]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise ValueError(f"field {key!r} must be a list of ids")
    return [str(v) for v in value]


def _reasoning(obj: dict[str, Any]) -> str | None:
    value = obj.get("reasoning")
    if value is not None and not isinstance(value, str):
        raise ValueError("field 'reasoning' must be a string or null")
    return value


def parse_sample(obj: dict[str, Any]) -> TeacherSample:
    """A sample from one rrdistill JSONL object (request + sample fields)."""
    request = parse_request(obj)
    initial = _string_list(obj, "initial_list") if "initial_list" in obj else request.docids
    if initial != request.docids:
        raise ValueError("initial_list differs from the order of 'candidates'")
    ndcg = obj.get("ndcg_self")
    if ndcg is not None and (isinstance(ndcg, bool) or not isinstance(ndcg, int | float)):
        raise ValueError("field 'ndcg_self' must be a number or null")
    sample = TeacherSample(
        request=Request(request.query, request.candidates),
        final_list=_string_list(obj, "final_list"),
        reasoning=_reasoning(obj),
        relevant_docids=_string_list(obj, "relevant_docids"),
        ndcg_self=None if ndcg is None else float(ndcg),
        dataset=str(obj.get("dataset") or ""),
        provenance=dict(obj.get("provenance") or {}),
    )
    sample.validate()
    return sample


class ReasonRankTexts:
    """``id_query/`` and ``id_doc/`` of ReasonRank's release, loaded one dataset at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._queries: dict[str, dict[str, str]] = {}
        self._docs: dict[str, dict[str, str]] = {}

    def _load(self, kind: str, dataset: str, cache: dict[str, dict[str, str]]) -> dict[str, str]:
        if dataset not in cache:
            path = self.root / kind / f"{dataset}.json"
            if not path.exists():
                raise ValueError(f"no {kind}/{dataset}.json beside the samples (dataset {dataset!r})")
            try:
                mapping = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise LineError(path, exc.lineno, f"invalid JSON ({exc.msg})") from None
            if not isinstance(mapping, dict):
                raise ValueError(f"{path}: expected a JSON object id → text")
            cache[dataset] = {str(k): v for k, v in mapping.items()}
        return cache[dataset]

    def query(self, dataset: str, qid: str) -> str:
        text = self._load("id_query", dataset, self._queries).get(qid)
        if not isinstance(text, str):
            raise ValueError(f"query {qid!r} is not in id_query/{dataset}.json")
        return text

    def passage(self, dataset: str, docid: str) -> Passage:
        doc = self._load("id_doc", dataset, self._docs).get(docid)
        if isinstance(doc, dict):  # tolerate {"title", "text"} objects as well as plain strings
            return Passage(
                docid, str(doc.get("text") or doc.get("contents") or ""), str(doc.get("title") or "")
            )
        if not isinstance(doc, str):
            raise ValueError(f"passage {docid!r} is not in id_doc/{dataset}.json")
        return Passage(docid, doc)


def parse_reasonrank_sample(obj: dict[str, Any], texts: ReasonRankTexts) -> TeacherSample:
    """A sample from one line of ReasonRank's ``training_data_all.jsonl``."""
    missing = [k for k in _SAMPLE_FIELDS if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)} of ReasonRank's layout")
    dataset, qid = str(obj["dataset"]), str(obj["qid"])
    initial = _string_list(obj, "initial_list")
    candidates = [Candidate(texts.passage(dataset, d)) for d in initial]
    sample = TeacherSample(
        request=Request(Query(qid, texts.query(dataset, qid)), candidates),
        final_list=_string_list(obj, "final_list"),
        reasoning=_reasoning(obj),
        relevant_docids=_string_list(obj, "relevant_docids"),
        ndcg_self=None,
        dataset=dataset,
        provenance={"source": "reasonrank_data_13k", "labeller": "DeepSeek-R1"},
    )
    sample.validate()
    return sample


def _reasonrank_root(path: Path) -> Path | None:
    root = path if path.is_dir() else path.parent
    return root if (root / "id_query").is_dir() and (root / "id_doc").is_dir() else None


def read_teacher_samples(
    path: str | os.PathLike[str], *, skip_bad: bool = False, report: ReadReport | None = None
) -> Iterator[TeacherSample]:
    """Samples from an rrdistill JSONL file or from ReasonRank's release (its folder, or its
    ``training_data_all.jsonl`` with ``id_query/`` and ``id_doc/`` beside it).

    Malformed lines raise ``file:line: reason`` (or are skipped and counted with `skip_bad`).
    """
    source = Path(path)
    root = _reasonrank_root(source)
    if source.is_dir():
        if root is None:
            raise FileNotFoundError(f"{source}: not a ReasonRank data folder (no id_query/ and id_doc/)")
        source = source / "training_data_all.jsonl"
    texts = ReasonRankTexts(root) if root is not None else None
    report = report if report is not None else ReadReport()
    for lineno, obj in iter_jsonl(source, skip_bad=skip_bad, report=report):
        try:
            if "candidates" in obj or texts is None:
                yield parse_sample(obj)
            else:
                yield parse_reasonrank_sample(obj, texts)
        except (ValueError, TypeError, KeyError) as exc:
            error = exc if isinstance(exc, LineError) else LineError(source, lineno, str(exc))
            if not skip_bad:
                raise error from None
            report.read -= 1
            report.skipped.append(error)
