"""Reading and writing the files that connect the stages.

Formats: RankLLM-compatible request/result JSONL, TREC runs and qrels, BEIR folders, RankGPT JSON.
Every malformed line is reported as ``file:line: reason``; readers can instead skip bad lines and
count them in a :class:`ReadReport`. Outputs are written so that a crash never leaves a half
line that a later read would accept (fsync'd appends or write-then-rename).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rrdistill.types import Candidate, Passage, Qrels, Query, Ranking, Request, Run

PathLike = str | os.PathLike[str]

# Keys RankLLM and pyserini use for a passage's body, in the order RankLLM looks them up.
_DOC_TEXT_KEYS = ("text", "segment", "contents", "body", "passage", "content")


class LineError(ValueError):
    """A malformed line in an input file, located as ``file:line: reason``."""

    def __init__(self, path: PathLike, line: int, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{self.path}:{line}: {reason}")


@dataclass
class ReadReport:
    """What a tolerant read saw: how many records it read and which lines it skipped."""

    path: str = ""
    read: int = 0
    skipped: list[LineError] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.path}: {self.read} read, {len(self.skipped)} malformed line(s) skipped"


class _Lines:
    """Shared line loop: turns a parse failure into a LineError, raised or counted."""

    def __init__(self, path: PathLike, skip_bad: bool, report: ReadReport | None) -> None:
        self.path = Path(path)
        self.skip_bad = skip_bad
        self.report = report if report is not None else ReadReport()
        self.report.path = str(path)

    def fail(self, line: int, reason: str) -> None:
        error = LineError(self.path, line, reason)
        if not self.skip_bad:
            raise error
        self.report.skipped.append(error)

    def lines(self) -> Iterator[tuple[int, str]]:
        try:
            handle = self.path.open(encoding="utf-8", newline="")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such file") from None
        with handle:
            lineno = 0
            while True:
                try:
                    raw = handle.readline()
                except UnicodeDecodeError as exc:
                    # The decoder fails on a chunk, so the rest of the file cannot be trusted.
                    self.fail(lineno + 1, f"not valid UTF-8 ({exc.reason})")
                    return
                if not raw:
                    return
                lineno += 1
                text = raw.rstrip("\r\n")
                if text.strip():
                    yield lineno, text


def _json_objects(reader: _Lines) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, text in reader.lines():
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            reader.fail(lineno, f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            reader.fail(lineno, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


def read_jsonl_records(
    path: PathLike,
    parse: Callable[[dict[str, Any]], Any],
    *,
    skip_bad: bool = False,
    report: ReadReport | None = None,
) -> Iterator[Any]:
    """Parse each JSONL object with `parse`; a ValueError from it becomes a ``file:line`` error."""
    reader = _Lines(path, skip_bad, report)
    for lineno, obj in _json_objects(reader):
        try:
            record = parse(obj)
        except (ValueError, TypeError) as exc:
            reader.fail(lineno, str(exc))
            continue
        except KeyError as exc:
            reader.fail(lineno, f"missing field {exc}")
            continue
        reader.report.read += 1
        yield record


def iter_jsonl(
    path: PathLike, *, skip_bad: bool = False, report: ReadReport | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-empty line; a line must be one JSON object."""
    reader = _Lines(path, skip_bad, report)
    for lineno, obj in _json_objects(reader):
        reader.report.read += 1
        yield lineno, obj


# ----------------------------------------------------------------------------------------------
# Request / result JSONL (RankLLM format)
# ----------------------------------------------------------------------------------------------


def _identifier(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where} must be a string or integer, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where} is empty")
    return text


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number or null, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{where} is {value} (scores must be finite)")
    return float(value)


def parse_passage(docid: str, doc: Any, where: str = "doc") -> Passage:
    """A passage from a RankLLM ``doc`` field (a dict with title/text-like keys, or a string)."""
    if isinstance(doc, str):
        return Passage(docid, doc)
    if not isinstance(doc, dict):
        raise ValueError(f"{where} must be an object or a string, got {type(doc).__name__}")
    text = next((doc[k] for k in _DOC_TEXT_KEYS if k in doc), None)
    if text is None:
        raise ValueError(f"{where} has none of the text keys {', '.join(_DOC_TEXT_KEYS)}")
    title = doc.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise ValueError(f"{where}.text and {where}.title must be strings")
    return Passage(docid, text, title)


def parse_request(obj: dict[str, Any]) -> Request:
    """A :class:`Request` from one RankLLM request/result object; ValueError names the field."""
    query = obj.get("query")
    if not isinstance(query, dict):
        raise ValueError("field 'query' must be an object with 'qid' and 'text'")
    qid = _identifier(query.get("qid"), "query.qid")
    text = query.get("text")
    if not isinstance(text, str):
        raise ValueError("query.text must be a string")
    raw_candidates = obj.get("candidates")
    if not isinstance(raw_candidates, list):
        raise ValueError("field 'candidates' must be a list")
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_candidates):
        where = f"candidates[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be an object")
        docid = _identifier(raw.get("docid"), f"{where}.docid")
        if docid in seen:
            raise ValueError(f"{where}.docid {docid!r} appears twice in the list")
        seen.add(docid)
        passage = parse_passage(docid, raw.get("doc", ""), f"{where}.doc")
        candidates.append(Candidate(passage, _score(raw.get("score"), f"{where}.score")))
    extra = {k: v for k, v in obj.items() if k not in ("query", "candidates")}
    return Request(Query(qid, text), candidates, extra)


def request_to_json(request: Request) -> dict[str, Any]:
    candidates = []
    for c in request.candidates:
        doc = (
            {"title": c.passage.title, "text": c.passage.text}
            if c.passage.title
            else {"text": c.passage.text}
        )
        candidates.append({"docid": c.docid, "score": c.score, "doc": doc})
    return {
        "query": {"qid": request.qid, "text": request.query.text},
        "candidates": candidates,
        **request.extra,
    }


def read_requests(
    path: PathLike, *, skip_bad: bool = False, report: ReadReport | None = None
) -> Iterator[Request]:
    """Requests (or results: same format, candidates in ranked order) from a RankLLM JSONL file."""
    return read_jsonl_records(path, parse_request, skip_bad=skip_bad, report=report)


def dumps_line(obj: Any) -> str:
    """One JSONL line; refuses NaN/inf so every line written can be read back by any JSON parser."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def write_requests(path: PathLike, requests: Iterable[Request]) -> int:
    """Write a request JSONL file atomically; returns the number of lines."""
    count = 0
    with atomic_writer(path) as handle:
        for request in requests:
            handle.write(dumps_line(request_to_json(request)))
            count += 1
    return count


# ----------------------------------------------------------------------------------------------
# Crash-safe output
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path` and rename it into place only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_STAGING_MARK = ".staging-"


def _stale_staging_dirs(target: Path) -> list[Path]:
    """Staging folders of `target` left by a process that no longer runs (killed mid-write)."""
    stale = []
    for candidate in target.parent.glob(f".{target.name}{_STAGING_MARK}*"):
        pid_text = candidate.name[len(f".{target.name}{_STAGING_MARK}") :].split("-", 1)[0]
        if not pid_text.isdigit() or not candidate.is_dir():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            stale.append(candidate)
        except PermissionError:  # alive, owned by someone else
            continue
    return stale


@contextlib.contextmanager
def atomic_directory(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a hidden staging folder beside `path`; move it into place only on success.

    Readers never see a half-written directory: on any exception the staging folder is removed
    and `path` is untouched; on success every file is fsync'd and the folder renamed into place.
    An existing non-empty `path` is refused up front unless `overwrite` (then it is replaced
    after the new one is complete). Staging folders of killed runs are cleaned on the next call.
    """
    target = Path(path)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())) and not overwrite:
        raise FileExistsError(f"{target}: already exists (choose another path or overwrite it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_staging_dirs(target):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING_MARK}{os.getpid()}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the published directory private
    try:
        yield staging
        for file in staging.rglob("*"):
            if file.is_file():
                with file.open("rb") as handle:
                    os.fsync(handle.fileno())
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class JsonlAppender:
    """Append-only JSONL output for long jobs that must survive ``kill -9`` and resume.

    Each record is one line, flushed and fsync'd before :meth:`append` returns. On open, a torn
    last line (a crash mid-write leaves no trailing newline) is cut off, and the keys of the
    complete lines are collected in :attr:`done`, so a resumed job skips exactly the work that
    is safely on disk: nothing lost, nothing written twice.
    """

    def __init__(self, path: PathLike, key: str | Callable[[dict[str, Any]], str] = "qid") -> None:
        self.path = Path(path)
        self._key = key if callable(key) else (lambda obj, _k=key: str(obj[_k]))
        self.done: set[str] = set()
        self.torn_bytes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._handle = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self.torn_bytes = len(data) - complete
            with self.path.open("r+b") as handle:
                handle.truncate(complete)
                handle.flush()
                os.fsync(handle.fileno())
        for lineno, obj in iter_jsonl(self.path):
            try:
                key = self._key(obj)
            except (KeyError, TypeError, ValueError) as exc:
                raise LineError(self.path, lineno, f"record has no key ({exc})") from None
            if key in self.done:
                raise LineError(self.path, lineno, f"key {key!r} written twice")
            self.done.add(key)

    def append(self, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        if key in self.done:
            raise ValueError(f"{self.path}: key {key!r} is already written")
        self._handle.write(dumps_line(obj))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.add(key)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# TREC runs and qrels
# ----------------------------------------------------------------------------------------------


def read_trec_run(path: PathLike, *, skip_bad: bool = False, report: ReadReport | None = None) -> Run:
    """A TREC run (``qid Q0 docid rank score tag``); duplicated (qid, docid) pairs are errors."""
    reader = _Lines(path, skip_bad, report)
    run: Run = {}
    for lineno, text in reader.lines():
        parts = text.split()
        if len(parts) != 6:
            reader.fail(lineno, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
            continue
        qid, _, docid, _, raw_score, _ = parts
        try:
            score = float(raw_score)
        except ValueError:
            reader.fail(lineno, f"score {raw_score!r} is not a number")
            continue
        if not math.isfinite(score):
            reader.fail(lineno, f"score {raw_score!r} is not finite")
            continue
        ranking = run.setdefault(qid, {})
        if docid in ranking:
            reader.fail(lineno, f"docid {docid!r} appears twice for query {qid!r}")
            continue
        ranking[docid] = score
        reader.report.read += 1
    return run


def write_trec_run(path: PathLike, rankings: Iterable[Ranking], tag: str = "rrdistill") -> int:
    """Write rankings as a TREC run whose scores reproduce each ranking's order exactly."""
    count = 0
    with atomic_writer(path) as handle:
        for ranking in rankings:
            for rank, (docid, score) in enumerate(ranking.as_run().items(), start=1):
                handle.write(f"{ranking.qid} Q0 {docid} {rank} {score:.9g} {tag}\n")
                count += 1
    return count


def read_qrels(path: PathLike, *, skip_bad: bool = False, report: ReadReport | None = None) -> Qrels:
    """Qrels as TREC (``qid iter docid rel``) or BEIR TSV (``query-id corpus-id score`` + header)."""
    reader = _Lines(path, skip_bad, report)
    qrels: Qrels = {}
    for lineno, text in reader.lines():
        parts = text.split("\t") if "\t" in text else text.split()
        if lineno == 1 and parts[:2] == ["query-id", "corpus-id"]:
            continue
        if len(parts) == 4:
            qid, _, docid, raw_rel = parts
        elif len(parts) == 3:
            qid, docid, raw_rel = parts
        else:
            reader.fail(
                lineno,
                f"expected 'qid 0 docid rel' (TREC) or 'qid<TAB>docid<TAB>rel' (BEIR), got {len(parts)} fields",
            )
            continue
        try:
            rel = int(raw_rel)
        except ValueError:
            reader.fail(lineno, f"relevance {raw_rel!r} is not an integer")
            continue
        qid, docid = qid.strip(), docid.strip()
        if docid in qrels.get(qid, {}):
            reader.fail(lineno, f"docid {docid!r} judged twice for query {qid!r}")
            continue
        qrels.setdefault(qid, {})[docid] = rel
        reader.report.read += 1
    return qrels


def read_run(path: PathLike, *, skip_bad: bool = False, report: ReadReport | None = None) -> Run:
    """A run from a TREC run file or a request/result JSONL file (ranked order = candidate order)."""
    if _looks_like_jsonl(path):
        return {
            r.qid: Ranking.from_request(r).as_run()
            for r in read_requests(path, skip_bad=skip_bad, report=report)
        }
    return read_trec_run(path, skip_bad=skip_bad, report=report)


def _looks_like_jsonl(path: PathLike) -> bool:
    with Path(path).open("rb") as handle:
        for raw in handle:
            stripped = raw.strip()
            if stripped:
                return stripped.startswith(b"{")
    return False


# ----------------------------------------------------------------------------------------------
# BEIR folders and RankGPT JSON
# ----------------------------------------------------------------------------------------------


@dataclass
class BeirDataset:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

    corpus: dict[str, Passage]
    queries: dict[str, Query]
    qrels: Qrels

    def split_queries(self) -> list[Query]:
        """The queries that have judgments, in qrels order (BEIR evaluates exactly these)."""
        return [self.queries[qid] for qid in self.qrels if qid in self.queries]


def read_beir(folder: PathLike, split: str | None = "test", *, skip_bad: bool = False) -> BeirDataset:
    """Load a BEIR folder; `split` picks ``qrels/<split>.tsv`` (None: no qrels)."""
    root = Path(folder)
    if not (root / "corpus.jsonl").exists():
        raise FileNotFoundError(f"{root}: not a BEIR folder (no corpus.jsonl)")
    corpus: dict[str, Passage] = {}

    def passage(obj: dict[str, Any]) -> Passage:
        docid = _identifier(obj.get("_id"), "_id")
        text, title = obj.get("text", ""), obj.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise ValueError("'text' and 'title' must be strings")
        return Passage(docid, text, title)

    def query(obj: dict[str, Any]) -> Query:
        text = obj.get("text")
        if not isinstance(text, str):
            raise ValueError("'text' must be a string")
        return Query(_identifier(obj.get("_id"), "_id"), text)

    for p in read_jsonl_records(root / "corpus.jsonl", passage, skip_bad=skip_bad):
        corpus[p.docid] = p
    queries = {q.qid: q for q in read_jsonl_records(root / "queries.jsonl", query, skip_bad=skip_bad)}
    qrels: Qrels = {}
    if split is not None:
        qrels_path = root / "qrels" / f"{split}.tsv"
        if not qrels_path.exists():
            available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            raise FileNotFoundError(
                f"{qrels_path}: no such split (available: {', '.join(available) or 'none'})"
            )
        qrels = read_qrels(qrels_path, skip_bad=skip_bad)
    return BeirDataset(corpus, queries, qrels)


def read_rankgpt(path: PathLike) -> list[Request]:
    """RankGPT's JSON layout (a list of ``{"query", "hits": [{"qid", "docid", "content", ...}]}``).

    The layout of RankGPT's released data (e.g. NovelEval); hits are kept in file order.
    """
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LineError(path, exc.lineno, f"invalid JSON ({exc.msg})") from None
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of {{query, hits}} objects")
    requests = []
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("query"), str)
            or not isinstance(item.get("hits"), list)
        ):
            raise ValueError(f"{where}: expected {{'query': str, 'hits': list}}")
        hits = item["hits"]
        qid = _identifier(hits[0].get("qid", i), f"{where}.hits[0].qid") if hits else str(i)
        candidates = [
            Candidate(
                parse_passage(
                    _identifier(h.get("docid"), f"{where}.hits[{j}].docid"), h, f"{where}.hits[{j}]"
                ),
                _score(h.get("score"), f"{where}.hits[{j}].score"),
            )
            for j, h in enumerate(hits)
        ]
        requests.append(Request(Query(qid, item["query"]), candidates))
    return requests
