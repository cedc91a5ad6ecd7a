/* The cpu backend's training step against the reference backend's along a 50-step trajectory (issue 17). The ref
 * model trains; before every step the cpu model is given the ref model's whole state (parameters, AdamW moments,
 * BatchNorm statistics, codebook and EMA counts, RNG), both take the same step on the same batch, and the cpu step's
 * loss terms, codeword choices and gradients must match the ref step's. Teacher forcing keeps the check per step:
 * two free-running float trajectories part for good at the first near-tie of the quantiser (a codeword flips), which
 * says nothing about the ops.
 * Tolerances. The ops differ from ref only in summation order (oneDNN's blocked convolutions, the direct narrow-layer
 * kernels), and some gradients are very sensitive to rounding: a weight in front of a BatchNorm of one channel gets
 * the small remainder of large cancelling terms, and a bias there has an exact gradient of zero. So each step also
 * runs ref on the batch perturbed by about one rounding error (x (1 + u), |u| <= 2^-23): how far that moves a
 * tensor's gradient (dq) is what float32 can say about it. Measured (this machine, oneDNN on AVX-512): the cpu
 * gradient's distance from ref's is about dq (0.9-2x) for almost every tensor; for the BatchNorm parameters of the
 * first blocks (1-2 channels, whose backward cancels more than an input perturbation shows) up to ~100 dq, and a
 * share of the tensor's norm that depends on which correct implementation runs which layer: 4.4% with the first
 * oneDNN/direct split, 12% at InsNotes' first down-sampling BatchNorm bias with every narrow layer direct
 * (V3_CPU_CONV=small), 29% at PhoneNums' second one with every layer on oneDNN (V3_CPU_CONV=dnnl), 0 to 1 ulp of
 * GELU changing which. So a cpu gradient must lie within 30 dq, or 10% of the tensor's norm (50% for BatchNorm
 * parameters), or 1e-6 of the whole gradient's norm (the biases in front of BatchNorm, whose exact gradient is
 * zero), whichever is largest; a loss term within 1e-5 or 30 times its perturbed distance. A wrong op moves a
 * gradient by O(1) of its norm (and each op is checked on its own, tightly, in test_backend_ops). The direct kernels
 * and oneDNN, written independently, show the same kind of distances, which is why they are read as rounding and
 * not as an error of either. V3_TRAJ_VERBOSE=1 prints every tensor more than 3% of its norm away. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "config.h"
#include "model.h"
#include "testing.h"

static void copy_state(Model *dst, const Model *src) {
    memcpy(dst->p, src->p, sizeof(float) * src->n_params);
    memcpy(dst->m, src->m, sizeof(float) * src->n_trainable);
    memcpy(dst->v, src->v, sizeof(float) * src->n_trainable);
    memcpy(dst->buf, src->buf, sizeof(float) * src->n_bufs);
    size_t kd = (size_t)src->vq.K * src->dc;
    memcpy(dst->vq.embed, src->vq.embed, sizeof(float) * kd);
    memcpy(dst->vq.embed_avg, src->vq.embed_avg, sizeof(float) * kd);
    memcpy(dst->vq.cluster_size, src->vq.cluster_size, sizeof(float) * src->vq.K);
    dst->vq.initted = src->vq.initted;
    dst->rng = src->rng;
    dst->adam_t = src->adam_t;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }

static double norm2(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

static double dist2(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s);
}

static int trajectory(Config *c, int B, int steps, unsigned long long seed) {
    Model *r = model_build(c, 11), *u = model_build(c, 11), *q = model_build(c, 11);
    CHECK(r && u && q, "model_build: %s", v3_last_error());
    r->host_backend = &backend_ref;
    q->host_backend = &backend_ref;
    u->host_backend = &backend_cpu;
    size_t frag = (size_t)r->arch.C * r->arch.H * r->arch.W, N = (size_t)B * c->n_fragments;
    float *x = falloc(frag * N), *xq = falloc(frag * N), *uq = falloc(frag * N);
    int flips = 0;
    double worst_g = 0, worst_t = 0;
    for (int s = 0; s < steps; s++) {
        fill_uniform(x, frag * N, seed + (unsigned long long)s, -1.0f, 1.0f);
        fill_uniform(uq, frag * N, seed + 7777 + (unsigned long long)s, -1.0f, 1.0f);
        for (size_t i = 0; i < frag * N; i++) xq[i] = x[i] * (1.0f + uq[i] * 0x1p-23f);
        copy_state(u, r);
        copy_state(q, r);
        LossTerms Lq;
        CHECK(model_forward(q, xq, B, 1, &Lq) == 0, "forward: %s", v3_last_error());
        model_backward(q);
        LossTerms Lr, Lu;
        CHECK(model_forward(r, x, B, 1, &Lr) == 0 && model_forward(u, x, B, 1, &Lu) == 0, "forward: %s",
              v3_last_error());
        for (size_t i = 0; i < N; i++) flips += r->ind[i] != u->ind[i];
        model_backward(r);
        model_backward(u);
        /* loss terms (the commitment term moves with a codeword flip; flips are counted below) */
        const double tr[] = {Lr.recon, Lr.content, Lr.style, Lr.sample, Lr.fragment, Lr.Fc, Lr.Sc, Lr.Fs, Lr.Ss};
        const double tu[] = {Lu.recon, Lu.content, Lu.style, Lu.sample, Lu.fragment, Lu.Fc, Lu.Sc, Lu.Fs, Lu.Ss};
        const double tq[] = {Lq.recon, Lq.content, Lq.style, Lq.sample, Lq.fragment, Lq.Fc, Lq.Sc, Lq.Fs, Lq.Ss};
        for (size_t k = 0; k < sizeof tr / sizeof tr[0]; k++) {
            double e = fabs(tu[k] - tr[k]), bound = fmax(1e-5 * fabs(tr[k]), 30 * fabs(tq[k] - tr[k]));
            if (rel(tu[k], tr[k]) > worst_t) worst_t = rel(tu[k], tr[k]);
            CHECK(isfinite(tu[k]) && e <= bound, "step %d: loss term %zu is %.9g on cpu, %.9g on ref (perturbed %.9g)",
                  s + 1, k, tu[k], tr[k], tq[k]);
        }
        /* gradients, tensor by tensor */
        double gn = norm2(r->g, r->n_trainable);
        for (int t = 0; t < r->n_params_t; t++) {
            const TensorInfo *ti = &r->params[t];
            if (!ti->trainable) continue;
            double d = dist2(u->g + ti->off, r->g + ti->off, ti->n), n = norm2(r->g + ti->off, ti->n);
            /* BatchNorm parameters: the cancelling backward of 1-2 channel BatchNorms (see the top) */
            double frac = strstr(ti->name, ".bn_") ? 0.5 : 0.1;
            double dq = dist2(q->g + ti->off, r->g + ti->off, ti->n), bound = fmax(fmax(30 * dq, frac * n), 1e-6 * gn);
            if (getenv("V3_TRAJ_VERBOSE") && d > 0.03 * n)
                fprintf(stderr, "    step %d %s: %.3g of its norm, %.3g dq\n", s + 1, ti->name, d / n, d / fmax(dq, 1e-30));
            CHECK(isfinite(d), "step %d: %s: non-finite gradient on cpu", s + 1, ti->name);
            if (d / bound > worst_g) worst_g = d / bound;
            CHECK(d <= bound, "step %d: %s: the cpu gradient is %.3g from ref's (norm %.3g); a one-rounding perturbation "
                  "of the batch moves ref's by %.3g", s + 1, ti->name, d, n, dq);
        }
        model_adamw(r, 1e-3f);
    }
    /* a flip needs two codewords within rounding of each other: rare, but possible, so a few are allowed */
    CHECK(flips <= (int)(N * steps / 200), "%d codeword choices of %zu differ between cpu and ref", flips,
          N * (size_t)steps);
    fprintf(stderr, "    %d steps: worst loss-term error %.2g, worst gradient distance %.2g of its bound, %d "
            "codeword flips\n", steps, worst_t, worst_g, flips);
    ffree(x), ffree(xq), ffree(uq);
    model_free(q);
    model_free(r);
    model_free(u);
    return 0;
}

/* The PhoneNums architecture at width 16 (configs/phonenums-cpu.yaml's shapes, the demo's model: narrow layers of 1-16
 * channels, 5x5 kernels, strides 1 and 2, transposed convolutions) at batch 4. */
TEST(step_cpu_matches_ref_trajectory_phonenums) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/phonenums-cpu.yaml", &c) == 0, "%s", v3_last_error());
    return trajectory(&c, 4, 50, 4000);
}

/* The InsNotes architecture (9x3 kernels, 1-channel spectrogram input) narrowed to width 32 with short fragments. */
TEST(step_cpu_matches_ref_trajectory_insnotes) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/insnotes.yaml", &c) == 0, "%s", v3_last_error());
    CHECK(config_set(&c, "model_config.n_channels=128") == 0 && config_set(&c, "model_config.n_fragments=2") == 0,
          "%s", v3_last_error());
    return trajectory(&c, 2, 5, 5000);
}
