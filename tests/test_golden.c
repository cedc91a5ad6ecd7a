/* Golden test: one training step of our CPU model against the independent PyTorch float64 reference
 * (tools/torch_reference.py, written from the spec; files in tests/golden/, regenerated with
 *   /path/to/venv/bin/python tools/torch_reference.py golden --out-dir tests/golden
 * ). The weights come in through weights_import from the authors' state_dict layout (tiny_model.safetensors),
 * the codebook state included (initted 1: no k-means; dead-code threshold 2 with initial cluster sizes that stay
 * above it, so no code is replaced). Compared: the training forward (z_c, z_s, q, ind exactly, xhat), every loss
 * term, every parameter gradient, every parameter after one AdamW step, the BatchNorm running statistics and the
 * codebook EMA state after the step, and an eval-mode forward after the step (z_c, z_s, q, ind, the first
 * sample's xhat, the loss terms; from the reference's parameters after the step, see gold_load_after). Tolerances and the error measure: tests/golden/golden_check.h. No Python. */
#include "golden/golden_check.h"
#include "testing.h"

static int cpu_golden(int perturb) {
    Golden G;
    CHECK(gold_open(&G) == 0, "could not open the golden files");
    Model *m = G.m;
    if (perturb) m->p[m->params[perturb - 1].off] += 1e-3f; /* failure demonstration (tests below) */
    int B = G.B, N = G.N, dc = m->dc, ds = m->ds, bad = 0;
    const ArchSpec *a = &m->arch;
    size_t frag = (size_t)a->C * a->H * a->W;
    float *before = falloc(m->n_params), *grads = falloc(m->n_params);
    memcpy(before, m->p, sizeof(float) * m->n_params);

    /* training forward */
    LossTerms L;
    CHECK(model_forward(m, G.x, B, 1, &L) == 0, "forward: %s", v3_last_error());
    bad |= gold_cmp_ind(&G, "ind", m->ind, (size_t)N);
    bad |= gold_cmp(&G, "z_c", m->zc, (size_t)N * dc, GOLD_TOL_FWD, &G.e_fwd, G.w_fwd);
    bad |= gold_cmp(&G, "z_s", m->zs, (size_t)N * ds, GOLD_TOL_FWD, &G.e_fwd, G.w_fwd);
    bad |= gold_cmp(&G, "q", m->q, (size_t)N * dc, GOLD_TOL_FWD, &G.e_fwd, G.w_fwd);
    bad |= gold_cmp(&G, "xhat", m->xhat, frag * N, GOLD_TOL_FWD, &G.e_fwd, G.w_fwd);
    bad |= gold_check_losses(&G, "loss.", &L, &G.e_loss, G.w_loss);
    bad |= gold_check_bn(&G, m->buf);
    bad |= gold_check_vq(&G, &m->vq);

    /* backward, AdamW */
    model_backward(m);
    memcpy(grads, m->g, sizeof(float) * m->n_params);
    bad |= gold_check_grads(&G, grads);
    model_adamw(m, (float)G.lr);
    bad |= gold_check_adamw(&G, before, m->p, grads);

    /* eval forward after the step (BN running statistics, codebook after the EMA update, no update), from the
     * reference's parameters after the step: see gold_load_after */
    CHECK(gold_load_after(&G, m->p) == 0, "golden parameters after the step missing");
    LossTerms E;
    CHECK(model_forward(m, G.x, B, 0, &E) == 0, "eval forward: %s", v3_last_error());
    bad |= gold_cmp_ind(&G, "eval.ind", m->ind, (size_t)N);
    bad |= gold_cmp(&G, "eval.z_c", m->zc, (size_t)N * dc, GOLD_TOL_FWD, &G.e_eval, G.w_eval);
    bad |= gold_cmp(&G, "eval.z_s", m->zs, (size_t)N * ds, GOLD_TOL_FWD, &G.e_eval, G.w_eval);
    bad |= gold_cmp(&G, "eval.q", m->q, (size_t)N * dc, GOLD_TOL_FWD, &G.e_eval, G.w_eval);
    bad |= gold_cmp(&G, "eval.xhat", m->xhat, frag * G.n, GOLD_TOL_FWD, &G.e_eval, G.w_eval); /* sample 0 */
    bad |= gold_check_losses(&G, "eval.loss.", &E, &G.e_eval, G.w_eval);
    /* the eval forward changed nothing */
    bad |= gold_check_vq(&G, &m->vq);
    bad |= gold_check_bn(&G, m->buf);

    if (!perturb) gold_report(&G, "CPU");
    ffree(before);
    ffree(grads);
    gold_close(&G);
    if (bad && gold_quiet) return 1;
    CHECK(!bad, "the CPU step differs from the PyTorch reference (details above)");
    return 0;
}

TEST(golden_cpu_step_matches_torch_reference) { return cpu_golden(0); }

/* The comparison is sharp: one weight element moved by 1e-3 (the first stem conv weight, then the decoder's
 * output conv weight) must make it fail. */
static int perturbed_fails(const char *pname) {
    Golden G;
    CHECK(gold_open(&G) == 0, "could not open the golden files");
    int idx = -1;
    for (int i = 0; i < G.m->n_params_t; i++)
        if (!strcmp(G.m->params[i].name, pname)) idx = i;
    gold_close(&G);
    CHECK(idx >= 0, "no parameter %s", pname);
    gold_quiet = !getenv("V3_TEST_VERBOSE"); /* the expected failure's details are not interesting */
    int rc = cpu_golden(idx + 1);
    gold_quiet = 0;
    CHECK(rc == 1, "a 1e-3 change of one element of %s still passed the golden comparison", pname);
    return 0;
}

TEST(golden_cpu_detects_perturbed_stem_weight) { return perturbed_fails("encoder.cnn_1.0.weight"); }
TEST(golden_cpu_detects_perturbed_output_weight) { return perturbed_fails("decoder.cnn_transpose_1.output_conv.weight"); }

/* The device step's orchestration (host/model/step.c) on the emulated device: the same golden comparison. */
TEST(golden_device_step_emulated_matches_torch_reference) {
    int rc = gold_device_step(&backend_emu, V3_MATH_FP32, "device model on backend_emu");
    CHECK(rc == 0, "the emulated device step differs from the PyTorch reference (details above)");
    return 0;
}
