#!/usr/bin/env python3
"""The table of `make bench-cpu`: our CPU training step beside PyTorch's on the same model.

  tools/bench_cpu_table.py DIR [CASE ...]

Reads DIR/<case>-v3.json (`./v3 bench step --json`) and DIR/<case>-torch.json (bench/torch_step.py --json) for
each CASE (default: every case with either file, by name), prints one table and writes DIR/summary.json. Columns:
GFLOP/step (the model's counted FLOPs, from v3), v3 and PyTorch median s/step, ratio PyTorch/v3 (= torch_s / v3_s;
above 1 means v3 is faster), v3 GFLOP/s, that as a fraction of the SGEMM ceiling v3 measured in the same run, and
v3's peak RSS. A missing file or key shows as "-". Standard library only.
"""
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        print(f"bench_cpu_table: {path}: {e}; shown as missing", file=sys.stderr)
        return None


def num(d, key):
    v = (d or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def div(a, b):
    return a / b if a is not None and b else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    d = argv[1]
    cases = argv[2:]
    if not cases:
        names = os.listdir(d) if os.path.isdir(d) else []
        cases = sorted({n[:-len(s)] for n in names for s in ("-v3.json", "-torch.json") if n.endswith(s)})
    rows, notes = [], []
    for c in cases:
        v3, pt = load(os.path.join(d, f"{c}-v3.json")), load(os.path.join(d, f"{c}-torch.json"))
        r = {"case": c,
             "gflop_per_step": num(v3, "gflop_per_step"),
             "v3_s": num(v3, "median_s"),
             "torch_s": num(pt, "median_s"),
             "v3_gflops": num(v3, "gflops"),
             "sgemm_gflops": num(v3, "sgemm_gflops"),
             "v3_peak_rss_mb": num(v3, "peak_rss_mb"),
             "v3_frag_per_s": num(v3, "frag_per_s"),
             "torch_frag_per_s": num(pt, "frag_per_s"),
             "params_v3": (v3 or {}).get("params"),
             "params_torch": (pt or {}).get("params"),
             "torch_version": (pt or {}).get("torch_version"),
             "v3": v3, "torch": pt}
        r["ratio_torch_over_v3"] = div(r["torch_s"], r["v3_s"])
        r["sgemm_fraction"] = div(r["v3_gflops"], r["sgemm_gflops"])
        for side, j in (("v3", v3), ("pytorch", pt)):
            if j is None:
                notes.append(f"{c}: no {side} result")
        if v3 and pt:
            for k in ("params", "batch", "fragments_per_step", "threads"):
                if k in v3 and k in pt and v3[k] != pt[k]:
                    notes.append(f"{c}: {k} differ: v3 {v3[k]}, pytorch {pt[k]} (not the same work)")
        rows.append(r)

    head = ("case", "GFLOP/step", "v3 s/step", "PyTorch s/step", "PyTorch/v3", "v3 GFLOP/s", "of SGEMM",
            "v3 peak RSS MB")
    body = [(r["case"], fmt(r["gflop_per_step"], ".2f"), fmt(r["v3_s"], ".4f"), fmt(r["torch_s"], ".4f"),
             fmt(r["ratio_torch_over_v3"], ".2f"), fmt(r["v3_gflops"], ".1f"), fmt(r["sgemm_fraction"], ".0%"),
             fmt(r["v3_peak_rss_mb"], ".0f")) for r in rows]
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    for line in [head] + body:
        print("  ".join(line[0].ljust(w[0]) if i == 0 else x.rjust(w[i]) for i, x in enumerate(line)))
    for n in notes:
        print("note:", n)
    out = os.path.join(d, "summary.json")
    os.makedirs(d, exist_ok=True)
    with open(out, "w") as f:
        json.dump({"columns": "ratio_torch_over_v3 = torch_s / v3_s (above 1: v3 faster); "
                              "sgemm_fraction = v3_gflops / sgemm_gflops", "rows": rows, "notes": notes}, f, indent=1)
        f.write("\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
