"""Property-based fuzzing of every reader and parser: bad input is rejected with its location, never crashes.

The default run draws a few thousand cases; `just test-all` (HYPOTHESIS_PROFILE=thorough) draws ≥ 10,000.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrdistill.io import (
    LineError,
    ReadReport,
    parse_request,
    read_beir,
    read_qrels,
    read_requests,
    read_trec_run,
)
from rrdistill.prompts import parse_answer

settings.register_profile(
    "default", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Any Unicode text a file can hold (lone surrogates cannot be encoded, so they never reach a reader).
text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=8), children, max_size=4
        )
    ),
    max_leaves=12,
)
docs = st.one_of(
    text,
    st.fixed_dictionaries({"text": text}, optional={"title": st.one_of(text, st.none(), st.integers())}),
    st.dictionaries(st.sampled_from(["contents", "segment", "body", "title", "x"]), json_values, max_size=3),
    json_values,
)
candidates = st.fixed_dictionaries(
    {
        "docid": st.one_of(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6),
            st.integers(),
            st.none(),
            st.booleans(),
        )
    },
    optional={
        "score": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.none(), text),
        "doc": docs,
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "query": st.one_of(
            st.fixed_dictionaries(
                {
                    "qid": st.one_of(
                        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=5),
                        st.integers(),
                        st.none(),
                    ),
                    "text": st.one_of(text, st.integers()),
                }
            ),
            json_values,
        ),
        "candidates": st.one_of(st.lists(candidates, max_size=6), json_values),
    },
)


def _file(content: bytes) -> Path:
    with tempfile.NamedTemporaryFile(delete=False, suffix=".txt") as handle:
        handle.write(content)
    return Path(handle.name)


@given(requests)
def test_request_objects_are_parsed_or_rejected_with_the_field(obj: dict) -> None:
    try:
        request = parse_request(obj)
    except ValueError as exc:
        assert str(exc)  # names what is wrong
        return
    assert len({c.docid for c in request.candidates}) == len(request.candidates)
    assert all(c.score is None or math.isfinite(c.score) for c in request.candidates)


@given(
    st.lists(
        st.one_of(
            requests.map(lambda o: json.dumps(o, allow_nan=True)),
            text,
            st.binary().map(lambda b: b.decode("latin-1")),
        ),
        max_size=8,
    )
)
def test_request_files_fail_with_file_and_line_or_skip_and_count(lines: list[str]) -> None:
    path = _file("\n".join(lines).encode())
    try:
        try:
            list(read_requests(path))
        except LineError as exc:
            assert str(exc).startswith(f"{path}:{exc.line}: ")
        report = ReadReport()
        parsed = list(read_requests(path, skip_bad=True, report=report))
        assert report.read == len(parsed)
    finally:
        path.unlink()


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_any_reader(content: bytes) -> None:
    path = _file(content)
    try:
        for reader in (read_trec_run, read_qrels, lambda p: list(read_requests(p))):
            try:
                reader(path)
            except LineError as exc:
                assert exc.line >= 1 and str(exc).startswith(str(path))
            report = ReadReport()
            reader_skip = {read_trec_run: read_trec_run, read_qrels: read_qrels}.get(reader)
            if reader_skip is not None:
                reader_skip(path, skip_bad=True, report=report)
    finally:
        path.unlink()


trec_tokens = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=["Zs", "Zl", "Zp", "Cc", "Cs"]), min_size=1, max_size=6
    ),
    st.just("nan"),
    st.just("inf"),
    st.floats().map(str),
)


@given(st.lists(st.lists(trec_tokens, max_size=7).map(" ".join), max_size=10))
def test_trec_runs_and_qrels_from_token_soup(lines: list[str]) -> None:
    path = _file("\n".join(lines).encode())
    try:
        for reader in (read_trec_run, read_qrels):
            try:
                result = reader(path)
            except LineError as exc:
                assert 1 <= exc.line <= len(lines)
                continue
            for ranking in result.values():
                assert all(isinstance(v, int | float) and math.isfinite(v) for v in ranking.values())
    finally:
        path.unlink()


@given(text, st.integers(min_value=0, max_value=30), st.booleans())
def test_any_model_answer_becomes_a_permutation(text: str, n: int, reasoning: bool) -> None:
    parsed = parse_answer(text, n, reasoning=reasoning)
    assert sorted(parsed.order) == list(range(n))


@given(
    st.lists(st.integers(min_value=-5, max_value=40), max_size=40).map(
        lambda ids: "<think>r</think><answer>" + " > ".join(f"[{i}]" for i in ids) + "</answer>"
    ),
    st.integers(min_value=1, max_value=25),
)
def test_answers_with_wild_identifiers_are_repaired_and_counted(text: str, n: int) -> None:
    parsed = parse_answer(text, n)
    assert sorted(parsed.order) == list(range(n))
    kept = n - parsed.repairs.missing
    assert kept + parsed.repairs.duplicates + parsed.repairs.out_of_range == len(parsed.ids)


@settings(max_examples=60)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30),
            requests.map(json.dumps),
        ),
        max_size=5,
    ),
    st.booleans(),
)
def test_beir_folders_with_bad_lines(lines: list[str], skip_bad: bool) -> None:
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root)
        (folder / "corpus.jsonl").write_text("\n".join(lines))
        (folder / "queries.jsonl").write_text('{"_id": "q", "text": "t"}\n')
        (folder / "qrels").mkdir()
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td\t1\n")
        try:
            data = read_beir(folder, "test", skip_bad=skip_bad)
        except LineError as exc:
            assert not skip_bad and str(exc).startswith(str(folder / "corpus.jsonl"))
            return
        assert data.qrels == {"q": {"d": 1}}


def test_huge_passages_and_long_lists(tmp_path: Path) -> None:
    big = {
        "query": {"qid": "q", "text": "é" * 1000},
        "candidates": [
            {"docid": str(i), "score": float(i), "doc": {"text": "x" * 1000}} for i in range(10_000)
        ],
    }
    huge = {
        "query": {"qid": "h", "text": "q"},
        "candidates": [{"docid": "d", "doc": {"text": "🙂" * 2_000_000}}],
    }
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(big) + "\n" + json.dumps(huge) + "\n", encoding="utf-8")
    first, second = read_requests(path)
    assert len(first.candidates) == 10_000
    assert len(second.candidates[0].passage.text) == 2_000_000
