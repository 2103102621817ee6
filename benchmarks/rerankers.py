"""The runtime against sentence-transformers and FlashRank on the MiniLM fixture.

    python benchmarks/rerankers.py [--run-dir runs/fixture] [--data data/scifact] [rrdistill bench options]

Builds (or reuses) the fine-tuned MiniLM cross-encoder fixture (benchmarks/fixture.py), measures its
``minilm-fp32`` / ``minilm-int8`` bundles from the run folder (``rrdistill bench`` exports them when
they are missing), and writes ``bench.json`` and ``bench.png`` there unless ``--json`` / ``--plot``
are given. Every other option goes to ``rrdistill bench`` (see ``rrdistill bench --help``), e.g.
``--queries 300`` for all SciFact test queries or ``--systems rrdistill-int8,st-torch``. Without
``--threads`` it measures at 1 and at 2 threads (the targets are set for both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrdistill.cli import app
from rrdistill.distill.students.trainer import ensure_fixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/fixture"), help="the fixture's folder")
    parser.add_argument("--data", default="data/scifact", help="BEIR folder (fixture training + benchmark)")
    args, rest = parser.parse_known_args()
    checkpoint = ensure_fixture(args.run_dir, args.data).path
    bench = ["bench", "--model", str(checkpoint), "--data", args.data]
    for precision in ("fp32", "int8"):
        bundle = args.run_dir / f"minilm-{precision}"
        if (bundle / "rrdistill.json").is_file():
            bench += ["--bundle", f"{precision}={bundle}"]
    if "--json" not in rest:
        bench += ["--json", str(args.run_dir / "bench.json")]
    if "--threads" not in rest:
        bench += ["--threads", "1", "--threads", "2"]
    if "--plot" not in rest:
        bench += ["--plot", str(args.run_dir / "bench.png")]
    app([*bench, *rest], prog_name="rrdistill")


if __name__ == "__main__":
    main()
