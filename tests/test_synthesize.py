"""Synthesis: the self-consistency filter, relevance from qrels or from the labeller, failure
records, resume after a crash (torn line included), --retry-failed; both sample layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scripted import ScriptedLabeller

from rrdistill.distill.teacher.samples import read_teacher_samples
from rrdistill.distill.teacher.synthesize import SynthesisConfig, Synthesizer, rejected_path
from rrdistill.io import LineError, iter_jsonl
from rrdistill.metrics import ndcg_at_k
from rrdistill.prompts import PROMPT_VERSION
from rrdistill.types import Candidate, Passage, Query, Request

FIXTURES = Path(__file__).parent / "fixtures"


def request(qid: str, text: str, good: set[int], n: int = 6) -> Request:
    return Request(
        Query(qid, text),
        [
            Candidate(Passage(f"{qid}-d{i}", f"passage {i} {'GOOD' if i in good else 'plain'}"), float(n - i))
            for i in range(n)
        ],
    )


REQUESTS = [
    request("agree", "a claim", {2, 4}),
    request("contrarian", "CONTRARIAN claim", {0, 1}, n=12),
    request("unjudged-list", "a claim with no positive", set()),
    request("fails", "FAIL claim", {1}),
    request("mumbles", "MUMBLE claim", {1}),
    request("no-think", "NOTHINK claim", {1}),
    request("repeats", "REPEAT claim", {3}),
]
QRELS = {
    r.qid: {d: 1 for d in r.docids if "GOOD" in next(c.passage.text for c in r.candidates if c.docid == d)}
    for r in REQUESTS
}
QRELS["unjudged-list"] = {"elsewhere": 1}


def records(path: Path) -> dict[str, dict]:
    out = {}
    for _, obj in iter_jsonl(path):
        obj["provenance"].pop("created")
        out[obj["qid"]] = obj
    return out


def test_filter_reasons_and_sample_fields(tmp_path: Path) -> None:
    labeller = ScriptedLabeller()
    output = tmp_path / "samples.jsonl"
    summary = Synthesizer(labeller, SynthesisConfig(batch_size=3, dataset="toy")).run(REQUESTS, output, QRELS)
    kept, rejected = records(output), records(rejected_path(output))
    assert set(kept) == {"agree", "repeats"}
    assert {q: r["reason"] for q, r in rejected.items()} == {
        "contrarian": "below_alpha",
        "unjudged-list": "no_positives",
        "fails": "rank_failed",
        "mumbles": "unparseable",
        "no-think": "no_reasoning",
    }
    assert rejected["fails"]["status"] == "failed" and "503" in rejected["fails"]["error"]
    assert (summary.kept, summary.failed, sum(summary.filtered.values())) == (2, 1, 4)
    assert summary.repaired == 1 and summary.repairs.duplicates == 1 and summary.repairs.missing == 1
    # the list without a judged positive is rejected before any generation is spent on it
    assert labeller.calls == [2, 3, 1] and labeller.judge_prompts == 0
    assert "labeller_output" not in rejected["unjudged-list"]

    agree = kept["agree"]
    assert agree["initial_list"] == [f"agree-d{i}" for i in range(6)]
    assert agree["final_list"][:2] == ["agree-d2", "agree-d4"]
    assert agree["relevant_docids"] == ["agree-d2", "agree-d4"]
    assert agree["ndcg_self"] == 1.0 and agree["reasoning"].startswith("passages")
    assert agree["dataset"] == "toy" and agree["query"] == {"qid": "agree", "text": "a claim"}
    assert agree["provenance"]["prompt_version"] == PROMPT_VERSION
    assert agree["provenance"]["labeller"] == "scripted-labeller"
    assert agree["provenance"]["relevance"] == "qrels"
    contrarian = rejected["contrarian"]
    expected = ndcg_at_k(contrarian["final_list"], dict.fromkeys(contrarian["relevant_docids"], 1), 10)
    assert contrarian["ndcg_self"] == pytest.approx(expected) and expected < 0.4
    assert kept["repeats"]["repairs"] == {"out_of_range": 0, "duplicates": 1, "missing": 1, "no_answer": 0}

    samples = {s.qid: s for s in read_teacher_samples(output)}
    assert samples["agree"].final_order[:2] == [2, 4] and samples["agree"].relevant_positions == [2, 4]


def test_without_qrels_the_labeller_picks_the_positives(tmp_path: Path) -> None:
    labeller = ScriptedLabeller()
    output = tmp_path / "samples.jsonl"
    summary = Synthesizer(labeller, SynthesisConfig(batch_size=10)).run(REQUESTS[:3], output, None)
    assert labeller.calls == [6] and labeller.judge_prompts == 3  # rank + judge prompts in one batch
    kept = records(output)
    assert set(kept) == {"agree"} and summary.filtered == {"below_alpha": 1, "no_positives": 1}
    assert kept["agree"]["relevant_docids"] == ["agree-d2", "agree-d4"]
    assert kept["agree"]["provenance"]["relevance"] == "labeller"


def test_alpha_zero_keeps_every_answered_list(tmp_path: Path) -> None:
    output = tmp_path / "samples.jsonl"
    Synthesizer(ScriptedLabeller(), SynthesisConfig(alpha=0.0)).run(REQUESTS, output, QRELS)
    assert set(records(output)) == {"agree", "contrarian", "repeats"}


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    config = SynthesisConfig(batch_size=2)
    clean = tmp_path / "clean.jsonl"
    Synthesizer(ScriptedLabeller(), config).run(REQUESTS, clean, QRELS)
    for crash_at in (1, 2, 4):
        output = tmp_path / f"crash{crash_at}.jsonl"
        with pytest.raises(RuntimeError, match="crashed"):
            Synthesizer(ScriptedLabeller(fail_on_call=crash_at), config).run(REQUESTS, output, QRELS)
        done_before = set(records(output)) | set(records(rejected_path(output)))
        with output.open("a") as handle:
            handle.write('{"qid": "torn", "initial_list": [')  # the line a kill -9 cut short
        labeller = ScriptedLabeller()
        resumed = Synthesizer(labeller, config).run(REQUESTS, output, QRELS)
        assert resumed.resumed == len(done_before) >= 2 * (crash_at - 1)
        never_sent = 0 if "unjudged-list" in done_before else 1  # rejected without a generation
        assert sum(labeller.calls) == len(REQUESTS) - resumed.resumed - never_sent  # nothing redone
        assert records(output) == records(clean)
        assert records(rejected_path(output)) == records(rejected_path(clean))
    again = ScriptedLabeller()
    finished = Synthesizer(again, config).run(REQUESTS, clean, QRELS)
    assert again.calls == [] and finished.resumed == len(REQUESTS)


def test_retry_failed_tries_the_failures_again(tmp_path: Path) -> None:
    output = tmp_path / "samples.jsonl"
    Synthesizer(ScriptedLabeller(), SynthesisConfig()).run(REQUESTS, output, QRELS)
    assert records(rejected_path(output))["fails"]["status"] == "failed"
    healed = [request("fails", "claim now answered", {1}) if r.qid == "fails" else r for r in REQUESTS]
    labeller = ScriptedLabeller()
    summary = Synthesizer(labeller, SynthesisConfig()).run(healed, output, QRELS, retry_failed=True)
    assert labeller.calls == [1] and summary.kept == 1
    assert "fails" in records(output) and "fails" not in records(rejected_path(output))


def test_output_of_another_job_and_duplicate_queries_are_refused(tmp_path: Path) -> None:
    output = tmp_path / "samples.jsonl"
    Synthesizer(ScriptedLabeller(), SynthesisConfig()).run(REQUESTS[:1], output, QRELS)
    with pytest.raises(ValueError, match="another job"):
        Synthesizer(ScriptedLabeller(), SynthesisConfig()).run(REQUESTS[1:2], output, QRELS)
    with pytest.raises(ValueError, match="more than once"):
        Synthesizer(ScriptedLabeller(), SynthesisConfig()).run(REQUESTS[:1] * 2, tmp_path / "x.jsonl", QRELS)


def test_reads_reasonranks_released_layout() -> None:
    folder = FIXTURES / "reasonrank"
    samples = list(read_teacher_samples(folder))
    assert samples == list(read_teacher_samples(folder / "training_data_all.jsonl"))
    assert [s.qid for s in samples] == ["math_1", "math_2", "bio_7"]
    first = samples[0]
    assert first.dataset == "math-qa" and first.request.query.text.startswith("Find the sum")
    assert first.initial_list == ["m_a", "m_b", "m_c", "m_d"]
    assert first.final_order == [2, 0, 3, 1] and first.relevant_positions == [2]
    assert first.request.candidates[2].passage.text.startswith("Vieta")
    assert first.reasoning.startswith("Okay")
    assert samples[2].dataset == "biology" and len(samples[2].initial_list) == 3


def test_malformed_released_lines_name_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "rr"
    shutil.copytree(FIXTURES / "reasonrank", folder)
    lines = (folder / "training_data_all.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    broken["final_list"] = broken["final_list"][:-1]
    missing_doc = json.loads(lines[2])
    missing_doc["initial_list"][0] = "no-such-doc"
    missing_doc["final_list"][missing_doc["final_list"].index(json.loads(lines[2])["initial_list"][0])] = (
        "no-such-doc"
    )
    (folder / "training_data_all.jsonl").write_text(
        "\n".join([lines[0], json.dumps(broken), json.dumps(missing_doc)]) + "\n"
    )
    with pytest.raises(LineError, match=r"training_data_all.jsonl:2: final_list must be a permutation"):
        list(read_teacher_samples(folder))
    from rrdistill.io import ReadReport

    report = ReadReport()
    assert [s.qid for s in read_teacher_samples(folder, skip_bad=True, report=report)] == ["math_1"]
    assert [e.line for e in report.skipped] == [2, 3] and "no-such-doc" in str(report.skipped[1])


@pytest.mark.slow
def test_cli_synthesis_survives_kill_9(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`rrdistill synthesize` killed with SIGKILL mid-run, then rerun: same samples as one clean run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from rrdistill.io import read_rankgpt, write_requests

    data = Path(__file__).resolve().parent.parent / "data" / "noveleval"
    requests = tmp_path / "requests.jsonl"
    write_requests(requests, read_rankgpt(data / "data.json"))
    cli = str(Path(sys.executable).parent / "rrdistill")

    def command(output: Path) -> list[str]:
        labeller = ["--labeller", str(tiny_model_dir), "--qrels", str(data / "qrels.txt")]
        budget = ["--list-size", "10", "--batch-size", "1", "--max-new-tokens", "24", "--temperature", "0"]
        rules = ["--max-passage-tokens", "8", "--alpha", "0", "--no-require-reasoning", "-o", str(output)]
        return [cli, "synthesize", str(requests), *labeller, *budget, *rules]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    clean = tmp_path / "clean.jsonl"
    subprocess.run(command(clean), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed.jsonl"
    process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = sum(p.read_text().count("\n") for p in (killed, rejected_path(killed)) if p.exists())
        if done >= 5:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = sum(len(records(p)) for p in (killed, rejected_path(killed)) if p.exists())
    assert 5 <= partial < 21
    subprocess.run(command(killed), env=env, check=True, capture_output=True)
    assert records(killed) == records(clean)
    assert records(rejected_path(killed)) == records(rejected_path(clean))
    assert len(records(killed)) + len(records(rejected_path(killed))) == 21
