#!/usr/bin/env python3
"""Times one training step of our model in PyTorch (float32, CPU), to set beside `./v3 bench step`.

  bench/torch_step.py --config C [--set KEY=VALUE ...] [--steps N] [--threads T] [--json FILE]

The model, loss and quantiser are tools/torch_reference.py's modules (imported, not copied): its V3Model built
from our YAML config, and its full_forward (training mode: BatchNorm batch statistics, VQ with the EMA codebook
update, reconstruction + commitment + the four V3 hinges, loss_config.tie_gradient as configured). The step is
the authors' training step (tools/authors_run.py): zero_grad(set_to_none), backward of the total loss,
torch.optim.AdamW over all parameters with the config's lr, betas, eps and weight decay.
Input: one random batch [batch_size, n_fragments, C, H, W], uniform in [-1, 1), fixed seed (the step's cost does
not depend on the values). The codebook starts from K distinct fragments' z_c of that batch (what k-means
initialisation would do, outside the timing); dead-code replacement is switched off (the reference does not model
it; it is rare and cheap). 2 warm-up steps, then N steps each timed with time.perf_counter around the whole step.
Prints one line and, with --json, writes: impl, torch_version, config, sets, threads, batch, fragments_per_step,
params (all parameters, bn_c/bn_s included: `./v3 info`'s total), params_trained, steps, median_s, min_s,
frag_per_s, peak_rss_mb. Needs torch, numpy and pyyaml (tools/setup.sh --torch makes .venv-torch/ with them).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import torch_reference as ref  # noqa: E402


def apply_set(cfg, assignment):
    """KEY=VALUE with a dotted KEY, as `v3 train --set`: the value is read as a YAML scalar (a string may carry
    its quotes); sections on the way are created where the file lacks them."""
    key, eq, val = assignment.partition("=")
    if not eq or not key:
        raise SystemExit(f"--set: expected KEY=VALUE such as optimizer_config.lr=5e-4, got '{assignment}'")
    if len(val) >= 2 and val[0] in "\"'" and val[-1] == val[0]:
        v = val[1:-1]
    else:
        try:
            v = yaml.safe_load(val) if val else None
        except yaml.YAMLError:
            v = val
        if isinstance(v, (dict, list)):
            raise SystemExit(f"--set: key '{key}': expected a single value, got '{val}'")
    node, parts = cfg, key.split(".")
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set: key '{key}': '{'.'.join(parts[:i + 1])}' is not a section")
    if isinstance(node.get(parts[-1]), dict):
        raise SystemExit(f"--set: key '{key}': expected a single value's key such as '{key}.<key>', got a section")
    node[parts[-1]] = v


def init_codebook(model, cfg, x):
    """Codewords = z_c of K distinct fragments of the batch (seeded), counts N/K each: a k-means-like start."""
    vq, cb = model.vq, model.vq._codebook
    with torch.no_grad():
        model.train(True)
        zc, _ = model.encoder(x.reshape(-1, *x.shape[2:]))
        if zc.shape[0] < vq.K:
            raise SystemExit(f"torch_step: {zc.shape[0]} fragments a step, fewer than the {vq.K} codewords")
        rows = torch.randperm(zc.shape[0], generator=torch.Generator().manual_seed(1))[:vq.K]
        n = zc.shape[0] / vq.K
        cb.embed.copy_(zc[rows][None])
        cb.embed_avg.copy_(zc[rows][None] * n)
        cb.cluster_size.fill_(n)
        cb.initted.fill_(1.0)
    vq.threshold = 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="our YAML config, e.g. configs/phonenums-cpu.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, as v3 train --set (repeatable)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default 10; 2 warm-up steps before)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2; 1 inter-op thread)")
    ap.add_argument("--json", metavar="FILE", help="also write the result here")
    a = ap.parse_args()
    if a.steps < 1 or a.threads < 1:
        raise SystemExit("torch_step: --steps and --threads must be at least 1")
    torch.set_num_interop_threads(1)  # before any parallel work
    torch.set_num_threads(a.threads)

    with open(a.config) as f:
        cfg = yaml.safe_load(f)
    for s in a.set:
        apply_set(cfg, s)
    arch = ref.arch_spec(cfg)
    mc, oc = cfg["model_config"], cfg.get("optimizer_config", {})
    B, nf = int(cfg["batch_size"]), int(mc["n_fragments"])

    torch.manual_seed(0)
    model = ref.V3Model(cfg).to(torch.float32)
    gx = torch.Generator().manual_seed(2)
    x = 2 * torch.rand(B, nf, arch["C"], arch["H"], arch["W"], generator=gx) - 1
    init_codebook(model, cfg, x)
    opt = torch.optim.AdamW(model.parameters(), lr=float(oc.get("lr", 1e-3)),
                            betas=(float(oc.get("beta1", 0.9)), float(oc.get("beta2", 0.999))),
                            eps=float(oc.get("eps", 1e-8)), weight_decay=float(oc.get("weight_decay", 0.01)))

    def step():
        out = ref.full_forward(model, cfg, x, True)
        opt.zero_grad(set_to_none=True)
        out["loss"]["total"].backward()
        opt.step()
        return out["loss"]["total"]

    for _ in range(2):
        loss = step()
    if not torch.isfinite(loss):
        raise SystemExit(f"torch_step: the loss is {float(loss)} after the warm-up steps")
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)

    med = statistics.median(times)
    res = {
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "config": a.config,
        "sets": a.set,
        "threads": a.threads,
        "batch": B,
        "fragments_per_step": B * nf,
        "params": sum(p.numel() for p in model.parameters()),
        "params_trained": sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("encoder.bn_c.", "encoder.bn_s."))),
        "steps": a.steps,
        "median_s": med,
        "min_s": min(times),
        "frag_per_s": B * nf / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    print(f"pytorch {torch.__version__} {a.config}{''.join(' --set ' + s for s in a.set)}: batch {B} x {nf} "
          f"fragments, {res['params']:,} params, {a.threads} threads: median {med:.4f} s/step (min {min(times):.4f}, "
          f"{a.steps} steps), {res['frag_per_s']:.1f} fragments/s, peak RSS {res['peak_rss_mb']:.0f} MB")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
