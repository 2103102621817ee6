"""Reranking a request file with the teacher: sliding window over a generation backend.

Each chunk of queries goes through :func:`rrdistill.window.sliding_window` (window 20, step 10,
back to front over the top-100 by default), so every backend call carries the current window of
many queries at once. Results go through the resumable loop :func:`rrdistill.rerank.rerank_file`:
fsync'd result lines, TREC run, restart without redoing finished queries. Each result line keeps
its windows (answer, reasoning, repairs, generated tokens) under ``teacher``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrdistill.chat import is_url, server_context_length
from rrdistill.distill.backends import GenerationBackend, SamplingParams, load_tokenizer, open_backend
from rrdistill.distill.window_ranker import GenerativeRanker, RankerStats
from rrdistill.prompts import PROMPT_VERSION, passage_budget
from rrdistill.rerank import RerankSummary, rerank_file
from rrdistill.types import Request
from rrdistill.window import WindowConfig, sliding_window

TEACHER_MANIFEST = "rrdistill_teacher.json"


@dataclass
class TeacherRerankSummary:
    job: RerankSummary
    ranker: RankerStats
    model: str
    passage_cut: str = ""
    """The per-passage cut and where it came from."""

    def rows(self) -> list[tuple[str, str]]:
        stats = self.ranker
        tokens = stats.mean_generated_tokens
        per_query = self.job.seconds / self.job.reranked if self.job.reranked else 0.0
        return [
            *[row for row in self.job.rows() if not row[0].startswith("wall time")],
            ("teacher", self.model),
            ("passage cut", self.passage_cut),
            ("windows ranked", f"{stats.windows:,}"),
            ("failed generations (kept input order)", f"{stats.failed:,}"),
            ("answers in strict format", f"{stats.format_ok:,}"),
            ("repaired answers", f"{stats.repaired:,}"),
            ("generated tokens / window", "-" if tokens is None else f"{tokens:.1f}"),
            ("wall time", f"{self.job.seconds:.1f} s ({per_query:.2f} s/query)"),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "passage_cut": self.passage_cut,
            "queries": self.job.total,
            "resumed": self.job.resumed,
            "reranked": self.job.reranked,
            "seconds": self.job.seconds,
            "seconds_per_query": self.job.seconds / self.job.reranked if self.job.reranked else None,
            **self.ranker.to_json(),
        }


def teacher_prompt_settings(teacher: str) -> dict[str, Any]:
    """Prompt settings a checkpoint was trained with (its ``rrdistill_teacher.json``), if any."""
    manifest = Path(teacher) / TEACHER_MANIFEST
    if is_url(teacher) or not manifest.exists():
        return {}
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if data.get("prompt_version") not in (None, PROMPT_VERSION):
        raise ValueError(
            f"{teacher} was trained with prompt {data['prompt_version']!r}, this rrdistill builds "
            f"{PROMPT_VERSION!r}: its answers would not mean the same"
        )
    return {k: data[k] for k in ("reasoning", "max_passage_tokens") if k in data}


def passage_cut(
    teacher: str,
    settings: dict[str, Any],
    window: WindowConfig,
    max_new_tokens: int,
    *,
    by_words: bool,
    given: int | None = None,
) -> tuple[int, str]:
    """How far passages are cut, and why: as asked; else as the checkpoint was trained; else, for
    a server, what fits its context (a full window's prompt + the generation budget, see
    :func:`rrdistill.prompts.passage_budget`); else ReasonRank's 512."""
    if given is not None:
        return given, "as given"
    if "max_passage_tokens" in settings:
        return int(settings["max_passage_tokens"]), "as the checkpoint was trained"
    if is_url(teacher):
        context = server_context_length(teacher)
        if context is not None:
            budget = passage_budget(context, window.window_size, max_new_tokens, by_words=by_words)
            unit = "words" if by_words else "tokens"
            return budget, f"fits the server's {context}-token context ({budget} {unit} a passage)"
    return 512, "ReasonRank's default"


def teacher_ranker(
    teacher: str,
    backend: GenerationBackend,
    sampling: SamplingParams,
    window: WindowConfig,
    *,
    reasoning: bool | None = None,
    max_passage_tokens: int | None = None,
    tokenizer: str | Path | None = None,
) -> tuple[GenerativeRanker, str]:
    """The teacher as a window ranker, prompted as it was trained (or as asked), and the passage
    cut it uses with where that came from; shared by reranking and labelling."""
    settings = teacher_prompt_settings(teacher)
    cut, why = passage_cut(
        teacher,
        settings,
        window,
        sampling.max_new_tokens,
        by_words=tokenizer is None,
        given=max_passage_tokens,
    )
    ranker = GenerativeRanker(
        backend,
        sampling,
        reasoning=settings.get("reasoning", True) if reasoning is None else reasoning,
        max_passage_tokens=cut,
        tokenizer=load_tokenizer(tokenizer) if tokenizer is not None else None,
    )
    return ranker, f"{cut} ({why})"


def window_batch_reranker(
    ranker: GenerativeRanker, window: WindowConfig
) -> Callable[[list[Request]], list[Request]]:
    """A ``rerank_file`` callback: one sliding-window pass over a chunk, windows batched across queries."""

    def rerank(chunk: list[Request]) -> list[Request]:
        results = []
        for ranked in sliding_window(chunk, ranker, window):
            request = ranked.request
            request.extra["teacher"] = {
                "model": ranker.backend.model_name,
                "prompt_version": PROMPT_VERSION,
                "repairs": ranked.repairs.to_dict(),
                "generated_tokens": ranked.generated_tokens,
                "windows": [w.to_json() for w in ranked.windows],
            }
            results.append(request)
        return results

    return rerank


def rerank_with_teacher(
    requests_path: str | Path,
    output_path: str | Path,
    teacher: str,
    *,
    model: str | None = None,
    window: WindowConfig | None = None,
    sampling: SamplingParams | None = None,
    chunk_size: int = 16,
    batch_size: int = 16,
    concurrency: int = 16,
    reasoning: bool | None = None,
    max_passage_tokens: int | None = None,
    trec_path: str | Path | None = None,
    tokenizer: str | Path | None = None,
    backend: GenerationBackend | None = None,
    progress: Callable[[int, int], None] | None = None,
    skip_bad: bool = False,
) -> TeacherRerankSummary:
    """Rerank `requests_path` with the teacher at `teacher` (checkpoint dir or server URL).

    Prompt settings default to those the checkpoint was trained with; a URL defaults to the
    reasoning mode and passages cut to fit the server's context (:func:`passage_cut`).
    """
    backend = backend or open_backend(teacher, model=model, batch_size=batch_size, concurrency=concurrency)
    window = window or WindowConfig()
    ranker, cut = teacher_ranker(
        teacher,
        backend,
        sampling or SamplingParams(),
        window,
        reasoning=reasoning,
        max_passage_tokens=max_passage_tokens,
        tokenizer=tokenizer,
    )
    job = rerank_file(
        requests_path,
        output_path,
        window_batch_reranker(ranker, window),
        chunk_size=chunk_size,
        trec_path=trec_path,
        tag="rrdistill-teacher",
        skip_bad=skip_bad,
        progress=progress,
    )
    return TeacherRerankSummary(job, ranker.stats, backend.model_name, cut)
