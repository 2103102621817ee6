"""Build the benchmark fixture: all-MiniLM-L6-v2 fine-tuned as a cross-encoder on SciFact train.

    python benchmarks/fixture.py [--run-dir runs/fixture] [--data data/scifact]

Trains once (a few minutes on 2 CPU cores) and caches the checkpoint under the run folder; later
calls return it at once. Prints the checkpoint path on stdout (progress and summary on stderr),
so scripts can do ``ckpt=$(python benchmarks/fixture.py)``.
"""

from __future__ import annotations

import argparse
import sys

from rrdistill.distill.students.trainer import ensure_fixture
from rrdistill.reporting import print_table, progress_bar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/fixture", help="where the checkpoint is cached")
    parser.add_argument("--data", default="data/scifact", help="BEIR folder with qrels/train.tsv")
    args = parser.parse_args(argv)
    with progress_bar() as bar:
        task = bar.add_task("fine-tuning all-MiniLM-L6-v2 on SciFact train", total=None)
        result = ensure_fixture(
            args.run_dir,
            args.data,
            progress=lambda step, total: bar.update(task, completed=step, total=total),
        )
        bar.update(task, visible=not result.cached)
    info = result.info
    config, data, timing, metrics = info["config"], info["data"], info["timing"], info["metrics"]
    print_table(
        "cross-encoder fixture" + (" (cached)" if result.cached else ""),
        ["", "value"],
        [
            ("checkpoint", str(result.path)),
            (
                "training data",
                f"{data['dataset']}/{data['split']}: {data['queries']} queries, "
                f"{data['positives']} positives, {data['negatives']} BM25 hard negatives",
            ),
            ("loss / max_length / epochs", f"{config['loss']} / {config['max_length']} / {config['epochs']}"),
            (
                "batch / learning rate / seed",
                f"{config['batch_size']} / {config['learning_rate']} / {config['seed']}",
            ),
            ("steps", str(metrics["steps"])),
            ("loss first → last", f"{metrics['loss_first']:.4f} → {metrics['loss_last']:.4f}"),
            ("training time", f"{timing['train_seconds']:.0f} s (total {timing['total_seconds']:.0f} s)"),
        ],
    )
    print(result.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
