#!/usr/bin/env python3
"""Train the authors' own V3 code (their modules, their V3Loss, vector-quantize-pytorch 1.18.0) on one of our
PhoneNums sets with the settings of one of our configs, to compare their training with ours step for step.
Their code is imported from a checkout you provide; nothing of it is copied here.

Subcommands
  train --authors-repo DIR --data DATA --config CFG --out OUT [--seed S] [--steps N] [--threads T] [--dump]
      Trains like their trainer.py (AdamW over all parameters, the exponential schedule stepped per epoch, shuffled
      batches of whole pages) for N steps and writes
        OUT/log.jsonl        per step: every loss term, F_c S_c F_s S_s, the tie counts (pairs of fragments of a
                             page on the same code, pairs of pages with the same code multiset) and the codes used;
                             per epoch: the validation loss
        OUT/final.safetensors, OUT/best.safetensors   their state_dict (final; lowest validation loss among the
                             epochs our trainer would validate), for `v3 import` and `v3 eval`
      loss_config.tie_gradient of CFG picks their code's tie behaviour: pytorch = their code as it is; zero = their
      V3Loss fed the exact codewords in float64 (q + (z - z.detach())), so equal codes are at distance 0 exactly.
      --dump: the codebook is k-means-initialised on one batch before the first step (outside the step, so that
      our side can start from the same codebook), the initial state is written to OUT/init.safetensors and every
      step's batch and learning rate to OUT/batches.bin, for `tools/replay` (tools/replay.c) to run our step on.
  compare A.jsonl B.jsonl [--steps 1,2,5,...]
      Prints the loss terms and tie counts of two logs (this tool's or tools/replay's) side by side.

Needs torch, torchvision, pillow, numpy, pyyaml, safetensors, einops, einx and vector-quantize-pytorch==1.18.0
(PyPI). NOTES.md, "Ties in the quantised codes", has the runs made with it.
"""
import argparse
import json
import os
import struct
import sys
import tempfile
import time


def our_config(path):
    import yaml
    with open(path) as f:
        c = yaml.safe_load(f)
    mc, oc, lc = c["model_config"], c["optimizer_config"], c["loss_config"]
    if mc.get("arch", "phonenums") != "phonenums":
        raise SystemExit(f"{path}: model_config.arch: this tool runs the authors' PhoneNums modules only")
    ties = lc.get("tie_gradient", "pytorch")
    if ties not in ("pytorch", "zero"):
        raise SystemExit(f"{path}: loss_config.tie_gradient: expected 'pytorch' or 'zero', got {ties!r}")
    return c, mc, oc, lc, ties


def link_pages(data, tmp):
    """Their loader reads DIR/<split>/<digits>_<colour>.png; link our pages under those names."""
    n = 0
    with open(os.path.join(data, "index.tsv")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            name, split, digits, _, colour = line.split()
            d = os.path.join(tmp, split)
            os.makedirs(d, exist_ok=True)
            dst = os.path.join(d, f"{digits}_{colour}.png")
            if os.path.exists(dst):
                raise SystemExit(f"{data}: two {split} pages read {digits}_{colour}; their loader cannot tell them apart")
            os.symlink(os.path.abspath(os.path.join(data, "pages", name)), dst)
            n += 1
    return n


def tie_counts(ind, B):
    I = ind.reshape(B, -1)
    fq = sum(int((I[b][:, None] == I[b][None, :]).sum() - I.shape[1]) // 2 for b in range(B))
    ms = [tuple(sorted(I[b].tolist())) for b in range(B)]
    sq = sum(1 for i in range(B) for j in range(i + 1, B) if ms[i] == ms[j])
    return fq, sq, len(set(I.flatten().tolist()))


def train(a):
    import numpy as np
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, os.path.abspath(a.authors_repo))
    from dataloader.phonenums_dataloader import get_dataloader
    from model.factory import get_model
    from model.v3_loss import V3Loss
    from utils.training_utils import exponential_decay_with_warmup, setup_seed

    c, mc, oc, lc, ties = our_config(a.config)
    torch.set_num_threads(a.threads)
    setup_seed(a.seed)
    model_cfg = {k: mc[k] for k in ("n_channels", "n_fragments", "fragment_len", "n_feature", "d_emb_c", "d_emb_s",
                                    "n_atoms", "threshold_ema_dead_code", "vq_ema_decay")}
    model = get_model("phonenums_dataloader", model_cfg)
    tmp = tempfile.mkdtemp(prefix="v3_authors_data_")
    link_pages(a.data, tmp)
    B, nf = int(c["batch_size"]), int(mc["n_fragments"])
    train_dl = get_dataloader(os.path.join(tmp, "train"), batch_size=B, n_fragments=nf,
                              fragment_len=int(mc["fragment_len"]), num_workers=0, shuffle=True)
    val_dl = get_dataloader(os.path.join(tmp, "val"), batch_size=B, n_fragments=nf,
                            fragment_len=int(mc["fragment_len"]), num_workers=0, shuffle=False)
    opt = torch.optim.AdamW(model.parameters(), lr=float(oc["lr"]), betas=(float(oc["beta1"]), float(oc["beta2"])),
                            weight_decay=float(oc["weight_decay"]))
    if oc.get("scheduler", "exponential_decay") != "exponential_decay":
        raise SystemExit(f"{a.config}: optimizer_config.scheduler: this tool runs exponential_decay only")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: exponential_decay_with_warmup(
        e, float(oc["lr_decay_factor"]), float(oc["lr_decay_epochs"]), float(oc["lr_decay_min_factor"]),
        float(oc.get("warmup_epochs", 0)), float(oc.get("warmup_factor", 0.1))))
    loss = V3Loss({"weights": lc["weights"], "relativity": lc["relativity"]})
    cb = model.vq._codebook
    captured = {}
    cb_forward = cb.forward

    def capture(*args, **kw):  # the codewords before the straight-through step (for tie_gradient zero)
        out = cb_forward(*args, **kw)
        captured["q"] = out[0].detach()
        return out
    cb.forward = capture

    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "log.jsonl"), "w")
    dump = None
    if a.dump:
        x0 = next(iter(train_dl))[0]
        keep = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            model.train()
            z0, _ = model.encoder(x0)
            cb.init_embed_(z0.reshape(1, -1, z0.shape[-1]).float())
            for k, v in model.state_dict().items():  # BN running statistics as before the extra forward
                if not k.startswith("vq."):
                    v.copy_(keep[k])
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(a.out, "init.safetensors"))
        dump = open(os.path.join(a.out, "batches.bin"), "wb")
        dump.write(b"V3RB" + struct.pack("<i", 1))
    val_every = int(c.get("val_every_n_epochs", 1))
    step, epoch, best, t0 = 0, 0, None, time.time()
    while step < a.steps:
        model.train()
        for x, _, _ in train_dl:
            if dump:
                dump.write(struct.pack("<f5i", opt.param_groups[0]["lr"], *x.shape))
                dump.write(x.numpy().astype(np.float32).tobytes())
            out, zc, zcq, ind, commit, zs = model(x)
            if ties == "zero":
                zd = zc.double()
                zcq = captured["q"].reshape(zc.shape).double() + (zd - zd.detach())
            L = loss.compute_loss(out, zc, zcq, commit, zs, x)
            opt.zero_grad(set_to_none=True)
            L["total_loss"].backward()
            opt.step()
            step += 1
            fq, sq, used = tie_counts(ind, x.shape[0])
            rec = {"step": step, "epoch": epoch, "lr": opt.param_groups[0]["lr"]}
            rec.update({k.replace("_loss", ""): float(v) for k, v in L.items()})
            with torch.no_grad():  # the statistics, recomputed for the log
                from model.v3_loss import mpd
                rec.update(Fc=float(torch.mean(mpd(zc) / 2 + mpd(zcq) / 2)),
                           Sc=float(mpd(zc.mean(1)) / 2 + mpd(zcq.mean(1)) / 2),
                           Fs=float(torch.mean(mpd(zs))), Ss=float(mpd(zs.mean(1))))
            rec.update(fq_ties=fq, sq_ties=sq, used=used)
            log.write(json.dumps(rec) + "\n")
            if step >= a.steps:
                break
        if epoch % val_every == 0 or step >= a.steps:
            model.eval()
            vl, nb = 0.0, 0
            with torch.no_grad():
                for x, _, _ in val_dl:
                    out, zc, zcq, ind, commit, zs = model(x)
                    vl += float(loss.compute_loss(out, zc, zcq, commit, zs, x)["total_loss"])
                    nb += 1
            vl /= nb
            log.write(json.dumps({"kind": "val", "step": step, "epoch": epoch, "loss": vl}) + "\n")
            log.flush()
            if best is None or vl < best[0]:
                best = (vl, step)
                save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                          os.path.join(a.out, "best.safetensors"))
        sched.step()
        epoch += 1
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(a.out, "final.safetensors"))
    if dump:
        dump.close()
    print(f"authors_run: {step} steps in {time.time() - t0:.0f} s; best validation loss {best[0]:.5f} at step "
          f"{best[1]}; {a.out}")


def compare(a):
    def load(p):
        return {r["step"]: r for r in map(json.loads, open(p)) if r.get("kind", "train") == "train"}
    A, B = load(a.a), load(a.b)
    steps = [int(s) for s in a.steps.split(",")] if a.steps else sorted(set(A) & set(B))
    keys = ["total", "recon", "content", "style", "sample", "fragment", "Fc", "Sc", "Fs", "Ss"]
    print("step  " + "  ".join(f"{k:>21}" for k in keys) + "   fq_ties    used")
    for s in steps:
        if s in A and s in B:
            r, q = A[s], B[s]
            print(f"{s:4d}  " + "  ".join(f"{r[k]:10.5g}/{q[k]:<10.5g}" for k in keys) +
                  f"  {r['fq_ties']:3d}/{q['fq_ties']:<3d}  {r['used']:2d}/{q['used']:<2d}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--authors-repo", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--config", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--dump", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--steps", default="")
    a = p.parse_args()
    train(a) if a.cmd == "train" else compare(a)


if __name__ == "__main__":
    main()
