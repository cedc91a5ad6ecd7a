/* The Model's own calls (model.h: model_forward, model_backward, model_adamw, model_encode, model_decode) on the
 * host: one step (step.h) on the model's host backend over the model's own buffers, created on first use and
 * re-created when a call needs more fragments than it was sized for. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "model.h"
#include "step.h"

static Step *host_step(Model *m, int N) {
    if (m->host_step && step_capacity(m->host_step) >= N) return m->host_step;
    step_free(m->host_step);
    m->host_step = step_create(m, m->host_backend, N, V3_MATH_FP32);
    return m->host_step;
}

/* The views of the last call's outputs (model.h: m->zc, m->q, m->zs, m->ind, m->xhat). */
static int set_views(Model *m) {
    StepOutputs o;
    if (step_outputs(m->host_step, &o)) return -1;
    m->N = o.N;
    m->zc = o.zc;
    m->q = o.q;
    m->zs = o.zs;
    m->ind = o.ind;
    m->xhat = o.xhat;
    return 0;
}

size_t model_activation_bytes(Model *m, int N) { return step_estimate_bytes(m, m->host_backend, N); }

int model_forward_mode(Model *m, const float *x, int B, int bn_train, VqMode vq_mode, LossTerms *out) {
    Step *s = host_step(m, B * m->cfg.n_fragments);
    if (!s) return -1;
    int rc = step_forward(s, x, 0, B, bn_train, vq_mode, out);
    if (set_views(m)) return -1;
    return rc;
}

int model_forward(Model *m, const float *x, int B, int train, LossTerms *out) {
    return model_forward_mode(m, x, B, train, train ? VQ_TRAIN : VQ_EVAL, out);
}

void model_backward(Model *m) {
    if (!m->host_step) V3_FATAL("model_backward before model_forward");
    step_backward(m->host_step);
}

void model_adamw(Model *m, float lr) {
    if (!m->host_step) V3_FATAL("model_adamw before model_forward");
    step_adamw(m->host_step, lr);
}

int model_encode(Model *m, const float *x, int N) {
    if (N < 1) return v3_error("model_encode: %d fragments (expected at least 1)", N);
    Step *s = host_step(m, N);
    if (!s || step_encode(s, x, N)) return -1;
    return set_views(m);
}

int model_decode(Model *m, const float *q, const float *zs, int N, float *xhat) {
    if (N < 1) return v3_error("model_decode: %d fragments (expected at least 1)", N);
    Step *s = host_step(m, N);
    if (!s || step_decode(s, q, zs, N, xhat)) return -1;
    m->N = 0; /* the views belonged to the last encode or forward */
    return 0;
}

const char *loss_nonfinite_terms(const LossTerms *L, char *buf, size_t cap) {
    const char *names[] = {"recon", "commit", "content", "style", "sample", "fragment"};
    const double v[] = {L->recon, L->commit, L->content, L->style, L->sample, L->fragment};
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < 6; i++)
        if (!isfinite(v[i]) && n < cap) n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "," : "", names[i]);
    if (!buf[0] && !isfinite(L->total)) snprintf(buf, cap, "total"); /* finite terms whose weighted sum overflowed */
    return buf;
}

int loss_nonfinite_error(const LossTerms *L) {
    char t[128];
    return v3_error("non-finite loss: %s (total %g: recon %g, commit %g, content %g, style %g, sample %g, fragment %g)",
                    loss_nonfinite_terms(L, t, sizeof t), L->total, L->recon, L->commit, L->content, L->style,
                    L->sample, L->fragment);
}
