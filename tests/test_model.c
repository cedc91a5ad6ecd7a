/* Whole-model checks: parameter counts of the authors' architectures, finite-difference gradients of the full
 * model + V3 loss on a tiny config (straight-through surrogate), NaN detection, eval-mode behaviour. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "step.h"
#include "testing.h"

static void tiny_config(Config *c) {
    config_defaults(c);
    snprintf(c->path, sizeof c->path, "(test)");
    c->arch = ARCH_TINY;
    c->n_channels = 16;
    c->n_fragments = 3;
    c->n_feature = 8;
    c->fragment_len = 8;
    c->d_emb_c = 6;
    c->d_emb_s = 5;
    c->n_atoms = 4;
    c->relativity = 1e3; /* every hinge active, so each V3 term contributes gradient */
    c->threshold_ema_dead_code = 0;
}

static int count_for(ArchKind a, int nc, int nfrag, int H, int W, int K, size_t want) {
    Config c;
    config_defaults(&c);
    c.arch = a;
    c.n_channels = nc;
    c.n_fragments = nfrag;
    c.n_feature = H;
    c.fragment_len = W;
    c.n_atoms = K;
    Model *m = model_build(&c, 0);
    CHECK(m, "build %s failed: %s", arch_name(a), v3_last_error());
    size_t got = m->n_params, trained = m->n_trainable;
    model_free(m);
    CHECK(got == want, "%s: %zu parameters, spec says %zu", arch_name(a), got, want);
    CHECK(trained == want - 2048, "%s: trained %zu, want %zu (without bn_c/bn_s)", arch_name(a), trained, want - 2048);
    return 0;
}

TEST(model_param_count_insnotes) { return count_for(ARCH_INSNOTES, 512, 12, 512, 32, 12, 55185133); }
TEST(model_param_count_phonenums) { return count_for(ARCH_PHONENUMS, 256, 10, 48, 32, 10, 20612787); }
TEST(model_param_count_sprites) { return count_for(ARCH_SPRITES, 256, 9, 64, 64, 18, 25858227); }
TEST(model_param_count_svhn) { return count_for(ARCH_SVHN, 512, 2, 48, 32, 20, 109530595); }

TEST(model_rejects_odd_sizes) {
    Config c;
    tiny_config(&c);
    c.n_feature = 10; /* 10 -> 5 -> odd at the second stride */
    Model *m = model_build(&c, 0);
    CHECK(!m, "odd fragment size accepted");
    CHECK(strstr(v3_last_error(), "odd"), "message: %s", v3_last_error());
    return 0;
}

TEST(model_init_is_seeded_and_pytorch_bounds) {
    Config c;
    tiny_config(&c);
    Model *a = model_build(&c, 5), *b = model_build(&c, 5), *d = model_build(&c, 6);
    CHECK(a && b && d, "build failed: %s", v3_last_error());
    int same = !memcmp(a->p, b->p, sizeof(float) * a->n_params), differ = memcmp(a->p, d->p, sizeof(float) * a->n_params);
    /* conv weight bound 1/sqrt(cin*kh*kw); convT bound uses cout*kh*kw (dim 1 of its weight) */
    const Stage *st = &a->enc[0], *out = &a->dec[a->n_dec - 1];
    float b1 = 1.0f / sqrtf((float)(st->c0.g.cin * 9)), b2 = 1.0f / sqrtf((float)(out->c0.g.cout * 9));
    float mx1 = 0, mx2 = 0;
    for (size_t i = 0; i < (size_t)st->c0.g.cin * st->c0.g.cout * 9; i++) mx1 = fmaxf(mx1, fabsf(a->p[st->c0.w + i]));
    for (size_t i = 0; i < (size_t)out->c0.g.cin * out->c0.g.cout * 9; i++) mx2 = fmaxf(mx2, fabsf(a->p[out->c0.w + i]));
    model_free(a); model_free(b); model_free(d);
    CHECK(same && differ, "initialisation not a function of the seed");
    CHECK(mx1 <= b1 && mx1 > 0.8f * b1, "conv weights max %.4f, bound %.4f", mx1, b1);
    CHECK(mx2 <= b2 && mx2 > 0.5f * b2, "convT weights max %.4f, bound %.4f (fan_in = out_channels*k*k)", mx2, b2);
    return 0;
}

typedef struct { Model *m; const float *x; int B; } MCtx;

static double model_loss(void *p) {
    MCtx *c = p;
    LossTerms L;
    model_forward_mode(c->m, c->x, c->B, 1, VQ_FROZEN, &L);
    return L.total;
}

/* Full-model FD check with the given loss weights; returns the worst per-tensor relative error and its name. */
static double whole_model_fd(double w_recon, double w_v3, double w_commit, char *worst_name, size_t cap,
                             LossTerms *Lout) {
    Config c;
    tiny_config(&c);
    c.w_recon = w_recon;
    c.w_content = c.w_style = c.w_sample = c.w_fragment = w_v3;
    c.w_commit = w_commit;
    c.relativity = 4; /* all four hinges stay active; a large r would shrink their gradients (1/r) to float noise */
    Model *m = model_build(&c, 11);
    if (!m) return INFINITY;
    int B = 4, N = B * c.n_fragments;
    size_t nx = (size_t)N * 3 * 8 * 8;
    float *x = falloc(nx);
    fill_uniform(x, nx, 12, -1, 1);
    MCtx ctx = {m, x, B};
    LossTerms L;
    model_forward_mode(m, x, B, 1, VQ_TRAIN, &L); /* k-means init + one EMA update */
    /* Straight-through surrogate: q = zc + fixed offset, with fixed "codewords" q_const = zc0 + noise, one per
     * fragment, so the commitment term is non-zero and no two q rows tie (a tie is a |.| kink at the base). */
    model_forward_mode(m, x, B, 1, VQ_FROZEN, &L);
    float *off = falloc((size_t)N * c.d_emb_c), *qc = falloc((size_t)N * c.d_emb_c);
    Rng jr;
    rng_seed(&jr, 5);
    for (size_t i = 0; i < (size_t)N * c.d_emb_c; i++) {
        qc[i] = m->zc[i] + (float)(0.3 * rng_normal(&jr));
        off[i] = qc[i] - m->zc[i];
    }
    model_test_q_offset = off;
    model_test_q_const = qc;
    model_forward_mode(m, x, B, 1, VQ_FROZEN, &L);
    model_backward(m);
    float *grad = falloc(m->n_params);
    memcpy(grad, m->g, sizeof(float) * m->n_params);
    double gss = 0;
    for (size_t i = 0; i < m->n_trainable; i++) gss += (double)grad[i] * grad[i];
    double rms = sqrt(gss / m->n_trainable), worst = 0;
    for (int t = 0; t < m->n_params_t; t++) {
        const TensorInfo *ti = &m->params[t];
        if (!ti->trainable) continue;
        double e = fd_dir_error(model_loss, &ctx, m->p + ti->off, grad + ti->off, ti->n, 3, 1e-3, 0.5 * rms, 99 + t);
        if (e > worst) { worst = e; snprintf(worst_name, cap, "%s", ti->name); }
    }
    model_test_q_offset = model_test_q_const = NULL;
    if (getenv("V3_TEST_VERBOSE")) fprintf(stderr, "    worst %.3g in %s\n", worst, worst_name);
    *Lout = L;
    model_free(m); ffree(x); ffree(off); ffree(qc); ffree(grad);
    return worst;
}

/* One whole-model check: the weighted terms must be active (or the check would test nothing) and every tensor's
 * directional finite difference must agree within 5 % of its gradient norm. */
static int check_whole(double w_recon, double w_v3, double w_commit) {
    char name[96] = "";
    LossTerms L;
    double e = whole_model_fd(w_recon, w_v3, w_commit, name, sizeof name, &L);
    CHECK(w_v3 == 0 || (L.content > 0 && L.style > 0 && L.sample > 0 && L.fragment > 0),
          "expected all four hinges active (content %.3g style %.3g sample %.3g fragment %.3g)", L.content, L.style,
          L.sample, L.fragment);
    CHECK(w_commit == 0 || L.commit > 0, "commitment loss is 0");
    CHECK(e < 5e-2, "worst relative FD error %.3g in tensor %s", e, name);
    return 0;
}

TEST(model_whole_gradient_fd_recon_only) { return check_whole(1, 0, 0); }
TEST(model_whole_gradient_fd_v3_terms_only) { return check_whole(0, 1, 0); }
TEST(model_whole_gradient_fd_commit_only) { return check_whole(0, 0, 1); }
TEST(model_whole_gradient_fd_authors_weights) { return check_whole(1, 1, 0.1); }

TEST(model_nan_loss_is_reported) {
    Config c;
    tiny_config(&c);
    Model *m = model_build(&c, 1);
    size_t nx = (size_t)2 * 3 * 3 * 64;
    float *x = falloc(nx);
    fill_uniform(x, nx, 2, -1, 1);
    m->p[m->lin0_b] = NAN;
    LossTerms L;
    int rc = model_forward(m, x, 2, 1, &L);
    model_free(m); ffree(x);
    CHECK(rc == -1, "NaN loss not reported");
    CHECK(strstr(v3_last_error(), "non-finite loss"), "message: %s", v3_last_error());
    return 0;
}

TEST(model_eval_mode_is_pure) {
    /* Eval: BN running stats, VQ frozen, no commit term; two eval passes give identical outputs and leave
     * parameters, buffers and codebook untouched. */
    Config c;
    tiny_config(&c);
    Model *m = model_build(&c, 3);
    size_t nx = (size_t)3 * 3 * 3 * 64;
    float *x = falloc(nx);
    fill_uniform(x, nx, 4, -1, 1);
    LossTerms L1, L2;
    model_forward(m, x, 3, 1, &L1); /* train step initialises the codebook and moves BN running stats */
    float *buf = falloc(m->n_bufs), *emb = falloc((size_t)m->vq.K * m->vq.d);
    memcpy(buf, m->buf, sizeof(float) * m->n_bufs);
    memcpy(emb, m->vq.embed, sizeof(float) * m->vq.K * m->vq.d);
    model_forward(m, x, 3, 0, &L1);
    model_forward(m, x, 3, 0, &L2);
    int same_buf = !memcmp(buf, m->buf, sizeof(float) * m->n_bufs);
    int same_emb = !memcmp(emb, m->vq.embed, sizeof(float) * m->vq.K * m->vq.d);
    model_free(m); ffree(x); ffree(buf); ffree(emb);
    CHECK(L1.total == L2.total, "eval not deterministic: %.9g vs %.9g", L1.total, L2.total);
    CHECK(L1.commit == 0, "eval commit %.3g, want 0", L1.commit);
    CHECK(same_buf && same_emb, "eval changed BN running stats (%d) or the codebook (%d)", !same_buf, !same_emb);
    return 0;
}

TEST(model_rejects_layers_with_no_channels) {
    Config c;
    config_defaults(&c);
    snprintf(c.path, sizeof c.path, "(test)");
    c.arch = ARCH_INSNOTES;
    c.n_fragments = 2;
    c.n_feature = 512;
    c.fragment_len = 32;
    c.n_channels = 64; /* cnn_1 would start at 64 / 16 >> 3 = 0 channels */
    Model *m = model_build(&c, 1);
    CHECK(!m && strstr(v3_last_error(), "n_channels >= 128"), "built: %p, message: %s", (void *)m, v3_last_error());
    c.n_channels = 128;
    c.d_emb_c = c.d_emb_s = 8;
    m = model_build(&c, 1);
    CHECK(m, "n_channels 128: %s", v3_last_error());
    model_free(m);
    return 0;
}

TEST(model_encode_decode_match_the_eval_forward) {
    /* The split pieces give exactly what the whole eval forward computes (any fragment count, and a decode from
     * swapped styles differs), and they change neither BN statistics nor the codebook. */
    Config c;
    tiny_config(&c);
    Model *m = model_build(&c, 5);
    int B = 3, n = c.n_fragments, N = B * n;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    float *x = falloc(frag * N);
    fill_uniform(x, frag * N, 6, -1, 1);
    LossTerms L;
    model_forward(m, x, B, 1, &L);
    model_forward(m, x, B, 0, &L);
    float *zc = falloc((size_t)N * m->dc), *q = falloc((size_t)N * m->dc), *zs = falloc((size_t)N * m->ds),
          *xh = falloc(frag * N), *xh2 = falloc(frag * N), *buf = falloc(m->n_bufs);
    int *ind = xmalloc(sizeof(int) * N);
    memcpy(zc, m->zc, sizeof(float) * N * m->dc);
    memcpy(q, m->q, sizeof(float) * N * m->dc);
    memcpy(zs, m->zs, sizeof(float) * N * m->ds);
    memcpy(xh, m->xhat, sizeof(float) * frag * N);
    memcpy(ind, m->ind, sizeof(int) * N);
    memcpy(buf, m->buf, sizeof(float) * m->n_bufs);
    int rc = model_encode(m, x, N - 1); /* not a whole number of samples */
    int enc_ok = !rc && !memcmp(zc, m->zc, sizeof(float) * (N - 1) * m->dc) &&
                 !memcmp(q, m->q, sizeof(float) * (N - 1) * m->dc) &&
                 !memcmp(zs, m->zs, sizeof(float) * (N - 1) * m->ds) && !memcmp(ind, m->ind, sizeof(int) * (N - 1));
    poison(xh2, frag * N);
    int rc2 = model_decode(m, q, zs, N, xh2);
    int dec_ok = !rc2 && !memcmp(xh2, xh, sizeof(float) * frag * N); /* bit-exact: the same arithmetic */
    /* the style of fragment 0 for everyone: the output must change */
    for (int i = 1; i < N; i++) memcpy(zs + (size_t)i * m->ds, zs, sizeof(float) * m->ds);
    model_decode(m, q, zs, N, xh2);
    int changed = memcmp(xh2 + frag, xh + frag, sizeof(float) * frag * (N - 1)) != 0;
    int same_buf = !memcmp(buf, m->buf, sizeof(float) * m->n_bufs);
    model_free(m); ffree(x); ffree(zc); ffree(q); ffree(zs); ffree(xh); ffree(xh2); ffree(buf); free(ind);
    CHECK(enc_ok, "model_encode differs from the eval forward (rc %d)", rc);
    CHECK(dec_ok, "model_decode differs from the eval forward (rc %d)", rc2);
    CHECK(changed, "decoding with another style changed nothing");
    CHECK(same_buf, "encode/decode changed the BatchNorm running statistics");
    return 0;
}

/* loss_config.tie_gradient in the model step: with two codes for three fragments a sample, ties are certain. The
 * pytorch rule feeds the V3 statistics the straight-through value in training (and the codewords in eval), so the
 * loss moves only by rounding while the tied fragments get extra gradient; the zero rule reproduces the
 * codeword-only step. Both models start from the same seed, batch and k-means draws. */
TEST(model_tie_gradient_pytorch_vs_zero) {
    Model *mm[2];
    LossTerms L[2], E[2];
    float *gzc[2], *grad[2];
    size_t nx = (size_t)4 * 3 * 3 * 64;
    float *x = falloc(nx);
    fill_uniform(x, nx, 41, -1, 1);
    int ties = 0, wired = 1;
    for (int k = 0; k < 2; k++) {
        Config c;
        tiny_config(&c);
        c.n_atoms = 2;
        c.relativity = 15;
        snprintf(c.tie_gradient, sizeof c.tie_gradient, "%s", k ? "zero" : "pytorch");
        Model *m = mm[k] = model_build(&c, 42);
        CHECK(model_forward(m, x, 4, 1, &L[k]) == 0, "forward: %s", v3_last_error());
        int N = m->N, dc = m->dc;
        StepInternals in;
        step_internals(m->host_step, &in);
        wired &= in.q_stats == (k ? in.q : in.q_ste);
        if (!k)
            for (int i = 0; i < N; i++)
                for (int j = i + 1; j < N && j / 3 == i / 3; j++) ties += m->ind[i] == m->ind[j];
        model_backward(m);
        gzc[k] = falloc((size_t)N * dc);
        step_internals(m->host_step, &in);
        memcpy(gzc[k], in.gzc, sizeof(float) * N * dc);
        grad[k] = falloc(m->n_params);
        memcpy(grad[k], m->g, sizeof(float) * m->n_params);
        CHECK(model_forward(m, x, 4, 0, &E[k]) == 0, "eval forward: %s", v3_last_error());
        step_internals(m->host_step, &in);
        wired &= in.q_stats == in.q;
    }
    size_t nz = (size_t)mm[0]->N * mm[0]->dc;
    double dz = 0, z = 0, dg = 0;
    for (size_t i = 0; i < nz; i++) dz += fabs((double)gzc[0][i] - gzc[1][i]), z += fabs(gzc[1][i]);
    for (size_t i = 0; i < mm[0]->n_trainable; i++) dg = fmax(dg, fabs((double)grad[0][i] - grad[1][i]));
    int same_eval = E[0].total == E[1].total && E[0].content == E[1].content && E[0].Sc == E[1].Sc;
    double lrel = fabs(L[0].total - L[1].total) / L[1].total;
    for (int k = 0; k < 2; k++) { model_free(mm[k]); ffree(gzc[k]); ffree(grad[k]); }
    ffree(x);
    CHECK(ties > 0, "setup: no two fragments of a sample share a code");
    CHECK(wired, "the V3 statistics did not see q_ste in training / q in eval");
    CHECK(lrel < 1e-6, "training losses differ by %.3g relative (only rounding expected)", lrel);
    CHECK(same_eval, "eval losses differ between the rules (eval sees the codewords in both)");
    CHECK(dz > 1e-3 * z && dg > 0, "tied fragments got no extra gradient (|dg_zc| %.3g of %.3g)", dz, z);
    return 0;
}

/* The step's check before the update (step_grads_finite, the count_nonfinite op): finite gradients pass; one NaN
 * or infinite element among the trainable parameters fails it; a NaN in the untrained bn_c/bn_s tail does not. */
TEST(step_grads_finite_catches_one_bad_element) {
    Config c;
    tiny_config(&c);
    Model *m = model_build(&c, 3);
    CHECK(m, "model_build: %s", v3_last_error());
    size_t nx = (size_t)4 * c.n_fragments * m->arch.C * m->arch.H * m->arch.W;
    float *x = falloc(nx);
    fill_uniform(x, nx, 5, -1, 1);
    LossTerms L;
    CHECK(model_forward(m, x, 4, 1, &L) == 0, "forward: %s", v3_last_error());
    model_backward(m);
    int ok0 = step_grads_finite(m->host_step);
    float keep = m->g[m->n_trainable - 1];
    m->g[m->n_trainable - 1] = NAN;
    int nan_last = step_grads_finite(m->host_step);
    m->g[m->n_trainable - 1] = keep;
    m->g[0] = -INFINITY;
    int inf_first = step_grads_finite(m->host_step);
    m->g[0] = 0;
    m->g[m->n_params - 1] = NAN; /* bn_s.bias: registered, never trained */
    int untrained = step_grads_finite(m->host_step);
    model_free(m);
    ffree(x);
    CHECK(ok0 && !nan_last && !inf_first && untrained,
          "finite %d, NaN in the last trained %d, -Inf in the first %d, NaN untrained %d", ok0, nan_last, inf_first,
          untrained);
    return 0;
}
