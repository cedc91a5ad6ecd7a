#!/usr/bin/env python3
"""Summary rows of sweep runs (issue 18): for each run directory, the final test metrics (eval/results.json), the
validation hinge statistics (log.jsonl) and the first training step from which each V3 hinge stayed at 0.
With --windows W: per window of W training steps, the share of steps at which each hinge is exactly 0 and the
mean ratios F_c/S_c and S_s/F_s (what the hinges compare with the relativity r).
With --markdown: one RESULTS.md table row per run (codebook, probes, PR-AUC, then one-to-one within each style).
With --verdict: one RESULTS.md table row per verdict criterion: its threshold, each run's value, the mean +- sample
standard deviation over the runs (seeds), and on how many runs it passes; then the zero-shot OOD accuracy.
Usage: tools/sweep_table.py [--windows W | --markdown | --verdict] RUN [RUN ...]"""
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


def verdict(runs):
    res = [json.load(open(os.path.join(r, "eval", "results.json"))) for r in runs]
    names = [os.path.basename(r.rstrip("/")) for r in runs]
    print("| criterion | target | %s | mean +- sd | passes |" % " | ".join(names))
    print("|---|---|%s---|---|" % ("---|" * len(runs)))
    for i, c in enumerate(res[0]["verdict"]):
        rows = [x["verdict"][i] for x in res]
        if any(r["criterion"] != c["criterion"] for r in rows):
            sys.exit("sweep_table.py: the runs' verdicts list different criteria")
        judged = [r for r in rows if r["result"] in ("pass", "fail")]
        vals = [r["value"] for r in judged]
        if vals:
            m = sum(vals) / len(vals)
            sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
            ms = "%.2f +- %.2f" % (m, sd)
        else:
            ms = "n/a"
        cells = [("%.2f" % r["value"]) if r["result"] in ("pass", "fail") else "n/a" for r in rows]
        print("| %s | %s %g | %s | %s | %d of %d |" % (c["criterion"], ">=" if c["at_least"] else "<=", c["threshold"],
                                                   " | ".join(cells), ms, sum(r["result"] == "pass" for r in rows),
                                                   len(judged)))
    z = [x.get("ood", {}).get("zero_shot", {}).get("accuracy_authors") for x in res]
    if all(v is not None for v in z):
        m = sum(z) / len(z)
        print("| OOD zero-shot digit accuracy (authors' rule; chance 0.10) | | %s | %.2f | |"
              % (" | ".join("%.2f" % v for v in z), m))


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if args else 2)
    bad = [a for a in args if a.startswith("-") and a not in ("--markdown", "--windows", "--verdict")]
    if bad:
        sys.exit("sweep_table.py: unknown option %s (options: --windows W, --markdown, --verdict)" % bad[0])
    missing = [a for a in args if not a.startswith("-") and not a.isdigit()
               and not os.path.isfile(os.path.join(a, "log.jsonl"))]
    if missing:
        sys.exit("sweep_table.py: %s: not a training run directory (no log.jsonl)" % missing[0])
    if args[0] == "--verdict":
        verdict(args[1:])
        return
    if args[0] == "--markdown":
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
