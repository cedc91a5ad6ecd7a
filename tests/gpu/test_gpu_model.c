/* The whole training step on the GPU (host/model/step.c over the CUDA backend) against the CPU model, from the
 * same seed on the same batches of the synthetic dataset, in each math mode:
 *   step 0: every loss term and the full parameter gradient (one forward/backward from identical weights);
 *   50 steps: the total loss of every step along the two trajectories.
 * Tolerances (relative; the CPU is the reference):
 *   mode  step-0 terms  step-0 gradient (||g_gpu - g_cpu|| / ||g_cpu||)  50-step total loss (max over steps)
 *   fp32  1e-4          1e-3                                              2e-2
 *   tf32  2e-2          5e-2                                              1e-1
 *   bf16  5e-2          1.5e-1                                            2e-1
 * fp32 differs from the CPU only in summation order; the trajectory bound is looser than the step-0 bounds
 * because a near-tie in the codebook search can flip one assignment and the two runs then drift apart within
 * float noise. The numbers measured are printed, for NOTES.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "cuda_backend.h"
#include "dataset.h"
#include "backend.h"
#include "step.h"
#include "gpu_test.h"
#include "model.h"

typedef struct { V3Math math; double terms, grad, traj; } Tol;
static const Tol k_tol[] = {
    {V3_MATH_FP32, 1e-4, 1e-3, 2e-2},
    {V3_MATH_TF32, 2e-2, 5e-2, 1e-1},
    {V3_MATH_BF16, 5e-2, 1.5e-1, 2e-1},
};

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-12 ? fabs(b) : 1e-12); }

/* Worst relative difference over the loss terms (each against max(|cpu term|, 1e-3 * |cpu total|)). */
static double terms_err(const LossTerms *g, const LossTerms *c) {
    const double *a = &g->total, *b = &c->total;
    double worst = 0, floor = 1e-3 * fabs(c->total);
    for (size_t k = 0; k < sizeof(LossTerms) / sizeof(double); k++) {
        if (!isfinite(a[k])) return INFINITY;
        double den = fabs(b[k]) > floor ? fabs(b[k]) : (floor > 1e-12 ? floor : 1e-12);
        double e = fabs(a[k] - b[k]) / den;
        if (e > worst) worst = e;
    }
    return worst;
}

static int model_case(const Tol *t, const char *datadir) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/tiny.yaml", &c) == 0, "%s", v3_last_error());
    Dataset ds;
    CHECK(dataset_load_split(datadir, "train", &ds) == 0, "%s", v3_last_error());
    int B = c.batch_size, steps = 50;
    Model *cpu = model_build(&c, 0), *dev = model_build(&c, 0);
    CHECK(cpu && dev, "model_build: %s", v3_last_error());
    cuda_set_math(t->math);
    Step *g = step_create(dev, &backend_cuda, B * dev->cfg.n_fragments, t->math);
    CHECK(g, "step_create (%s): %s", v3_math_name(t->math), v3_last_error());
    size_t se = dataset_sample_elems(&ds);
    float *x = falloc(se * B), *gg = falloc(cpu->n_params);
    int *idx = xmalloc(sizeof(int) * B);
    double worst_traj = 0, e_terms = 0, e_grad = 0;
    int worst_step = -1;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < B; i++) idx[i] = (s * B + i) % (int)ds.n_samples;
        dataset_gather(&ds, idx, B, x, NULL, NULL);
        LossTerms Lc, Lg;
        CHECK(model_forward(cpu, x, B, 1, &Lc) == 0, "cpu step %d: %s", s, v3_last_error());
        model_backward(cpu);
        if (s == 0) { /* identical weights: compare the terms and the whole gradient */
            CHECK(step_forward(g, x, 0, B, 1, VQ_TRAIN, &Lg) == 0, "gpu forward: %s", v3_last_error());
            step_backward(g);
            CHECK(step_read_grads(g, gg) == 0, "%s", v3_last_error());
            e_terms = terms_err(&Lg, &Lc);
            double num = 0, den = 0;
            int finite = 1;
            for (size_t i = 0; i < cpu->n_params; i++) {
                if (!isfinite(gg[i])) finite = 0;
                double dd = (double)gg[i] - cpu->g[i];
                num += dd * dd;
                den += (double)cpu->g[i] * cpu->g[i];
            }
            e_grad = finite ? sqrt(num / (den > 0 ? den : 1e-30)) : INFINITY;
            const int *ig = step_indices(g);
            int same = 0;
            for (int i = 0; i < B * c.n_fragments; i++) same += ig[i] == cpu->ind[i];
            printf("    %s step 0: terms rel err %.3g (tol %g), gradient rel err %.3g (tol %g), codeword indices "
                   "agree %d/%d\n", v3_math_name(t->math), e_terms, t->terms, e_grad, t->grad, same,
                   B * c.n_fragments);
            CHECK(e_terms <= t->terms, "%s: step-0 loss terms differ by %.3g relative (total gpu %.9g cpu %.9g)",
                  v3_math_name(t->math), e_terms, Lg.total, Lc.total);
            CHECK(e_grad <= t->grad, "%s: step-0 gradient differs by %.3g relative", v3_math_name(t->math), e_grad);
            step_adamw(g, (float)c.lr);
        } else {
            CHECK(step_train(g, x, 0, B, (float)c.lr, &Lg) == 0, "gpu step %d: %s", s, v3_last_error());
        }
        model_adamw(cpu, (float)c.lr);
        double e = rel(Lg.total, Lc.total);
        if (!isfinite(Lg.total)) e = INFINITY;
        if (e > worst_traj) { worst_traj = e; worst_step = s; }
    }
    printf("    %s %d steps: max relative difference of the total loss %.3g at step %d (tol %g)\n",
           v3_math_name(t->math), steps, worst_traj, worst_step, t->traj);
    CHECK(worst_traj <= t->traj, "%s: trajectories differ by %.3g relative at step %d", v3_math_name(t->math),
          worst_traj, worst_step);
    free(idx);
    ffree(x);
    ffree(gg);
    step_free(g);
    model_free(cpu);
    model_free(dev);
    dataset_free(&ds);
    cuda_set_math(V3_MATH_FP32);
    return 0;
}

static const char *synth_dir(void) {
    static char *dir;
    if (dir) return dir;
    dir = test_tmpdir("gpu_model");
    SynthParams p;
    synth_defaults(&p);
    p.n_train = 160;
    p.n_val = p.n_test = 8;
    if (synth_generate(dir, &p)) V3_FATAL("%s", v3_last_error());
    return dir;
}

#define MODEL_TEST(name, idx)                                                                                      \
    TEST(name) {                                                                                                   \
        REQUIRE_GPU();                                                                                             \
        CHECK(cuda_libs_load() == 0, "%s", v3_last_error());                                                      \
        return model_case(&k_tol[idx], synth_dir());                                                               \
    }
MODEL_TEST(gpu_model_tiny_50_steps_fp32, 0)
MODEL_TEST(gpu_model_tiny_50_steps_tf32, 1)
MODEL_TEST(gpu_model_tiny_50_steps_bf16, 2)

/* The device step is deterministic: two device models from the same state give bit-identical losses. */
TEST(gpu_model_deterministic) {
    REQUIRE_GPU();
    CHECK(cuda_libs_load() == 0, "%s", v3_last_error());
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/tiny.yaml", &c) == 0, "%s", v3_last_error());
    Dataset ds;
    CHECK(dataset_load_split(synth_dir(), "train", &ds) == 0, "%s", v3_last_error());
    int B = c.batch_size;
    float *x = falloc(dataset_sample_elems(&ds) * B);
    int *idx = xmalloc(sizeof(int) * B);
    LossTerms L[2][5];
    for (int run = 0; run < 2; run++) {
        Model *m = model_build(&c, 3);
        Step *g = step_create(m, &backend_cuda, B * m->cfg.n_fragments, V3_MATH_FP32);
        CHECK(g, "%s", v3_last_error());
        for (int s = 0; s < 5; s++) {
            for (int i = 0; i < B; i++) idx[i] = (s * B + i) % (int)ds.n_samples;
            dataset_gather(&ds, idx, B, x, NULL, NULL);
            CHECK(step_train(g, x, 0, B, 1e-3f, &L[run][s]) == 0, "%s", v3_last_error());
        }
        step_free(g);
        model_free(m);
    }
    for (int s = 0; s < 5; s++)
        CHECK(!memcmp(&L[0][s], &L[1][s], sizeof(LossTerms)), "step %d: total %.17g vs %.17g", s, L[0][s].total,
              L[1][s].total);
    free(idx);
    ffree(x);
    dataset_free(&ds);
    return 0;
}
