"""MirrorTalk vs baselines and ablations: the demo's pipeline with a chosen data size, budget and ablations.

    python benchmarks/mirrortalk_quality.py [--workdir runs/mirrortalk_quality] [--dataset_variant tiny]
        [--steps mirrortalk=800,style_encoder=600] [--ablations no_hsic,no_triplet,no_memory_bank,no_hier_mod]
        [--max_clips 0] [--num_steps 20]

Trains (or reuses / resumes) every stage under WORKDIR/runs, scores every method on the held-out splits with
evaluate.suite, and prints one JSON object (settings, seconds, results) and the Markdown results table on
stdout; progress goes to stderr. Methods, metrics and stages are documented in mirrortalk_jax/demo.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/mirrortalk_quality")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--dataset_dir", default="")
    parser.add_argument("--dataset_variant", default="tiny")
    parser.add_argument("--steps", default="", help="stage=steps,... (see mirrortalk demo --help)")
    parser.add_argument("--ablations", default="")
    parser.add_argument("--max_clips", type=int, default=0)
    parser.add_argument("--num_steps", type=int, default=20)
    parser.add_argument("--vshift", type=int, default=10)
    args = parser.parse_args(argv)

    from mirrortalk_jax import demo
    from mirrortalk_jax.evaluate import results_table, suite

    steps = demo.parse_steps(args.steps)
    settings = demo.DemoSettings(workdir=args.workdir, data_root=args.data_root, dataset_dir=args.dataset_dir,
                                 dataset_variant=args.dataset_variant, steps=steps, max_clips=args.max_clips,
                                 ablations=tuple(filter(None, args.ablations.split(","))),
                                 eval=suite.Settings(num_steps=args.num_steps, vshift=args.vshift))
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the report
        paths = demo.run(settings, log=lambda line: print(line, file=sys.stderr))
    table = results_table.read_json(paths["results_json"])
    report = {"benchmark": "mirrortalk_quality", "cpu_count": os.cpu_count(), "settings": repr(settings),
              "seconds_total": round(time.perf_counter() - start, 1), "notes": table.notes, "results": table.rows}
    print(json.dumps(report, default=str))
    print()
    print(table.to_markdown())
    return report


if __name__ == "__main__":
    main()
