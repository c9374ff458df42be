"""Dataset QC: reads every record of every split, validates it against the schema, reports what is wrong.

    python tools/check_dataset.py data/synth_talk/default/1.0.0 [--split train] [--max_report 20]

Exits 0 when every record is valid, 1 when some are not (each bad record is listed with its shard file and
position), 2 when the dataset itself cannot be opened (missing directory, missing or corrupt shard).
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from mirrortalk_jax.data import schema, sources


def check_split(dataset_dir: str, split: str) -> tuple[int, list[str]]:
    """Returns (number of records, descriptions of the bad ones)."""
    source = sources.ClipSource(dataset_dir, split)
    problems = []
    for i in tqdm(range(len(source)), desc=split, unit="clip"):
        try:
            source[i]
        except schema.RecordError as e:
            problems.append(str(e))
    return len(source), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir")
    parser.add_argument("--split", action="append", help="split(s) to check (default: all)")
    parser.add_argument("--max_report", type=int, default=20, help="bad records to list per split")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        info = sources.load_info(args.dataset_dir)
        splits = args.split or sorted(info.splits.keys())
        results = {split: check_split(args.dataset_dir, split) for split in splits}
    except (sources.DatasetError, FileNotFoundError) as e:
        print(f"check_dataset: {e}", file=sys.stderr)
        return 2
    bad_total = 0
    for split, (count, problems) in results.items():
        bad_total += len(problems)
        print(f"{split}: {count} records, {len(problems)} bad")
        for line in problems[:args.max_report]:
            print(f"  {line}")
        if len(problems) > args.max_report:
            print(f"  ... and {len(problems) - args.max_report} more")
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
