#!/usr/bin/env python3
"""Summary rows of sweep runs (issue 18): for each run directory, the final test metrics (eval/results.json), the
validation hinge statistics (log.jsonl) and the first training step from which each V3 hinge stayed at 0.
With --windows W: per window of W training steps, the share of steps at which each hinge is exactly 0 and the
mean ratios F_c/S_c and S_s/F_s (what the hinges compare with the relativity r).
With --markdown: one RESULTS.md table row per run (codebook, probes, PR-AUC, then one-to-one within each style).
Usage: tools/sweep_table.py [--windows W | --markdown] RUN [RUN ...]"""
import json
import os
import sys


def first_zero_for_good(rows, key):
    """the step from which rows[key] is 0 at every later training step (None if it is not 0 at the end)"""
    at = None
    for r in rows:
        if r.get(key, 1.0) == 0.0:
            if at is None:
                at = r["step"]
        else:
            at = None
    return at


def row(run):
    res = json.load(open(os.path.join(run, "eval", "results.json")))
    log = [json.loads(l) for l in open(os.path.join(run, "log.jsonl")) if l.startswith("{")]
    train = [r for r in log if r.get("kind") == "train"]
    val = [r for r in log if r.get("kind") == "val"]
    sw = {}
    p = os.path.join(run, "sweep.json")
    if os.path.exists(p):
        sw = json.load(open(p))
    cb, lp, rt = res["codebook"], res["linear_probe"], res["retrieval"]
    auc = {k: v["auc"] for k, v in rt.items()}
    zero = {k: first_zero_for_good(train, k) for k in ("content", "style", "sample", "fragment")}
    v = val[-1] if val else {}
    return {
        "run": os.path.basename(run.rstrip("/")),
        "steps": train[-1]["step"] if train else 0,
        "train_s": sw.get("train_s"),
        "one_to_one": cb["one_to_one_accuracy"],
        "purity": cb["purity_authors"],
        "purity_w": cb["purity_weighted"],
        "atoms": cb["atoms_used"],
        "colour<-style": lp["style_from_style"],
        "digit<-style": lp["content_from_style"],
        "digit<-content": lp["content_from_content"],
        "colour<-content": lp["style_from_content"],
        "styleAUC col/dig": "%.2f/%.2f" % (auc["style_by_style"], auc["style_by_content"]),
        "contAUC dig/col": "%.2f/%.2f" % (auc["content_by_content"], auc["content_by_style"]),
        "val Fc/Sc": round(v["Fc"] / v["Sc"], 1) if v else None,
        "val Ss/Fs": round(v["Ss"] / v["Fs"], 1) if v else None,
        "hinge=0 from c/s/sa/f": "/".join(str(zero[k]) for k in ("content", "style", "sample", "fragment")),
        "sets": sw.get("sets", ""),
    }


def windows(run, w):
    rows = [json.loads(l) for l in open(os.path.join(run, "log.jsonl")) if '"train"' in l]
    print("%s: hinges at exactly 0 (share of steps) and mean ratios, per %d steps" % (run, w))
    last = rows[-1]["step"] if rows else 0
    for w0 in range(0, last, w):
        win = [r for r in rows if w0 < r["step"] <= w0 + w]
        if not win:
            continue
        fr = ["%s %.2f" % (k, sum(r[k] == 0 for r in win) / len(win)) for k in ("content", "style", "sample", "fragment")]
        fc = sum(r["Fc"] / r["Sc"] for r in win) / len(win)
        ss = sum(r["Ss"] / r["Fs"] for r in win) / len(win)
        print("  steps %5d-%5d  %s  Fc/Sc %.1f  Ss/Fs %.1f" % (w0 + 1, w0 + w, "  ".join(fr), fc, ss))


def markdown(run):
    res = json.load(open(os.path.join(run, "eval", "results.json")))
    cb, lp = res["codebook"], res["linear_probe"]
    auc = {k: v["auc"] for k, v in res["retrieval"].items()}
    per = cb.get("one_to_one_per_style") or []
    cells = ["%.2f" % cb["one_to_one_accuracy"], "%.2f" % cb["purity_authors"], str(cb["atoms_used"]),
             "%.2f" % lp["style_from_style"], "%.2f" % lp["content_from_style"], "%.2f" % lp["content_from_content"],
             "%.2f" % lp["style_from_content"], "%.2f / %.2f" % (auc["style_by_style"], auc["style_by_content"]),
             "%.2f / %.2f" % (auc["content_by_content"], auc["content_by_style"]),
             "%.2f" % cb.get("one_to_one_within_style", float("nan"))] + ["%.2f" % v for v in per]
    print("| %s | %s |" % (os.path.basename(run.rstrip("/")), " | ".join(cells)))


def main():
    args = sys.argv[1:]
    if args and args[0] == "--markdown":
        print("| run | one-to-one | purity | atoms | colour from style | digit from style | digit from content | "
              "colour from content | style PR-AUC colour / digit | content PR-AUC digit / colour | "
              "one-to-one within each colour | per colour ... |")
        for r in args[1:]:
            markdown(r)
        return
    if args and args[0] == "--windows":
        for r in args[2:]:
            windows(r, int(args[1]))
        return
    rows = [row(r) for r in args]
    for r in rows:
        print("  ".join("%s %s" % (k, ("%.3f" % v) if isinstance(v, float) else v) for k, v in r.items()))


if __name__ == "__main__":
    main()
