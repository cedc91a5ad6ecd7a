/* Full training step on the GPU: forward, loss, backward, AdamW and the codebook update of the device model
 * (host/model/step.c), for the authors' insnotes and phonenums configs at batch 32, in each math mode.
 * Inputs are random tensors of the real fragment shapes (the step's cost does not depend on the values).
 *   make bench && ./bench/bench_step [OUT.json] [--steps N] [--configs insnotes,phonenums] [--math fp32,tf32,bf16]
 * Each row: median and minimum ms/step over N timed steps (CUDA events around gpu_model_train_step, which ends
 * with the one synchronisation a training step makes), after 5 warm-up steps (cuDNN plans and the first k-means
 * initialisation happen in warm-up). Also the forward, backward and optimiser phases timed separately. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "common.h"
#include "config.h"
#include "cuda_backend.h"
#include "backend.h"
#include "step.h"
#include "model.h"

typedef struct { Step *g; const float *x; int B; float lr; int phase; } StepCtx;

static void run_step(void *p) {
    StepCtx *s = p;
    LossTerms L;
    if (step_train(s->g, s->x, 0, s->B, s->lr, &L)) V3_FATAL("%s", v3_last_error());
}

static void run_forward(void *p) {
    StepCtx *s = p;
    LossTerms L;
    if (step_forward(s->g, s->x, 0, s->B, 1, VQ_TRAIN, &L)) V3_FATAL("%s", v3_last_error());
}

static void run_backward(void *p) { step_backward(((StepCtx *)p)->g); }
static void run_adamw(void *p) { step_adamw(((StepCtx *)p)->g, ((StepCtx *)p)->lr); }

int main(int argc, char **argv) {
    const char *out = "bench/step.json", *configs = "insnotes,phonenums", *maths = "fp32,tf32,bf16";
    int steps = 20, B = 32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--configs") && i + 1 < argc) configs = argv[++i];
        else if (!strcmp(argv[i], "--math") && i + 1 < argc) maths = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (argv[i][0] != '-') out = argv[i];
        else { fprintf(stderr, "bench_step: unknown option %s\n", argv[i]); return 2; }
    }
    if (steps < 3 || B < 2) { fprintf(stderr, "bench_step: --steps >= 3 and --batch >= 2 expected\n"); return 2; }
    char desc[256];
    bench_init_device(desc, sizeof desc);
    const char *names[] = {"insnotes", "phonenums"};
    for (int ci = 0; ci < 2; ci++) {
        if (!bench_list_has(configs, names[ci])) continue;
        char path[64];
        snprintf(path, sizeof path, "configs/%s.yaml", names[ci]);
        Config c;
        config_defaults(&c);
        if (config_load(path, &c)) { fprintf(stderr, "bench_step: %s\n", v3_last_error()); return 1; }
        for (int mi = 0; mi < 3; mi++) {
            V3Math math = (V3Math)mi;
            if (!bench_list_has(maths, v3_math_name(math))) continue;
            Model *m = model_build(&c, 0);
            if (!m) { fprintf(stderr, "bench_step: %s\n", v3_last_error()); return 1; }
            cuda_set_math(math);
            Step *g = step_create(m, &backend_cuda, B * m->cfg.n_fragments, math);
            if (!g) { fprintf(stderr, "bench_step: %s %s: %s\n", names[ci], v3_math_name(math), v3_last_error()); return 1; }
            size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W, N = (size_t)B * c.n_fragments;
            float *x = falloc(frag * N);
            Rng r;
            rng_seed(&r, 1);
            for (size_t i = 0; i < frag * N; i++) x[i] = rng_uniform_range(&r, -1.0f, 1.0f);
            StepCtx s = {g, x, B, (float)c.lr, 0};
            BenchRow row;
            memset(&row, 0, sizeof row);
            snprintf(row.kernel, sizeof row.kernel, "train_step");
            snprintf(row.shape, sizeof row.shape, "%s B=%d n=%d [%d,%d,%d]", names[ci], B, c.n_fragments,
                     m->arch.C, m->arch.H, m->arch.W);
            snprintf(row.variant, sizeof row.variant, "%s", v3_math_name(math));
            row.t = bench_time(run_step, &s, 5, 1, steps);
            row.valid = 1; /* checked against the CPU by make test-gpu (gpu_model_tiny_50_steps_*) */
            snprintf(row.note, sizeof row.note, "%.0f fragments/s; arena %.2f GiB", N / (row.t.median_ms * 1e-3),
                     step_arena_bytes(g) / 1073741824.0);
            bench_add(&row);
            /* phases */
            struct { const char *name; bench_fn fn; } ph[] = {
                {"forward+loss", run_forward}, {"backward", run_backward}, {"adamw", run_adamw}};
            for (int k = 0; k < 3; k++) {
                BenchRow pr = row;
                snprintf(pr.kernel, sizeof pr.kernel, "step:%s", ph[k].name);
                pr.t = bench_time(ph[k].fn, &s, 2, 1, steps);
                pr.note[0] = 0;
                if (k == 2) { /* AdamW reads p, g, m, v and writes p, m, v */
                    pr.bytes = 7.0 * sizeof(float) * m->n_trainable;
                    snprintf(pr.note, sizeof pr.note, "%zu parameters", m->n_trainable);
                }
                bench_add(&pr);
            }
            printf("%s %s: %.3f ms/step (median of %d)\n", names[ci], v3_math_name(math), row.t.median_ms, steps);
            fflush(stdout);
            ffree(x);
            step_free(g);
            model_free(m);
        }
    }
    cuda_set_math(V3_MATH_FP32);
    return bench_finish(out, desc) ? 1 : 0;
}
