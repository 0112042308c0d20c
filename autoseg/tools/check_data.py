"""Check every image and mask of a dataset before training on it, and list every problem.

    autoseg check_data --dataset cityscapes --data-root data/cityscapes
    autoseg check_data --dataset folder --data-root data/mydata --num-classes 5 --split train

Decodes each image and mask once, as training reads them (pixels as stored: an EXIF orientation
tag is ignored for images and masks alike): truncated or damaged images, class ids the dataset
does not define, masks of another size than their image and images without a mask are all
reported. Every file-based dataset is checked (folder, cityscapes, voc, voc_aug, ade20k). The findings are cached
(next to the data, else in --cache-dir or the user's cache folder), so a second check reads only
the files that changed. Exit status 0 when every split is clean, 2 when there is any problem.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from autoseg.data import list_datasets
from autoseg.data.check import CheckReport, check_split
from autoseg.utils.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The data checker's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=list_datasets(), help="which dataset layout to check")
    parser.add_argument("--data-root", help="where the dataset lives (see the README for the layouts)")
    parser.add_argument("--split", nargs="+", default=["train", "val"], help="splits to check (default: train val)")
    parser.add_argument("--num-classes", type=int, help="number of classes (folder datasets)")
    parser.add_argument("--cache-dir", type=Path, help="where to cache the findings when the data folder is read-only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[CheckReport]:
    """Check the splits, print every problem and a summary; raises UserError if there are any."""
    args = parse_args(argv)
    reports = []
    for split in args.split:
        start = time.perf_counter()
        report = check_split(args.dataset, args.data_root, split, args.num_classes, args.cache_dir)
        for problem in report.problems:
            print(problem)
        files = (f"{report.files_read} of {report.files} file(s) read, the others known from the cache"
                 if report.files else "nothing to check beyond building it")
        print(f"{args.dataset} {split}: {report.samples} sample(s), {len(report.problems)} problem(s); {files}; "
              f"{time.perf_counter() - start:.1f} s")
        reports.append(report)
    total = sum(len(report.problems) for report in reports)
    if total:
        raise UserError(f"{total} problem(s) in the {args.dataset} data, listed above: fix or replace those files, "
                        "then check again")
    return reports

