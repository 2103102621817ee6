"""Reasoning-data synthesis with ReasonRank's self-consistency filter.

For every query, the labeller (any :class:`~rrdistill.distill.backends.GenerationBackend`)
ranks the first ≤ `list_size` candidates with reasoning, without seeing which are relevant.
The positives come from qrels when there are any; otherwise a separate judgment pass of the
labeller picks them (both passes run in the same batch: they do not depend on each other). A
sample is kept only when the nDCG@10 of the labeller's list against the positives reaches
`alpha`: a list that disagrees with the labeller's own relevance judgments is not trusted.

Output: kept samples go to ``OUT`` (teacher-sample JSONL, ReasonRank's fields + provenance);
filtered and failed ones to ``OUT.rejected.jsonl`` with the reason, so nothing is silently
lost. Both are append-only with fsync'd lines; a run started again skips every query already
in either file (``retry_failed`` first removes the failed ones, to try them again).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rrdistill import __version__
from rrdistill.distill.backends import GenerationBackend, GenerationResult, SamplingParams
from rrdistill.distill.teacher.samples import TeacherSample
from rrdistill.io import JsonlAppender, atomic_writer, dumps_line, iter_jsonl
from rrdistill.metrics import ndcg_at_k
from rrdistill.prompts import (
    JUDGE_PROMPT_VERSION,
    PROMPT_VERSION,
    Repairs,
    TokenTruncator,
    build_judgment_messages,
    build_messages,
    parse_answer,
    parse_judgment,
)
from rrdistill.types import Qrels, Request

KEPT, FILTERED, FAILED = "kept", "filtered", "failed"


@dataclass(frozen=True)
class SynthesisConfig:
    list_size: int = 20
    alpha: float = 0.4
    """Keep a sample when nDCG@10(labeller's list, positives) ≥ alpha (ReasonRank: 0.4)."""
    require_reasoning: bool = True
    """Reject answers without a think block (a reasoning teacher cannot learn from them)."""
    max_passage_tokens: int | None = 512
    batch_size: int = 32
    """Queries per backend call (a server sees up to 2× this many concurrent prompts)."""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=8192))
    dataset: str = ""
    """A name for the source collection, written into every sample (ReasonRank's ``dataset``)."""

    def __post_init__(self) -> None:
        if self.list_size < 2:
            raise ValueError("list_size must be ≥ 2")
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be in [0, 1]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")


@dataclass
class SynthesisSummary:
    total: int = 0
    resumed: int = 0
    kept: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    """Rejections by reason (below_alpha, no_positives, unparseable, no_reasoning, …)."""
    failed: int = 0
    repaired: int = 0
    """Processed answers (kept or filtered) that needed a repair to become a permutation."""
    repairs: Repairs = field(default_factory=Repairs)
    ndcg_self: list[float] = field(default_factory=list)
    generated_tokens: int = 0
    """Tokens generated, summed over the answers whose count the backend reported."""
    token_counts_known: int = 0
    seconds: float = 0.0
    output: Path | None = None
    rejected: Path | None = None

    def rows(self) -> list[tuple[str, str]]:
        done = self.total - self.resumed
        mean = sum(self.ndcg_self) / len(self.ndcg_self) if self.ndcg_self else float("nan")
        rows = [
            ("queries", f"{self.total:,}"),
            ("already done (resumed)", f"{self.resumed:,}"),
            ("kept", f"{self.kept:,}"),
            ("filtered", f"{sum(self.filtered.values()):,}"),
        ]
        rows += [(f"  {reason}", f"{count:,}") for reason, count in sorted(self.filtered.items())]
        rows += [
            ("failed (recorded, retry with --retry-failed)", f"{self.failed:,}"),
            ("repaired answers", f"{self.repaired:,}"),
            ("mean nDCG@10 self-consistency", f"{mean:.4f}"),
            (
                "generated tokens",
                f"{self.generated_tokens:,}"
                if self.token_counts_known
                else "- (the server reports no usage)",
            ),
            ("wall time", f"{self.seconds:.1f} s ({self.seconds / max(done, 1):.2f} s/query)"),
            ("samples", str(self.output)),
            ("rejected", str(self.rejected)),
        ]
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "resumed": self.resumed,
            "kept": self.kept,
            "filtered": dict(self.filtered),
            "failed": self.failed,
            "repaired": self.repaired,
            "repairs": self.repairs.to_dict(),
            "mean_ndcg_self": sum(self.ndcg_self) / len(self.ndcg_self) if self.ndcg_self else None,
            "generated_tokens": self.generated_tokens if self.token_counts_known else None,
            "seconds": self.seconds,
            "output": str(self.output),
            "rejected": str(self.rejected),
        }


def rejected_path(output: Path) -> Path:
    return output.with_name(output.stem + ".rejected.jsonl")


def _qid(obj: dict[str, Any]) -> str:
    return str(obj["qid"])


def drop_failed(path: Path) -> int:
    """Rewrite `path` (atomically) without its ``failed`` records; returns how many were removed."""
    if not path.exists():
        return 0
    kept_lines: list[str] = []
    removed = 0
    for _, obj in iter_jsonl(path):
        if obj.get("status") == FAILED:
            removed += 1
        else:
            kept_lines.append(dumps_line(obj))
    if removed:
        with atomic_writer(path) as handle:
            handle.writelines(kept_lines)
    return removed


@dataclass
class _Outcome:
    status: str
    record: dict[str, Any]
    tokens: int | None = None
    repairs: Repairs = field(default_factory=Repairs)


class Synthesizer:
    """One labeller, one config; :meth:`run` processes a request list into the two output files."""

    def __init__(
        self, backend: GenerationBackend, config: SynthesisConfig | None = None, *, tokenizer: Any = None
    ) -> None:
        self.backend = backend
        self.config = config or SynthesisConfig()
        tokenizer = tokenizer if tokenizer is not None else getattr(backend, "tokenizer", None)
        limit = self.config.max_passage_tokens
        self.truncate = TokenTruncator(limit, tokenizer) if limit is not None else None

    def provenance(self, relevance_source: str) -> dict[str, Any]:
        return {
            "labeller": self.backend.model_name,
            "prompt_version": PROMPT_VERSION,
            "judge_prompt_version": JUDGE_PROMPT_VERSION if relevance_source == "labeller" else None,
            "relevance": relevance_source,
            "alpha": self.config.alpha,
            "sampling": asdict(self.config.sampling),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rrdistill": __version__,
        }

    def _base(self, request: Request, relevance_source: str) -> dict[str, Any]:
        return {
            "dataset": self.config.dataset,
            "qid": request.qid,
            "initial_list": request.docids,
            "provenance": self.provenance(relevance_source),
        }

    def _reject(self, request: Request, source: str, status: str, reason: str, **fields: Any) -> _Outcome:
        record = {**self._base(request, source), "status": status, "reason": reason, **fields}
        return _Outcome(status, record, fields.get("generated_tokens"))

    def _decide(
        self,
        request: Request,
        ranked: GenerationResult,
        judged: GenerationResult | None,
        qrels: Qrels | None,
    ) -> _Outcome:
        source = "qrels" if qrels is not None else "labeller"
        counts = [r.completion_tokens for r in (ranked, judged) if r is not None]
        tokens = None if None in counts else sum(c for c in counts if c is not None)
        for stage, result in (("judge", judged), ("rank", ranked)):
            if result is not None and not result.ok:
                return self._reject(
                    request, source, FAILED, f"{stage}_failed", error=result.error, attempts=result.attempts
                )
        n = len(request.candidates)
        if judged is not None:
            judgment = parse_judgment(judged.text or "", n)
            if not judgment.answered:
                return self._reject(
                    request, source, FILTERED, "judgment_unparseable", judge_output=judged.text
                )
            relevant = [request.docids[i] for i in judgment.relevant]
        else:  # judged, with a positive in the list: `label_batch` turned the others away
            judgments = (qrels or {})[request.qid]
            relevant = [d for d in request.docids if judgments.get(d, 0) > 0]
        parsed = parse_answer(ranked.text or "", n, reasoning=True)
        details = {
            "relevant_docids": relevant,
            "labeller_output": ranked.text,
            "generated_tokens": tokens,
        }
        if parsed.repairs.no_answer:
            return self._reject(request, source, FILTERED, "unparseable", **details)
        if self.config.require_reasoning and not parsed.reasoning:
            return self._reject(request, source, FILTERED, "no_reasoning", **details)
        final_list = [request.docids[i] for i in parsed.order]
        if not relevant:
            return self._reject(request, source, FILTERED, "no_positives", final_list=final_list, **details)
        ndcg = ndcg_at_k(final_list, dict.fromkeys(relevant, 1), 10)
        sample = TeacherSample(
            request=Request(request.query, request.candidates),
            final_list=final_list,
            reasoning=parsed.reasoning,
            relevant_docids=relevant,
            ndcg_self=ndcg,
            dataset=self.config.dataset,
            provenance=self.provenance(source),
        )
        record = sample.to_json()
        record["generated_tokens"] = tokens
        if parsed.repairs.any:
            record["repairs"] = parsed.repairs.to_dict()
        if ndcg < self.config.alpha:
            record.update(status=FILTERED, reason="below_alpha", labeller_output=ranked.text)
            return _Outcome(FILTERED, record, tokens, parsed.repairs)
        return _Outcome(KEPT, record, tokens, parsed.repairs)

    def _unusable(self, request: Request, qrels: Qrels | None) -> _Outcome | None:
        """With qrels, a list without a judged positive is rejected before the labeller spends a
        generation on it: whatever it answered, the list would be filtered (``no_positives``)."""
        if qrels is None:
            return None
        judgments = qrels.get(request.qid)
        if not judgments:
            return self._reject(request, "qrels", FILTERED, "not_judged")
        if not any(judgments.get(d, 0) > 0 for d in request.docids):
            return self._reject(request, "qrels", FILTERED, "no_positives", relevant_docids=[])
        return None

    def label_batch(self, requests: Sequence[Request], qrels: Qrels | None) -> list[_Outcome]:
        """Rank (and, without qrels, judge) a batch of lists in one backend call; with qrels, a list
        without a judged positive is rejected first and costs no generation."""
        early = [self._unusable(r, qrels) for r in requests]
        sent = [r for r, outcome in zip(requests, early, strict=True) if outcome is None]
        rank_prompts = [
            build_messages(r.query.text, [c.passage for c in r.candidates], truncate=self.truncate)
            for r in sent
        ]
        judge_prompts = (
            [
                build_judgment_messages(r.query.text, [c.passage for c in r.candidates], self.truncate)
                for r in sent
            ]
            if qrels is None
            else []
        )
        results = self.backend.generate(rank_prompts + judge_prompts, self.config.sampling) if sent else []
        if len(results) != len(rank_prompts) + len(judge_prompts):
            raise RuntimeError("the backend returned a different number of results than prompts")
        ranked, judged = results[: len(sent)], results[len(sent) :]
        decided = iter(
            self._decide(r, rank, judged[i] if judged else None, qrels)
            for i, (r, rank) in enumerate(zip(sent, ranked, strict=True))
        )
        return [outcome if outcome is not None else next(decided) for outcome in early]

    def run(
        self,
        requests: Sequence[Request],
        output: str | Path,
        qrels: Qrels | None = None,
        *,
        retry_failed: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> SynthesisSummary:
        started = time.perf_counter()
        output = Path(output)
        rejected = rejected_path(output)
        qids = [r.qid for r in requests]
        if len(set(qids)) != len(qids):
            duplicate = next(q for q, c in Counter(qids).items() if c > 1)
            raise ValueError(f"query {duplicate!r} appears more than once in the input")
        if retry_failed:
            drop_failed(rejected)
        summary = SynthesisSummary(total=len(requests), output=output, rejected=rejected)
        with JsonlAppender(output, key=_qid) as kept, JsonlAppender(rejected, key=_qid) as bad:
            done = kept.done | bad.done
            foreign = done - set(qids)
            if foreign:
                raise ValueError(
                    f"{output} holds samples for queries that are not in this input "
                    f"(e.g. {sorted(foreign)[0]!r}): it belongs to another job; choose another output"
                )
            summary.resumed = len(done)
            todo = [
                Request(r.query, r.candidates[: self.config.list_size], dict(r.extra))
                for r in requests
                if r.qid not in done
            ]
            if progress is not None:
                progress(summary.resumed, summary.total)
            for start in range(0, len(todo), self.config.batch_size):
                batch = todo[start : start + self.config.batch_size]
                small = [r for r in batch if len(r.candidates) < 2]
                for request in small:
                    outcome = self._reject(request, "-", FILTERED, "fewer_than_2_candidates")
                    bad.append(outcome.record)
                    summary.filtered[outcome.record["reason"]] += 1
                usable = [r for r in batch if len(r.candidates) >= 2]
                for outcome in self.label_batch(usable, qrels) if usable else []:
                    self._record(outcome, kept, bad, summary)
                if progress is not None:
                    progress(summary.resumed + start + len(batch), summary.total)
        summary.seconds = time.perf_counter() - started
        return summary

    @staticmethod
    def _record(
        outcome: _Outcome, kept: JsonlAppender, bad: JsonlAppender, summary: SynthesisSummary
    ) -> None:
        if outcome.tokens is not None:
            summary.generated_tokens += outcome.tokens
            summary.token_counts_known += 1
        if outcome.status == FAILED:
            summary.failed += 1
            bad.append(outcome.record)
            return
        summary.repaired += int(outcome.repairs.any)
        summary.repairs = summary.repairs + outcome.repairs
        if outcome.record.get("ndcg_self") is not None:
            summary.ndcg_self.append(outcome.record["ndcg_self"])
        if outcome.status == KEPT:
            summary.kept += 1
            kept.append(outcome.record)
        else:
            summary.filtered[outcome.record["reason"]] += 1
            bad.append(outcome.record)


def load_inputs(
    source: str | Path,
    *,
    qrels_path: str | Path | None = None,
    split: str | None = "train",
    top_k: int = 20,
    max_queries: int | None = None,
) -> tuple[list[Request], Qrels | None]:
    """Requests + qrels for synthesis from a request JSONL file, or from a BEIR folder (BM25 top-k).

    A BEIR folder brings its ``qrels/<split>.tsv``; `qrels_path` overrides it, and a JSONL input
    without `qrels_path` has none (the labeller then picks the positives). `max_queries` keeps
    the first N queries (in file / qrels order), so subsets are reproducible.
    """
    from rrdistill.io import read_beir, read_qrels
    from rrdistill.rerank import load_unique_requests

    source = Path(source)
    qrels: Qrels | None = None
    if source.is_dir():
        from rrdistill.retrieve import BM25Retriever

        data = read_beir(source, split)
        queries = data.split_queries() if split else list(data.queries.values())
        if max_queries is not None:
            queries = queries[:max_queries]
        requests = BM25Retriever(list(data.corpus.values())).search(queries, k=top_k)
        qrels = data.qrels if split else None
    else:
        requests = load_unique_requests(source)
        if max_queries is not None:
            requests = requests[:max_queries]
    if qrels_path is not None:
        qrels = read_qrels(qrels_path)
    return requests, qrels
