#!/usr/bin/env python3
"""An independent PyTorch reference of the V3 model, loss, quantiser and optimiser step, written from the
project's spec (docs: /work/shared/specs/v3.md sections 2-5), not from the authors' code.

Subcommands
  golden --out-dir tests/golden [--seed S] [--device cpu|cuda]
      Writes the golden files the C tests compare against (tests/test_golden.c, tests/gpu/test_gpu_golden.c):
        tiny_golden.yaml          the config (our config_load reads it)
        tiny_model.safetensors    the initial state_dict (F32) under the authors' names, shapes and layouts
                                  (this is what our weights_import loads)
        tiny_golden.safetensors   input x, one training step's forward outputs, loss terms, parameter gradients,
                                  parameters after one AdamW step, BN running statistics and VQ state after the
                                  step, and an eval-mode forward after the step (see GOLDEN CONTENTS below).
      Everything is computed in float64 from float32 weights and inputs (cast exactly).
  verify-export --weights W.safetensors --config cfg.yaml --probe P.safetensors [--device cpu|cuda]
      Loads weights written by `./v3 export` with load_state_dict(strict=True), runs the eval-mode encode and
      decode on the probe's x and compares with the probe's z_c, z_s, q, ind, xhat (our outputs); prints max abs
      and relative errors and exits 1 beyond the tolerances (exit 2 on a usage/format error).

Needs only torch, numpy and pyyaml, and safetensors for verify-export (imported there, so bench/torch_step.py,
which imports this file's modules, runs without it).

GOLDEN CONTENTS (tiny_golden.safetensors; B samples x n fragments, N = B*n, fragment index b*n+k)
  x                 [B,n,C,H,W] F32   input
  z_c, z_s, q       [B,n,d]     F64   training forward (BN batch statistics); q = codebook rows (STE value)
  ind               [B,n]       I64   codeword index per fragment
  xhat              [B,n,C,H,W] F32   decoder output (computed in F64, stored F32 to keep the file small)
  loss.<t>          [1]         F64   t in recon commit content style sample fragment total F_c S_c F_s S_s
  grad.<param>      PyTorch shape F32 gradient of loss.total for every trainable parameter (computed in F64)
  after.<param>     F32         every trainable parameter after one AdamW step (computed in F64; stored F32 for
                                  size: half an ulp, as small as the rounding of our own float32 result)
  after.<bn>.running_mean/var F64 BN running statistics after the training forward
  after.vq._codebook.{cluster_size,embed_avg,embed} F64 codebook state after the EMA update
  eval.z_c, eval.z_s, eval.q [B,n,d] F64, eval.ind [B,n] I64, eval.loss.<t> [1] F64 (commit is 0 in eval):
                    eval-mode forward of the same x after the step (BN running statistics, VQ not updated)
  eval.xhat         [1,n,C,H,W] F32   eval-mode decoder output of the FIRST SAMPLE only (file size)
  The `__metadata__` records the torch version, the command line and the checks made (VQ gaps, hinge ratios).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
V3_EPS = 1e-5          # epsilon in the V3 ratios (spec section 3)
VQ_LAPLACE_EPS = 1e-5  # Laplace smoothing epsilon (spec section 4)


# ------------------------------------------------------------------------------------------------- architecture
def arch_spec(cfg):
    """Spec section 2 table (+ our `tiny` architecture, NOTES.md). Returns dict with C, H, W, e1, e2, d2, d1 and the
    bottleneck. EncSpec = (cin, ch, L, nb, (kh, kw), (sh, sw)); DecSpec = (ch, cout, L, nb, (kh, kw), (uh, uw))."""
    mc = cfg["model_config"]
    arch = mc.get("arch")
    if arch is None:
        dl = str(cfg.get("dataloader", ""))
        for sub in ("phonenums", "insnotes", "svhn", "sprites", "tiny"):
            if sub in dl:
                arch = sub
                break
        else:
            arch = "phonenums"
    nc = int(mc.get("n_channels", 256))
    H = int(mc.get("n_feature", 48))      # rows (the authors' "W" naming trap, spec section 1)
    W = int(mc.get("fragment_len", 32))   # columns
    if arch == "insnotes":
        C = 1
        e1 = (1, nc // 16, 3, 2, (9, 3), (2, 2))
        e2 = (nc // 16, nc, 4, 2, (5, 3), (2, 1))
        d2 = (nc, nc // 16, 4, 2, (5, 3), (2, 1))
        d1 = (nc // 16, 1, 3, 2, (9, 3), (2, 2))
    elif arch in ("phonenums", "sprites", "svhn"):
        C = 3
        nb = 3 if arch == "svhn" else 2
        e1 = (3, nc // 4, 2, nb, (5, 5), (2, 2))
        e2 = (nc // 4, nc, 2, nb, (5, 5), (2, 2))
        d2 = (nc, nc // 4, 2, nb, (5, 5), (2, 2))
        d1 = (nc // 4, 3, 2, nb, (5, 5), (2, 2))
    elif arch == "tiny":
        C = 3
        e1 = (3, nc // 4, 1, 1, (3, 3), (2, 2))
        e2 = (nc // 4, nc, 1, 1, (3, 3), (2, 2))
        d2 = (nc, nc // 4, 1, 1, (3, 3), (2, 2))
        d1 = (nc // 4, 3, 1, 1, (3, 3), (2, 2))
    else:
        raise SystemExit(f"unknown architecture {arch!r}")
    cin = int(mc.get("in_channels", 0) or 0)
    if cin > 0:
        C = cin
        e1 = (cin,) + e1[1:]
        d1 = d1[:1] + (cin,) + d1[2:]
    h, w = H, W
    for e in (e1, e2):
        for _ in range(e[2]):
            h = (h + e[5][0] - 1) // e[5][0]
            w = (w + e[5][1] - 1) // e[5][1]
    return dict(arch=arch, C=C, H=H, W=W, e1=e1, e2=e2, d2=d2, d1=d1, bc=e2[1], bh=h, bw=w,
                dc=int(mc.get("d_emb_c", 512)), ds=int(mc.get("d_emb_s", 512)), K=int(mc.get("n_atoms", 10)))


class ResBlock(nn.Module):
    """ResBlock (Conv2d) or ResBlockT (ConvTranspose2d, stride 1), spec section 2. Names conv_0, bn_0, conv_1, bn_1,
    shortcut.0 (1x1 conv), shortcut.1 (BN) as in the state_dict."""

    def __init__(self, cin, cout, k, stride, transposed):
        super().__init__()
        pad = (k[0] // 2, k[1] // 2)
        if transposed:
            assert stride == (1, 1)
            mid = cin
            self.conv_0 = nn.ConvTranspose2d(cin, mid, k, 1, pad)
            self.conv_1 = nn.ConvTranspose2d(mid, cout, k, 1, pad)
        else:
            mid = cout
            self.conv_0 = nn.Conv2d(cin, mid, k, stride, pad)
            self.conv_1 = nn.Conv2d(mid, cout, k, 1, pad)
        self.bn_0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.bn_1 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        if cin != cout:
            sc = nn.ConvTranspose2d(cin, cout, 1, 1, 0) if transposed else nn.Conv2d(cin, cout, 1, stride, 0)
            self.shortcut = nn.Sequential(sc, nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM))
        else:
            self.shortcut = None

    def forward(self, x):
        y = F.gelu(self.bn_0(self.conv_0(x)))          # exact (erf) GELU
        y = self.bn_1(self.conv_1(y))
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.gelu(y + s)


def enc_cnn(spec):
    cin, ch, L, nb, k, s = spec
    f = ch >> L
    seq = nn.Sequential()
    seq.add_module("0", nn.Conv2d(cin, f, k, 1, (k[0] // 2, k[1] // 2)))
    seq.add_module("1", nn.BatchNorm2d(f, eps=BN_EPS, momentum=BN_MOMENTUM))
    seq.add_module("2", nn.GELU())
    for j in range(nb):
        seq.add_module(f"resblock_start_{j}", ResBlock(f, f, k, (1, 1), False))
    for i in range(L):
        ci, co = f << i, f << (i + 1)
        seq.add_module(f"resblock_{i}_0", ResBlock(ci, co, k, s, False))
        for j in range(1, nb):
            seq.add_module(f"resblock_{i}_{j}", ResBlock(co, co, k, (1, 1), False))
    return seq


def dec_cnn(spec):
    ch, cout, L, nb, k, up = spec
    seq = nn.Sequential()
    for i in range(L):
        ci, co = ch >> i, ch >> (i + 1)
        for j in range(nb - 1):
            seq.add_module(f"resblock_{i}_{j}", ResBlock(ci, ci, k, (1, 1), True))
        seq.add_module(f"resblock_{i}_{nb - 1}", ResBlock(ci, co, k, (1, 1), True))
        seq.add_module(f"upsample_{i}", nn.Upsample(scale_factor=up, mode="nearest"))
    f = ch >> L
    for j in range(nb):
        seq.add_module(f"resblock_end_{j}", ResBlock(f, f, k, (1, 1), True))
    seq.add_module("output_conv", nn.ConvTranspose2d(f, cout, k, 1, (k[0] // 2, k[1] // 2)))
    return seq


class Encoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.dc, self.ds = a["dc"], a["ds"]
        flat = a["bc"] * a["bh"] * a["bw"]
        self.cnn_1 = enc_cnn(a["e1"])
        self.cnn_2 = enc_cnn(a["e2"])
        self.linear_1 = nn.Linear(flat, self.dc + self.ds)
        self.linear_c = nn.Linear(self.dc, self.dc)
        self.linear_s = nn.Linear(self.ds, self.ds)
        self.bn_c = nn.BatchNorm1d(self.dc)   # exists in the authors' model, never used (spec section 8.1)
        self.bn_s = nn.BatchNorm1d(self.ds)

    def forward(self, x):
        h = self.cnn_2(self.cnn_1(x))
        h = F.gelu(self.linear_1(h.reshape(h.shape[0], -1)))
        return self.linear_c(h[:, :self.dc]), self.linear_s(h[:, self.dc:])


class Decoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.bshape = (a["bc"], a["bh"], a["bw"])
        flat = a["bc"] * a["bh"] * a["bw"]
        self.linear_c = nn.Linear(a["dc"], a["dc"])
        self.linear_s = nn.Linear(a["ds"], a["ds"])
        self.linear_0 = nn.Linear(a["dc"] + a["ds"], flat)
        self.cnn_transpose_2 = dec_cnn(a["d2"])
        self.cnn_transpose_1 = dec_cnn(a["d1"])

    def forward(self, q, zs):
        h = torch.cat([F.gelu(self.linear_c(q)), F.gelu(self.linear_s(zs))], dim=1)  # content first
        h = F.gelu(self.linear_0(h)).reshape(q.shape[0], *self.bshape)
        return self.cnn_transpose_1(self.cnn_transpose_2(h))


class Codebook(nn.Module):
    """EMA codebook buffers in vector-quantize-pytorch 1.18.0's shapes (one codebook: leading dim 1)."""

    def __init__(self, K, d):
        super().__init__()
        self.register_buffer("initted", torch.zeros(1))
        self.register_buffer("cluster_size", torch.ones(1, K))
        self.register_buffer("embed_avg", torch.zeros(1, K, d))
        self.register_buffer("embed", torch.zeros(1, K, d))


class VQ(nn.Module):
    def __init__(self, K, d, decay, threshold):
        super().__init__()
        self._codebook = Codebook(K, d)
        self.K, self.d, self.decay, self.threshold = K, d, decay, threshold


class StraightThrough(torch.autograd.Function):
    """Forward value = the codeword exactly; backward = identity to z. What the V3 statistics see in training with
    loss_config.tie_gradient: zero (and what the decoder sees with either rule)."""

    @staticmethod
    def forward(ctx, z, q):
        return q.clone()

    @staticmethod
    def backward(ctx, g):
        return g, None


class StraightThroughF32(torch.autograd.Function):
    """tie_gradient: pytorch. Forward value = z + (q - z) formed in float32 from z and q rounded to float32, as the
    authors' float32 training forms x + (quantize - x).detach() (NOTES.md, "Ties in the quantised codes"): equal
    codewords then differ by rounding and the norm's gradient gives them unit-length pushes. Backward = identity to
    z (in this reference's float64)."""

    @staticmethod
    def forward(ctx, z, q):
        z32 = z.to(torch.float32)
        return (z32 + (q.to(torch.float32) - z32)).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        return g, None


def tie_gradient(cfg):
    v = cfg.get("loss_config", {}).get("tie_gradient", "pytorch")
    if v not in ("pytorch", "zero"):
        raise SystemExit(f"loss_config.tie_gradient: expected 'pytorch' or 'zero', got {v!r}")
    return v


def vq_assign(x, embed):
    """Euclidean nearest codeword; torch.argmin returns the first (lowest) index on ties. Also returns the gap
    (d2 - d1) / d2 between the nearest and second-nearest distance of every row."""
    diff = x[:, None, :] - embed[None, :, :]
    dist = (diff * diff).sum(-1)
    ind = torch.argmin(dist, dim=1)
    srt = torch.sort(dist, dim=1).values.sqrt()
    gap = (srt[:, 1] - srt[:, 0]) / srt[:, 1].clamp_min(1e-300) if embed.shape[0] > 1 else torch.ones_like(srt[:, 0])
    return ind, gap


def vq_forward(vq, z, train, ties="zero"):
    """Spec section 4 with an initialised codebook (k-means init is not modelled: the golden step starts from a
    given codebook with initted = 1). Returns q (STE: the codewords, which the decoder gets), q_stats (what the V3
    statistics get: q, or in training with ties "pytorch" the float32 straight-through value), ind, commitment loss
    (0 in eval), gaps."""
    cb = vq._codebook
    if float(cb.initted[0]) == 0.0:
        raise SystemExit("torch_reference: codebook not initialised (k-means init is not modelled here)")
    embed = cb.embed[0].detach()
    ind, gap = vq_assign(z.detach(), embed)
    qv = embed[ind]                                   # codebook before this step's update
    q = StraightThrough.apply(z, qv)
    if not train:  # the eval-mode quantiser returns the codewords
        return q, q, ind, torch.zeros((), dtype=z.dtype, device=z.device), gap
    q_stats = StraightThroughF32.apply(z, qv) if ties == "pytorch" else q
    commit = ((qv - z) ** 2).mean()
    with torch.no_grad():                             # EMA update with Laplace smoothing
        lam = vq.decay
        onehot = F.one_hot(ind, vq.K).to(z.dtype)
        cnt = onehot.sum(0)
        sums = onehot.t() @ z.detach()
        cs = lam * cb.cluster_size[0] + (1 - lam) * cnt
        ea = lam * cb.embed_avg[0] + (1 - lam) * sums
        tot = cs.sum()
        nk = (cs + VQ_LAPLACE_EPS) / (tot + vq.K * VQ_LAPLACE_EPS) * tot
        cb.cluster_size.copy_(cs[None])
        cb.embed_avg.copy_(ea[None])
        cb.embed.copy_((ea / nk[:, None])[None])
        if vq.threshold > 0 and bool((cs < vq.threshold).any()):
            raise SystemExit("torch_reference: a dead code would be replaced (random rows; not modelled here)")
    return q, q_stats, ind, commit, gap


class V3Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        a = arch_spec(cfg)
        mc = cfg["model_config"]
        self.a = a
        self.encoder = Encoder(a)
        self.decoder = Decoder(a)
        self.vq = VQ(a["K"], a["dc"], float(mc.get("vq_ema_decay", 0.98)),
                     float(mc.get("threshold_ema_dead_code", 16)))


# ------------------------------------------------------------------------------------------------------- loss
def pair_dist(X):
    """Pairwise Euclidean distances of rows [..., m, d] -> [..., m, m], with gradient 0 where the distance is 0
    (the zero subgradient of spec section 3): sqrt is only evaluated, and differentiated, where s > 0."""
    diff = X[..., :, None, :] - X[..., None, :, :]
    s = (diff * diff).sum(-1)
    pos = s > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), torch.zeros_like(s))


def mpd(X):
    m = X.shape[-2]
    return pair_dist(X).sum((-1, -2)) / (m * (m - 1))


def v3_terms(zc, q, zs, B, n, r, w):
    """zc, q [B*n, dc], zs [B*n, ds]; spec section 3 (no supersampling)."""
    Zc, Q, Zs = zc.reshape(B, n, -1), q.reshape(B, n, -1), zs.reshape(B, n, -1)
    Fc = (0.5 * mpd(Zc) + 0.5 * mpd(Q)).mean()
    Sc = 0.5 * mpd(Zc.mean(1)) + 0.5 * mpd(Q.mean(1))
    Fs = mpd(Zs).mean()
    Ss = mpd(Zs.mean(1))

    def h(t):
        return F.relu(r - t) / r

    ratios = dict(content=Fc / (Sc + V3_EPS), style=Ss / (Fs + V3_EPS), sample=Ss / (Sc + V3_EPS),
                  fragment=Fc / (Fs + V3_EPS))
    terms = {k: h(v) for k, v in ratios.items()}
    weighted = sum(w[k] * terms[k] for k in terms)
    return dict(F_c=Fc, S_c=Sc, F_s=Fs, S_s=Ss, **terms), weighted, {k: float(v.detach()) for k, v in ratios.items()}


def loss_weights(cfg):
    lw = cfg.get("loss_config", {}).get("weights", {})
    return dict(recon=float(lw.get("recon_loss", 1)), content=float(lw.get("content_loss", 1)),
                style=float(lw.get("style_loss", 1)), sample=float(lw.get("sample_loss", 1)),
                fragment=float(lw.get("fragment_loss", 1)), commit=float(lw.get("commit_loss", 0.1)))


def full_forward(model, cfg, x, train):
    """x [B, n, C, H, W]. Returns dict of outputs and loss terms (total included)."""
    B, n = x.shape[0], x.shape[1]
    model.train(train)
    xf = x.reshape(B * n, *x.shape[2:])
    zc, zs = model.encoder(xf)
    q, q_stats, ind, commit, gap = vq_forward(model.vq, zc, train, tie_gradient(cfg))
    xhat = model.decoder(q, zs)
    recon = ((xhat - xf) ** 2).mean()
    w = loss_weights(cfg)
    r = float(cfg.get("loss_config", {}).get("relativity", 15))
    if cfg.get("loss_config", {}).get("supersample_content"):
        raise SystemExit("torch_reference: supersample_content is not modelled")
    terms, weighted, ratios = v3_terms(zc, q_stats, zs, B, n, r, w)
    total = w["recon"] * recon + weighted + w["commit"] * commit
    out = dict(zc=zc, zs=zs, q=q, ind=ind, xhat=xhat, gap=gap, ratios=ratios)
    out["loss"] = dict(recon=recon, commit=commit, total=total, **terms)
    return out


# ---------------------------------------------------------------------------------------------------- AdamW
def adamw_step(params, lr, b1, b2, eps, wd):
    """One AdamW step from zero moments (t = 1), written out (spec section 5): decoupled decay, bias correction."""
    t = 1
    with torch.no_grad():
        for p in params:
            g = p.grad
            m = (1 - b1) * g
            v = (1 - b2) * g * g
            mhat = m / (1 - b1 ** t)
            vhat = v / (1 - b2 ** t)
            p.mul_(1 - lr * wd)
            p.sub_(lr * mhat / (vhat.sqrt() + eps))


# --------------------------------------------------------------------------------------------------- golden
ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def save_file(tensors, path, metadata):
    """A safetensors file with a deterministic byte layout (safetensors' own writer orders the metadata
    differently from run to run): header keys sorted ("__metadata__" first), tensors in name order, contiguous,
    header padded with spaces to a multiple of 8."""
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        b = t.numpy().tobytes()  # little-endian on the machines we run on
        assert sys.byteorder == "little"
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


GOLDEN_YAML = """\
# Golden-test configuration written by tools/torch_reference.py golden (do not edit: regenerate).
# The PhoneNums architecture family at width n_channels 16, d_emb 8, K 4, B 3 x n 4 fragments of 3x48x32.
name: "tiny_golden"
dataloader: "phonenums_dataloader"
data_dir: "unused"
method: "V3"
device: "cpu"
precision: "float32"
random_seed: 0
batch_size: {B}
loss_config:
  weights:
    recon_loss: 1
    content_loss: 1
    style_loss: 1
    sample_loss: 1
    fragment_loss: 1
    commit_loss: 0.1
  relativity: {r}
  tie_gradient: zero   # exact zero subgradient at ties, so the golden gradients do not depend on rounding
model_config:
  arch: phonenums
  n_channels: 16
  n_fragments: {n}
  fragment_len: 32
  n_feature: 48
  d_emb_c: 8
  d_emb_s: 8
  n_atoms: 4
  threshold_ema_dead_code: {T}
  vq_ema_decay: 0.98
optimizer_config:
  optimizer: "AdamW"
  lr: 1.0e-3
  beta1: 0.9
  beta2: 0.999
  eps: 1.0e-8
  weight_decay: 0.1
  scheduler: "exponential_decay"
"""


def f32(t):
    """Round to float32 values (then used in float64)."""
    return t.to(torch.float32).to(torch.float64)


def init_model_f32(cfg, seed, x32):
    """PyTorch-default initialisation in float32 (U(+-1/sqrt(fan_in)) via the modules' own reset_parameters), then
    BatchNorm made non-trivial: gamma U(0.75,1.25), beta U(-0.1,0.1), and running statistics set to the batch
    statistics of x (one train-mode pass with cumulative averaging; the decoder fed with z_c in place of q),
    perturbed (mean + U(-0.1,0.1) std, var x U(0.8,1.25)). So the eval forward is well conditioned (running
    statistics of the right size, as in a trained model) but not equal to the training forward. The unused
    bn_c/bn_s keep their defaults; num_batches_tracked stays 0."""
    torch.manual_seed(seed)
    model = V3Model(cfg).to(torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for mod in bns:
        C = mod.num_features
        mod.weight.data = (0.75 + 0.5 * torch.rand(C, generator=g)).float()
        mod.bias.data = (0.2 * torch.rand(C, generator=g) - 0.1).float()
        mod.momentum = None
        mod.reset_running_stats()
    with torch.no_grad():
        model.train(True)
        xf = x32.reshape(-1, *x32.shape[2:])
        zc, zs = model.encoder(xf)
        model.decoder(zc, zs)
    for mod in bns:
        C = mod.num_features
        std = mod.running_var.sqrt()
        mod.running_mean.data = (mod.running_mean + (0.2 * torch.rand(C, generator=g) - 0.1) * std).float()
        mod.running_var.data = (mod.running_var * (0.8 + 0.45 * torch.rand(C, generator=g))).float()
        mod.num_batches_tracked.zero_()
        mod.momentum = BN_MOMENTUM
    return model


def sd_for_file(model):
    """state_dict as contiguous CPU tensors: float buffers/params F32, num_batches_tracked I64."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        out[k] = (v.to(torch.int64) if v.dtype == torch.int64 else v.to(torch.float32)).contiguous()
    return out


def run_step(cfg, sd32, x32, dev, lr, b1, b2, eps, wd):
    """Float64 model from the F32 state_dict; one training forward, backward, AdamW step; eval forward after."""
    model = V3Model(cfg).to(torch.float64)
    model.load_state_dict({k: v.to(torch.float64) if v.is_floating_point() else v for k, v in sd32.items()},
                          strict=True)
    model = model.to(dev)
    x = x32.to(torch.float64).to(dev)
    out = full_forward(model, cfg, x, True)
    for p in model.parameters():
        p.grad = None
    out["loss"]["total"].backward()
    trainable = [(k, p) for k, p in model.named_parameters() if p.grad is not None]
    unused = [k for k, p in model.named_parameters() if p.grad is None]
    assert sorted(unused) == sorted(["encoder.bn_c.weight", "encoder.bn_c.bias", "encoder.bn_s.weight",
                                     "encoder.bn_s.bias"]), unused
    grads = {k: p.grad.detach().clone() for k, p in trainable}
    # Cross-check the written-out AdamW against torch.optim.AdamW on a copy.
    chk = [p.detach().clone().requires_grad_(True) for _, p in trainable]
    for c, (_, p) in zip(chk, trainable):
        c.grad = p.grad.detach().clone()
    opt = torch.optim.AdamW(chk, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
    opt.step()
    adamw_step([p for _, p in trainable], lr, b1, b2, eps, wd)
    adam_diff = max(float((c - p).abs().max()) for c, (_, p) in zip(chk, trainable))
    assert adam_diff < 1e-15, adam_diff
    with torch.no_grad():
        ev = full_forward(model, cfg, x, False)
    return model, out, ev, grads, trainable, adam_diff


MIN_GAP = 0.05  # smallest accepted (d2 - d1) / d2 of a fragment's two nearest codewords (train and eval forward)


def golden(args):
    dev = torch.device(args.device)
    B, n, r, T = 3, 4, 15.0, 1e-5
    ytxt = GOLDEN_YAML.format(B=B, n=n, r=int(r), T="1.0e-5")
    assert float(yaml.safe_load(ytxt)["model_config"]["threshold_ema_dead_code"]) == T
    cfg = yaml.safe_load(ytxt)
    a = arch_spec(cfg)
    K, dc = a["K"], a["dc"]
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.1
    # Initial EMA counts. Code UNUSED gets no fragment (its codeword is placed far away) and a tiny count, so its
    # Laplace-smoothed count (cs + 1e-5) / (sum + K 1e-5) * sum differs from cs by ~10 % (with counts of a few
    # units smoothing changes ~1e-6, below float32 noise). The dead-code threshold T = 1e-5 is on, but every count
    # stays above it after the decay (the smallest is 0.98e-4): no code is replaced (not modelled here).
    UNUSED = 2
    cs0 = torch.tensor([3.0, 5.5, 1e-4, 6.0], dtype=torch.float32)
    report = {}

    gx = torch.Generator().manual_seed(args.seed + 2)
    x32 = (2 * torch.rand(B, n, a["C"], a["H"], a["W"], generator=gx) - 1).float()
    model32 = init_model_f32(cfg, args.seed, x32)

    # Pick a codebook: codewords = z_c of chosen fragments + noise (float32 values), from a seeded search, so that
    # every fragment's nearest codeword is clearly nearer than the second (float32 cannot flip it), every code but
    # UNUSED is used, at least one pair of fragments of a sample shares a codeword (exercises the zero subgradient),
    # the samples' quantised means are clearly distinct, and all four V3 hinges are active.
    model = V3Model(cfg).to(torch.float64)
    model.load_state_dict(model32.state_dict())
    model = model.to(dev)
    x = x32.to(torch.float64).to(dev)
    with torch.no_grad():
        model.train(True)
        zc0, _ = model.encoder(x.reshape(B * n, *x.shape[2:]))
    zc0 = zc0.cpu()
    spread = float(pair_dist(zc0).max())
    gc = torch.Generator().manual_seed(args.seed + 3)

    def candidates():
        for attempt in range(2000):
            rows = torch.randperm(B * n, generator=gc)[:K]
            emb = zc0[rows] + 0.15 * spread * torch.randn(K, dc, generator=gc, dtype=torch.float64)
            emb[UNUSED] = zc0.mean(0) + 3 * spread * torch.randn(dc, generator=gc, dtype=torch.float64)
            emb = f32(emb)
            ind, gap = vq_assign(zc0, emb)
            if float(gap.min()) < MIN_GAP or sorted(set(ind.tolist())) != [k for k in range(K) if k != UNUSED]:
                continue
            I = ind.reshape(B, n)
            if sum(int(len(set(I[b].tolist())) < n) for b in range(B)) < 1:
                continue
            qm = emb[ind].reshape(B, n, dc).mean(1)
            dq = pair_dist(qm) + torch.eye(B, dtype=torch.float64) * 1e9
            if float(dq.min()) < 0.05 * spread:
                continue
            yield emb, attempt, float(dq.min()) / spread

    for emb, attempt, qmean_sep in candidates():
        emb32 = emb.to(torch.float32)
        cb = model32.vq._codebook
        cb.initted.fill_(1.0)
        cb.cluster_size.copy_(cs0[None])
        cb.embed.copy_(emb32[None])
        cb.embed_avg.copy_((emb32.double() * cs0.double()[:, None]).float()[None])
        sd32 = sd_for_file(model32)
        model, out, ev, grads, trainable, adam_diff = run_step(cfg, sd32, x32, dev, lr, b1, b2, eps, wd)
        ratios = out["ratios"]
        if (not all(v < 0.9 * r for v in ratios.values()) or float(ev["gap"].min()) < MIN_GAP
                or UNUSED in ev["ind"].tolist()):
            continue
        break
    else:
        raise SystemExit("no codebook candidate met the conditions; try another --seed")
    assert all(float(out["loss"][k]) > 0 for k in ("content", "style", "sample", "fragment"))
    report["codebook_search_attempt"] = attempt
    report["adamw_vs_torch_optim_max_abs"] = adam_diff
    report["hinge_ratios"] = ratios
    report["relativity"] = r
    report["train_vq_min_gap"] = float(out["gap"].min())
    report["train_ind"] = out["ind"].tolist()
    report["train_q_mean_min_dist_rel"] = qmean_sep
    cs_after = model.vq._codebook.cluster_size[0]
    report["cluster_size_after"] = cs_after.tolist()
    report["dead_code_threshold"] = T
    report["eval_vq_min_gap"] = float(ev["gap"].min())
    report["eval_ind"] = ev["ind"].tolist()

    # ---- tensors
    def d64(t):
        return t.detach().to(torch.float64).cpu().contiguous()

    def sh(t, *shape):
        return d64(t).reshape(*shape)

    C, H, W, ds = a["C"], a["H"], a["W"], a["ds"]
    T_ = {"x": x32.contiguous()}
    T_["z_c"] = sh(out["zc"], B, n, dc)
    T_["z_s"] = sh(out["zs"], B, n, ds)
    T_["q"] = sh(out["q"], B, n, dc)
    T_["ind"] = out["ind"].detach().cpu().to(torch.int64).reshape(B, n).contiguous()
    T_["xhat"] = sh(out["xhat"], B, n, C, H, W).to(torch.float32)
    for k, v in out["loss"].items():
        T_[f"loss.{k}"] = d64(v).reshape(1)
    for k, g in grads.items():
        T_[f"grad.{k}"] = d64(g).to(torch.float32)
    for k, p in trainable:  # F32 (file size): the rounding, <= half an ulp, is below our float32 result's own
        T_[f"after.{k}"] = d64(p).to(torch.float32)
    for k, v in model.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            if k.startswith("encoder.bn_c") or k.startswith("encoder.bn_s"):
                continue
            T_[f"after.{k}"] = d64(v)
    for k in ("cluster_size", "embed_avg", "embed"):
        T_[f"after.vq._codebook.{k}"] = d64(getattr(model.vq._codebook, k))
    T_["eval.z_c"] = sh(ev["zc"], B, n, dc)
    T_["eval.z_s"] = sh(ev["zs"], B, n, ds)
    T_["eval.q"] = sh(ev["q"], B, n, dc)
    T_["eval.ind"] = ev["ind"].detach().cpu().to(torch.int64).reshape(B, n).contiguous()
    T_["eval.xhat"] = sh(ev["xhat"], B, n, C, H, W)[:1].to(torch.float32).contiguous()
    for k, v in ev["loss"].items():
        T_[f"eval.loss.{k}"] = d64(v).reshape(1)

    os.makedirs(args.out_dir, exist_ok=True)
    meta = {
        "generator": "tools/torch_reference.py (written from the spec, v3.md sections 2-5)",
        "command": " ".join(["tools/torch_reference.py"] + sys.argv[1:]),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "device": str(dev),
        "seed": str(args.seed),
        "precision": "weights, x and codebook are float32 values; everything computed in float64",
        "vq": "codebook given (initted 1, no k-means); dead-code threshold %g with initial cluster sizes %s: "
              "no code is dead after the EMA update (%s); code %d gets no fragment (Laplace smoothing matters for "
              "it)" % (T, cs0.tolist(), cs_after.tolist(), UNUSED),
        "bn": "BatchNorm gamma U(0.75,1.25), beta U(-0.1,0.1), running stats = batch statistics of x perturbed "
              "(mean + U(-0.1,0.1) std, var x U(0.8,1.25)); conv/linear weights PyTorch-default init",
        "shapes": "x [B,n,C,H,W]; z/q [B,n,d]; ind [B,n]; grad./after. in PyTorch layouts; eval.xhat is sample 0 only",
        "checks": json.dumps(report),
    }
    save_file(T_, os.path.join(args.out_dir, "tiny_golden.safetensors"), metadata=meta)
    save_file(sd32, os.path.join(args.out_dir, "tiny_model.safetensors"),
              metadata={"generator": meta["generator"], "command": meta["command"],
                        "torch_version": torch.__version__, "seed": str(args.seed)})
    with open(os.path.join(args.out_dir, "tiny_golden.yaml"), "w") as f:
        f.write(ytxt)
    for fn in ("tiny_golden.yaml", "tiny_model.safetensors", "tiny_golden.safetensors"):
        print(f"wrote {os.path.join(args.out_dir, fn)} ({os.path.getsize(os.path.join(args.out_dir, fn))} bytes)")
    print("loss terms:", {k: round(float(v), 9) for k, v in out["loss"].items()})
    print("checks:", json.dumps(report))


# ---------------------------------------------------------------------------------------------- verify-export
def verify_export(args):
    from safetensors import safe_open
    dev = torch.device(args.device)
    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    model = V3Model(cfg).to(torch.float64)
    sd = {}
    with safe_open(args.weights, framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            sd[k] = t.to(torch.float64) if t.is_floating_point() else t
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        print(f"verify-export: {args.weights} does not match the reference model:\n{e}", file=sys.stderr)
        return 2
    model = model.to(dev).eval()
    with safe_open(args.probe, framework="pt") as f:
        probe = {k: f.get_tensor(k) for k in f.keys()}
    for k in ("x", "z_c", "z_s", "q", "ind", "xhat"):
        if k not in probe:
            print(f"verify-export: {args.probe}: tensor '{k}' missing", file=sys.stderr)
            return 2
    x = probe["x"].to(torch.float64).to(dev)
    with torch.no_grad():
        zc, zs = model.encoder(x)
        q, _, ind, _, gap = vq_forward(model.vq, zc, False)
        our_ind = probe["ind"].to(torch.int64).to(dev).reshape(-1)
        embed = model.vq._codebook.embed[0]
        if int(our_ind.min()) < 0 or int(our_ind.max()) >= embed.shape[0]:
            print("verify-export: probe ind out of range", file=sys.stderr)
            return 2
        # Decode from the probe's own codeword choice so a near-tie flip does not show up as a decoder error.
        xhat = model.decoder(embed[our_ind], zs)
    ok = True
    print(f"verify-export: {x.shape[0]} fragments, torch {torch.__version__}, device {dev}")
    print(f"{'tensor':8s} {'max abs err':>12s} {'max |ref|':>12s} {'rel err':>10s} {'tol':>8s}")
    # q: our rows must be the codebook rows our indices name (the indices are checked below, near-ties allowed).
    for name, ref, tol in (("z_c", zc, args.tol), ("z_s", zs, args.tol), ("q", embed[our_ind], args.tol),
                           ("xhat", xhat, args.tol)):
        ours = probe[name].to(torch.float64).to(dev).reshape(ref.shape)
        err = float((ours - ref).abs().max()) if ours.numel() else 0.0
        if not torch.isfinite(ours).all():
            err = math.inf
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        rel = err / max(scale, 1e-30)
        good = rel <= tol
        ok &= good
        print(f"{name:8s} {err:12.3e} {scale:12.3e} {rel:10.3e} {tol:8.0e} {'ok' if good else 'FAIL'}")
    mism = (ind != our_ind).nonzero().reshape(-1)
    near = [int(i) for i in mism if float(gap[i]) < args.tie_gap]
    bad = [int(i) for i in mism if float(gap[i]) >= args.tie_gap]
    print(f"ind      {len(mism)} of {len(ind)} differ ({len(near)} at near-ties with relative gap < {args.tie_gap:g},"
          f" {len(bad)} not)")
    if bad:
        ok = False
        print(f"         first differing fragments: {bad[:10]} (gaps {[round(float(gap[i]), 6) for i in bad[:10]]})")
    print("verify-export:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write the golden files")
    g.add_argument("--out-dir", required=True)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--device", default="cpu")
    v = sub.add_parser("verify-export", help="check ./v3 export output against the reference")
    v.add_argument("--weights", required=True)
    v.add_argument("--config", required=True)
    v.add_argument("--probe", required=True)
    v.add_argument("--device", default="cpu")
    v.add_argument("--tol", type=float, default=1e-4,
                   help="max |ours - ref| / max |ref| per tensor (default 1e-4)")
    v.add_argument("--tie-gap", type=float, default=1e-4,
                   help="a codeword index may differ only where (d2 - d1) / d2 < this (default 1e-4)")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    if args.cmd == "golden":
        golden(args)
        return 0
    return verify_export(args)


if __name__ == "__main__":
    sys.exit(main())
