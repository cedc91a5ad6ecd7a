/* The step (host/model/step.c) on the emulated device (backend emu: the reference ops behind a separate memory, so the
 * step keeps its own copy of the state and moves it as on CUDA) against the same step on the host Model's own
 * buffers (model_forward on backend ref: emu runs the same ops): same seed, same batches, so every loss term, every parameter and every
 * codebook entry must agree bit for bit, through k-means initialisation, EMA updates, dead-code revivals,
 * BatchNorm running statistics, eval forwards and AdamW. A mismatch here is a bug in the data movement the CUDA
 * backend runs (uploads, downloads, host copies of the counts, device-resident input). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "config.h"
#include "step.h"
#include "model.h"
#include "testing.h"

static int same_terms(const LossTerms *a, const LossTerms *b) {
    return !memcmp(a, b, sizeof *a);
}

static void print_terms(const char *tag, const LossTerms *L) {
    fprintf(stderr, "    %s: total %.9g recon %.9g commit %.9g content %.9g style %.9g sample %.9g fragment %.9g "
            "Fc %.9g Sc %.9g Fs %.9g Ss %.9g\n", tag, L->total, L->recon, L->commit, L->content, L->style, L->sample,
            L->fragment, L->Fc, L->Sc, L->Fs, L->Ss);
}

/* First index where two float arrays differ bitwise, or -1. */
static long first_diff(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float))) return (long)i;
    return -1;
}

static int run_case(Config *c, int B, int steps, unsigned long long seed) {
    Model *cpu = model_build(c, 7), *dev = model_build(c, 7);
    CHECK(cpu && dev, "model_build: %s", v3_last_error());
    cpu->host_backend = &backend_ref; /* the host model runs the ops emu wraps (the cpu backend's are faster, not equal) */
    Step *g = step_create(dev, &backend_emu, B * dev->cfg.n_fragments, V3_MATH_FP32);
    CHECK(g, "step_create: %s", v3_last_error());
    size_t frag = (size_t)cpu->arch.C * cpu->arch.H * cpu->arch.W, N = (size_t)B * c->n_fragments;
    float *x = falloc(frag * N), *xd = falloc(frag * N);
    int revived = 0;
    for (int s = 0; s < steps; s++) {
        int b = (s % 3 == 2) ? B - 1 : B; /* a smaller batch now and then: a second plan set */
        fill_uniform(x, frag * b * c->n_fragments, seed + (unsigned long long)s, -1.0f, 1.0f);
        /* a few identical fragments, so codewords are shared and zero distances occur */
        memcpy(x + frag, x, sizeof(float) * frag);
        LossTerms Lc, Lg;
        CHECK(model_forward(cpu, x, b, 1, &Lc) == 0, "cpu forward: %s", v3_last_error());
        model_backward(cpu);
        model_adamw(cpu, 1e-3f);
        /* odd steps read the input from a "device" buffer as the loader thread provides it (host memory on the
         * emulated device); x is poisoned so a step reading the wrong buffer cannot match */
        if (s % 2) {
            memcpy(xd, x, sizeof(float) * frag * N);
            poison(x, frag * N);
            CHECK(step_train(g, xd, 1, b, 1e-3f, &Lg) == 0, "device step (dev input): %s", v3_last_error());
            memcpy(x, xd, sizeof(float) * frag * N);
        } else {
            CHECK(step_train(g, x, 0, b, 1e-3f, &Lg) == 0, "device step: %s", v3_last_error());
        }
        if (!same_terms(&Lc, &Lg)) {
            print_terms("cpu   ", &Lc);
            print_terms("device", &Lg);
            CHECK(0, "step %d: loss terms differ", s);
        }
        /* the step's host copy of the counts (perplexity log, dead-code decisions) follows the device */
        CHECK(step_perplexity(g) == vq_perplexity(&cpu->vq), "step %d: perplexity %.9g, host model %.9g", s,
              step_perplexity(g), vq_perplexity(&cpu->vq));
        for (int k = 0; k < cpu->vq.K; k++) revived += cpu->vq.cluster_size[k] == (float)c->threshold_ema_dead_code;
    }
    CHECK(step_to_host(g) == 0, "download: %s", v3_last_error());
    long d;
    CHECK((d = first_diff(cpu->p, dev->p, cpu->n_params)) < 0, "parameters differ at %ld", d);
    CHECK((d = first_diff(cpu->m, dev->m, cpu->n_trainable)) < 0, "AdamW m differs at %ld", d);
    CHECK((d = first_diff(cpu->v, dev->v, cpu->n_trainable)) < 0, "AdamW v differs at %ld", d);
    CHECK((d = first_diff(cpu->buf, dev->buf, cpu->n_bufs)) < 0, "BN statistics differ at %ld", d);
    size_t kd = (size_t)cpu->vq.K * cpu->dc;
    CHECK((d = first_diff(cpu->vq.embed, dev->vq.embed, kd)) < 0, "codebook differs at %ld", d);
    CHECK((d = first_diff(cpu->vq.embed_avg, dev->vq.embed_avg, kd)) < 0, "embed_avg differs at %ld", d);
    CHECK((d = first_diff(cpu->vq.cluster_size, dev->vq.cluster_size, cpu->vq.K)) < 0, "cluster_size differs at %ld", d);
    CHECK(cpu->adam_t == dev->adam_t, "adam steps %ld vs %ld", cpu->adam_t, dev->adam_t);
    /* eval forward: losses and codeword indices */
    LossTerms Lc, Lg;
    CHECK(model_forward(cpu, x, B, 0, &Lc) == 0 && step_forward(g, x, 0, B, 0, VQ_EVAL, &Lg) == 0, "eval: %s",
          v3_last_error());
    if (!same_terms(&Lc, &Lg)) {
        print_terms("cpu   ", &Lc);
        print_terms("device", &Lg);
        CHECK(0, "eval loss terms differ");
    }
    CHECK(!memcmp(cpu->ind, step_indices(g), sizeof(int) * N), "eval codeword indices differ");
    size_t nc = N * cpu->dc, ns = N * cpu->ds;
    StepOutputs o;
    CHECK(step_outputs(g, &o) == 0 && o.N == (int)N && o.xhat, "outputs: %s", v3_last_error());
    CHECK(first_diff(cpu->zc, o.zc, nc) < 0 && first_diff(cpu->q, o.q, nc) < 0 && first_diff(cpu->zs, o.zs, ns) < 0 &&
          first_diff(cpu->xhat, o.xhat, frag * N) < 0, "eval outputs (zc, q, zs, xhat) differ");
    /* the evaluation pieces: encode an odd number of fragments, decode them back */
    int ne = (int)N - 1;
    float *zs = falloc(ns), *q = falloc(nc), *xc = falloc(frag * N), *xg = falloc(frag * N);
    CHECK(model_encode(cpu, x, ne) == 0 && step_encode(g, x, ne) == 0, "encode: %s", v3_last_error());
    CHECK(step_outputs(g, &o) == 0 && !o.xhat, "encode outputs: %s", v3_last_error());
    CHECK(first_diff(cpu->zc, o.zc, (size_t)ne * cpu->dc) < 0 && first_diff(cpu->q, o.q, (size_t)ne * cpu->dc) < 0 &&
          first_diff(cpu->zs, o.zs, (size_t)ne * cpu->ds) < 0 && !memcmp(cpu->ind, o.ind, sizeof(int) * ne),
          "encode outputs differ");
    memcpy(q, cpu->q, sizeof(float) * ne * cpu->dc);
    memcpy(zs, cpu->zs, sizeof(float) * ne * cpu->ds);
    poison(xg, frag * N);
    CHECK(model_decode(cpu, q, zs, ne, xc) == 0 && step_decode(g, q, zs, ne, xg) == 0, "decode: %s", v3_last_error());
    CHECK(first_diff(xc, xg, frag * ne) < 0, "decoded fragments differ");
    ffree(zs), ffree(q), ffree(xc), ffree(xg);
    /* gradients of one more training forward/backward */
    float *gd = falloc(cpu->n_params);
    CHECK(model_forward(cpu, x, B, 1, &Lc) == 0 && step_forward(g, x, 0, B, 1, VQ_TRAIN, &Lg) == 0, "fwd: %s", v3_last_error());
    model_backward(cpu);
    step_backward(g);
    CHECK(step_read_grads(g, gd) == 0, "read grads: %s", v3_last_error());
    CHECK((d = first_diff(cpu->g, gd, cpu->n_params)) < 0, "gradients differ at %ld", d);
    if (c->threshold_ema_dead_code > 0) CHECK(revived > 0, "no dead code was revived; the case does not test revival");
    ffree(gd);
    ffree(x);
    ffree(xd);
    step_free(g);
    model_free(cpu);
    model_free(dev);
    return 0;
}

/* The tiny architecture with codes small enough that some die: threshold_ema_dead_code as given. */
static void tiny_with_revivals(Config *c, double threshold) {
    config_defaults(c);
    snprintf(c->path, sizeof c->path, "(test)");
    c->arch = ARCH_TINY;
    c->n_channels = 16;
    c->n_fragments = 4;
    c->n_feature = 8;
    c->fragment_len = 8;
    c->d_emb_c = 6;
    c->d_emb_s = 5;
    c->n_atoms = 6;
    c->relativity = 1e3;
    c->threshold_ema_dead_code = threshold;
}

TEST(step_emu_matches_host_tiny) {
    Config c;
    tiny_with_revivals(&c, 1.5); /* high enough that codes die and are revived */
    return run_case(&c, 5, 9, 100);
}

/* model_config.revive_from: largest: the step fetches the batch's assignment to choose the rows. */
TEST(step_emu_matches_host_revive_largest) {
    Config c;
    tiny_with_revivals(&c, 2.5);
    snprintf(c.revive_from, sizeof c.revive_from, "largest");
    return run_case(&c, 5, 9, 300);
}

TEST(step_emu_matches_host_supersample) {
    Config c;
    config_defaults(&c);
    snprintf(c.path, sizeof c.path, "(test)");
    c.arch = ARCH_TINY;
    c.n_channels = 8;
    c.n_fragments = 3;
    c.n_feature = 8;
    c.fragment_len = 8;
    c.d_emb_c = 4;
    c.d_emb_s = 4;
    c.n_atoms = 3;
    c.relativity = 2.0;
    c.supersample_content = 1;
    c.threshold_ema_dead_code = 0;
    return run_case(&c, 6, 4, 200);
}
