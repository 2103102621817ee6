"""Stages up to the teacher: BM25 candidates, synthesis, SFT → GRPO, and the teacher's evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rrdistill.chat import is_url
from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.systems import SystemRecord, run_metrics
from rrdistill.types import Qrels, Request

BM25_MODEL = "BM25 (bm25s: title + text, English stopwords, Snowball stemmer)"


def bm25_record(
    requests: Sequence[Request],
    qrels: Qrels,
    trec: Path,
    destination: Path,
    *,
    depth: int,
    dataset: str,
    notes: dict[str, Any] | None = None,
) -> SystemRecord:
    """BM25's row of one collection: its candidates' order as a TREC run, judged, saved at `destination`."""
    from rrdistill.io import write_trec_run
    from rrdistill.types import Ranking

    write_trec_run(trec, (Ranking.from_request(r) for r in requests), tag="bm25")
    metrics, per_query, queries = run_metrics(trec, qrels)
    record = SystemRecord(
        system="bm25",
        kind="bm25",
        mode=None,
        precision=None,
        bundle=None,
        model=BM25_MODEL,
        trained_on="-",
        queries=queries,
        depth=depth,
        metrics=metrics,
        latency_ms_per_query=None,
        per_query=per_query,
        notes=notes or {},
        run_file=str(trec),
        dataset=dataset,
    )
    record.save(destination)
    return record


def retrieve(ctx: PipelineContext) -> dict[str, Any]:
    """BM25 top-k for the evaluation, labelling and dev queries (and generative subsets of the first and last).

    Labelling queries come from the run's training split, which no longer holds the dev queries;
    the three query sets are checked disjoint.
    """
    from rrdistill.io import read_beir, write_requests
    from rrdistill.pipeline.heldout import DEV_SPLIT, check_disjoint
    from rrdistill.retrieve import BM25Retriever
    from rrdistill.types import Candidate

    settings, layout = ctx.config, ctx.layout
    evaluation = read_beir(ctx.data, settings.eval.split)
    labelling = read_beir(ctx.train_data, settings.labels.split)
    dev = read_beir(ctx.train_data, DEV_SPLIT)
    retriever = BM25Retriever(list(evaluation.corpus.values()))
    eval_queries = evaluation.split_queries()[: settings.eval.max_queries]
    label_queries = labelling.split_queries()[: settings.labels.max_queries]
    dev_queries = dev.split_queries()
    eval_qids = [q.qid for q in eval_queries]
    check_disjoint("the dev split", [q.qid for q in dev_queries], eval_qids)
    check_disjoint(
        "the dev split (vs labelling)", [q.qid for q in dev_queries], [q.qid for q in label_queries]
    )
    check_disjoint("the labelling queries", [q.qid for q in label_queries], eval_qids)
    eval_requests = retriever.search(eval_queries, k=settings.eval.top_k)
    label_requests = retriever.search(label_queries, k=settings.labels.top_k)
    dev_requests = retriever.search(dev_queries, k=settings.dev.top_k)

    def head(requests: list[Request], queries: int) -> list[Request]:
        depth = settings.eval.generative_depth
        return [
            Request(r.query, [Candidate(c.passage, c.score) for c in r.candidates[:depth]])
            for r in requests[:queries]
        ]

    write_requests(layout.eval_requests, eval_requests)
    write_requests(layout.subset_requests, head(eval_requests, settings.eval.generative_queries))
    write_requests(layout.label_requests, label_requests)
    write_requests(layout.dev_requests, dev_requests)
    write_requests(layout.dev_subset_requests, head(dev_requests, settings.dev.generative_queries))
    metrics = bm25_record(
        eval_requests,
        ctx.eval_qrels,
        layout.eval_trec,
        layout.system_file("bm25"),
        depth=settings.eval.top_k,
        dataset=ctx.dataset,
    ).metrics
    return {
        "eval_queries": len(eval_requests),
        "label_queries": len(label_requests),
        "dev_queries": len(dev_requests),
        "ndcg@10": round(metrics["ndcg@10"], 4),
    }


def synthesize(ctx: PipelineContext) -> dict[str, Any]:
    """Reasoning-ranking samples from a labeller, kept by ReasonRank's self-consistency filter.

    A GGUF labeller is served by llama.cpp for the length of the stage and spoken to through the
    same OpenAI-compatible backend as a remote ``vllm serve`` (a URL labeller).
    """
    from contextlib import nullcontext

    from rrdistill.distill.backends import SamplingParams, open_backend
    from rrdistill.distill.teacher.synthesize import SynthesisConfig, Synthesizer, load_inputs, rejected_path

    settings, layout = ctx.config.teacher.synthesis, ctx.layout
    requests, qrels = load_inputs(
        ctx.train_data,
        split=ctx.config.labels.split,
        top_k=settings.list_size,
        max_queries=settings.max_queries,
    )
    config = SynthesisConfig(
        list_size=settings.list_size,
        alpha=settings.alpha,
        require_reasoning=settings.require_reasoning,
        max_passage_tokens=settings.max_passage_tokens,
        sampling=SamplingParams(
            max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, seed=settings.seed
        ),
        dataset=ctx.data.name,
    )
    labeller = _labeller(ctx)
    ctx.resume_or_clear(
        "synthesize",
        [layout.samples, rejected_path(layout.samples)],
        {
            "config": asdict(config),
            "labeller": labeller.identity,
            "queries": [r.qid for r in requests],  # another max_queries is another job, not a resume
            "data": ctx.data / "corpus.jsonl",
            "qrels": ctx.train_data / "qrels" / f"{ctx.config.labels.split}.tsv",
        },
    )
    with labeller.server if labeller.server is not None else nullcontext():
        backend = open_backend(labeller.target, model=labeller.model, **labeller.backend_options)
        summary = Synthesizer(backend, config).run(
            requests, layout.samples, qrels, progress=ctx.progress(f"synthesizing ({labeller.name} labeller)")
        )
    out = summary.to_json()
    out["labeller"] = labeller.server.describe() if labeller.server is not None else settings.labeller
    return out


@dataclass
class _Labeller:
    identity: Any
    """What the synthesized samples depend on (resuming needs the same labeller)."""
    target: str
    """URL or checkpoint folder for :func:`open_backend`."""
    model: str | None = None
    server: Any = None
    """A llama.cpp server to run for the stage (a GGUF labeller)."""
    backend_options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model or "tiny"


def _labeller(ctx: PipelineContext) -> _Labeller:
    """The synthesis labeller the settings name: tiny (built here), URL, or GGUF (served here)."""
    from rrdistill.distill.llama_server import LlamaServer, LlamaServerConfig
    from rrdistill.distill.tiny import build_tiny_model

    settings, layout = ctx.config.teacher.synthesis, ctx.layout
    if settings.labeller == "tiny":
        teacher_config = ctx.teacher_config()
        if not (layout.labeller / "config.json").exists():
            if teacher_config.model.tiny is None:
                raise ValueError(f"{ctx.config.teacher.config}: a tiny labeller needs model.tiny")
            build_tiny_model(teacher_config.model.tiny, layout.labeller)
        return _Labeller(layout.labeller, str(layout.labeller))
    if is_url(settings.labeller):
        if not settings.model:
            raise ValueError("teacher.synthesis.model must name the model a URL labeller serves")
        return _Labeller(
            {"url": settings.labeller, "model": settings.model}, settings.labeller, settings.model
        )
    server = LlamaServer(
        LlamaServerConfig(settings.labeller, context=settings.context, parallel=settings.parallel)
    )
    return _Labeller(
        {"gguf": server.ref.path.name, **server.ref.provenance},
        server.url,
        server.model_name,
        server,
        {"concurrency": settings.parallel},
    )


def train_teacher(ctx: PipelineContext) -> dict[str, Any]:
    """Cold-start SFT then GRPO (trl) on the kept samples; resumes an interrupted run."""
    from rrdistill.config import to_dict
    from rrdistill.distill.teacher.train import TeacherTrainer

    layout = ctx.layout
    config = ctx.teacher_config()
    config = replace(
        config, output_dir=str(layout.teacher_run), data=replace(config.data, train=str(layout.samples))
    )
    resume = ctx.resume_or_clear(
        "teacher", [layout.teacher_run], {"config": to_dict(config), "samples": layout.samples}
    )
    summary = TeacherTrainer(config, config_path=ctx.config.teacher.config).run(resume=resume)
    out: dict[str, Any] = {"checkpoint": summary["checkpoint"], "seconds": round(summary["seconds"], 1)}
    for stage in ("sft", "grpo"):
        if stage in summary:
            out[f"{stage}_seconds"] = round(float(summary[stage].get("seconds", 0.0)), 1)
    for key in ("reward_before_grpo", "reward_after_grpo"):
        sampled = (summary.get(key) or {}).get("sampled") or {}
        if sampled.get("count"):
            out[f"{key}_mean"] = round(sampled["mean"], 4)
            out[f"{key}_format_failures"] = round(sampled["format_failures"], 4)
    return out


def teacher_stages(ctx: PipelineContext) -> list[tuple[str, str, str]]:
    """(system, checkpoint, what it is) of each teacher the report scores.

    A teacher trained here from a real base model is scored at each step of the recipe (the base
    zero-shot, after SFT, after GRPO) with the same prompts, passage cut and backend, so the rows
    show what each training stage bought. A tiny random base has no zero-shot row worth a figure.
    """
    if not ctx.teacher_is_trained_here:
        return [("teacher", ctx.teacher, f"listwise teacher {ctx.config.teacher.source}")]
    config = ctx.teacher_config()
    base = config.model.name_or_path
    final = "SFT → GRPO" if config.grpo.enabled else "SFT"
    if base is None:
        return [("teacher", ctx.teacher, f"tiny Qwen2-shaped listwise teacher, random init, {final} here")]
    stages = [("teacher-zero-shot", base, f"{base}, zero-shot")]  # a model spec: materialized when scored
    if config.sft.enabled and config.grpo.enabled:
        stages.append(
            ("teacher-sft", str(ctx.layout.teacher_run / "sft" / "final"), f"{base}, LoRA SFT here")
        )
    stages.append(("teacher", ctx.teacher, f"{base}, LoRA {final} here"))
    return stages


def evaluate_teacher(ctx: PipelineContext) -> dict[str, Any]:
    """The listwise teacher (at each training step) reranks the generative subset through the sliding window."""
    from rrdistill.distill.backends import SamplingParams
    from rrdistill.distill.checkpoints import checkpoint_source, materialize_checkpoint
    from rrdistill.distill.teacher.rerank import rerank_with_teacher, teacher_prompt_settings
    from rrdistill.window import WindowConfig

    settings, layout = ctx.config, ctx.layout
    prompt = teacher_prompt_settings(ctx.teacher)  # every row is prompted as the final teacher is
    base = ctx.teacher_config().model.name_or_path if ctx.teacher_is_trained_here else None
    base_checkpoint = str(materialize_checkpoint(base)) if base else None
    gguf = checkpoint_source(base_checkpoint) if base_checkpoint else {}
    out: dict[str, Any] = {}
    for system, checkpoint, description in teacher_stages(ctx):
        if system == "teacher-zero-shot":
            checkpoint = str(base_checkpoint)
        output, trec = layout.run_file(system, ".jsonl"), layout.run_file(system, ".trec")
        output.unlink(missing_ok=True)
        summary = rerank_with_teacher(
            layout.subset_requests,
            output,
            checkpoint,
            model=settings.teacher.model,
            window=WindowConfig(
                settings.eval.window, settings.eval.step, top_k=settings.eval.generative_depth
            ),
            sampling=SamplingParams(max_new_tokens=settings.teacher.max_new_tokens, temperature=0.0),
            reasoning=prompt.get("reasoning"),
            max_passage_tokens=prompt.get("max_passage_tokens"),
            trec_path=trec,
            progress=ctx.progress(f"{system} reranks (sliding window)"),
        )
        metrics, per_query, queries = run_metrics(trec, ctx.eval_qrels)
        stats = summary.to_json()
        reasoning = prompt.get("reasoning", True)
        latency = 1000 * summary.job.seconds / max(summary.job.reranked, 1)
        if system == "teacher-zero-shot":
            trained_on = "-"
        else:
            trained_on = (
                f"{layout.samples.name} (synthesized)" if ctx.teacher_is_trained_here else "as provided"
            )
        SystemRecord(
            system=system,
            kind="teacher",
            mode="reasoning" if reasoning else "fast",
            precision="fp32",
            bundle=None,
            model=description,
            trained_on=trained_on,
            queries=queries,
            depth=settings.eval.generative_depth,
            metrics=metrics,
            latency_ms_per_query=latency,
            per_query=per_query,
            notes={"rerank": stats},
            run_file=str(trec),
            provenance=_teacher_provenance(checkpoint, base, gguf),
            roles=["labeller"] if ctx.labeller_system == system else [],
            dataset=ctx.dataset,
        ).save(layout.system_file(system))
        out[system] = {
            "ndcg@10": round(metrics["ndcg@10"], 4),
            "ms_per_query": round(latency, 1),
            "repaired": stats.get("repaired"),
        }
    return out


def _teacher_provenance(source: str, base: str | None, gguf: dict[str, Any]) -> dict[str, Any]:
    """The teacher's base and architecture from its checkpoint (a URL teacher: just the URL)."""
    import json
    from pathlib import Path

    provenance: dict[str, Any] = {"kind": "teacher", "source_checkpoint": Path(source).name}
    config = Path(source) / "config.json"
    if is_url(source) or not config.exists():
        return {**provenance, "source_checkpoint": source}
    model = json.loads(config.read_text(encoding="utf-8"))
    return {
        **provenance,
        "base_checkpoint": base or model.get("model_type"),
        "architecture": (model.get("architectures") or [model.get("model_type")])[0],
        "layers": model.get("num_hidden_layers"),
        "hidden_size": model.get("hidden_size"),
        "precision": str(model.get("torch_dtype") or model.get("dtype") or "fp32"),
        **({"gguf": gguf} if gguf else {}),
    }
