#!/usr/bin/env python3
"""Markdown tables for RESULTS.md from `v3 eval` results.json files (standard library only).

usage: tools/results_table.py NAME=RESULTS.json[,RESULTS.json...] ...
Each NAME is one row; several files (seeds) give "mean ± sd" (sample standard deviation) and the per-seed values.
"""
import json
import statistics
import sys

COLUMNS = [  # (header, path in results.json)
    ("purity (authors)", "codebook.purity_authors"),
    ("purity (weighted)", "codebook.purity_weighted"),
    ("one-to-one", "codebook.one_to_one_accuracy"),
    ("PR-AUC content by content", "retrieval.content_by_content.auc"),
    ("PR-AUC content by style", "retrieval.content_by_style.auc"),
    ("PR-AUC style by style", "retrieval.style_by_style.auc"),
    ("PR-AUC style by content", "retrieval.style_by_content.auc"),
    ("probe content<-content", "linear_probe.content_from_content"),
    ("probe style<-style", "linear_probe.style_from_style"),
    ("probe style<-content", "linear_probe.style_from_content"),
    ("probe content<-style", "linear_probe.content_from_style"),
    ("OOD 0-shot (majority map)", "ood.zero_shot.accuracy_majority_map"),
    ("OOD 10-shot (majority map)", "ood.few_shot.10_shot.accuracy.accuracy_majority_map"),
    ("OOD 0-shot (authors)", "ood.zero_shot.accuracy_authors"),
    ("OOD 10-shot (authors)", "ood.few_shot.10_shot.accuracy.accuracy_authors"),
]


def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    sd = statistics.stdev(values)
    return f"{statistics.mean(values):.3f} ± {sd:.3f} ({', '.join(f'{v:.2f}' for v in values)})"


def main(argv):
    if not argv or any("=" not in a for a in argv):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    rows = []
    for arg in argv:
        name, files = arg.split("=", 1)
        results = []
        for f in files.split(","):
            with open(f) as fh:
                results.append(json.load(fh))
        rows.append((name, results))
    # Transposed (one metric per line) so that several runs fit side by side.
    print("| metric | " + " | ".join(name for name, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for header, path in COLUMNS:
        print(f"| {header} | " + " | ".join(cell([get(r, path) for r in res]) for _, res in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
