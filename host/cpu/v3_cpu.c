/* V3 statistics and their gradient on the cpu backend: the reference's double arithmetic (host/model/v3loss.c),
 * organised for two cores.
 *
 * The reference computes every pairwise distance twice (forward, then again in the backward) in scalar double
 * loops, one term after another. Here:
 *   - the forward computes all pairwise distances of all terms (three fragment terms: within each sample; three or
 *     four sample terms: between group means) in one parallel loop over the pairs, 8 double lanes per distance,
 *     and keeps them: the backward runs on the same inputs (op_list.h) and reuses them;
 *   - the statistics add the distances in the reference's order, so they differ from it only by the lanes'
 *     summation order inside each distance (~1e-16 relative);
 *   - the backward is row-parallel: each row gathers sum_j k_ij (x_i - x_j) over its partners (the reference
 *     scatters the same terms pair by pair), so no two threads write one row and no step depends on the thread
 *     count. Zero distances give the zero subgradient, as in the reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu_internal.h"
#include "v3_coef.h"
#include "v3loss.h"

typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));

/* A term: `groups` groups of m rows of dimension d at offset off of the double buffer; its pair distances at
 * pairs[poff ..] in (group, i < j) order. */
typedef struct {
    size_t off, poff;
    int groups, m, d;
} Term;
enum { T_FZC, T_FQ, T_FZS, T_SZC, T_SQ, T_SZS, T_SZS_SS, N_TERMS };

typedef struct {
    V3LossCfg cfg;
    int B, n, dc, ds, nn, nB, nterms;
    Term t[N_TERMS];
    size_t npairs;
    double *buf;   /* Zc, Q, Zs [N, d] and the group means of the sample terms */
    double *pairs; /* every term's pair distances */
    int *task;     /* pair task k -> (term, group, i, j) packed as 4 ints */
    size_t moff;   /* where the means start in buf */
    double *gm;    /* gradients of the group means (sample terms): gm[o - moff] for buf's offset o */
    double *grow;  /* [2N, max(dc, ds)]: each row's double gradient, z_c side then z_s side */
    double stats[V3_STATS_DOUBLES];
    V3Stats st;
    double *each;  /* [5B]: per-sample mpds of z_c, q, z_s; then dL/dF_c[b], dL/dF_s[b] (per-sample hinges) */
    double *gx;    /* [N, dc]: content_spread energy: the between-sample distance terms' gradient (v3_cross_mean) */
} CpuV3;

V3_CLONES static double dist8(const double *a, const double *b, int d) {
    v8d acc = {0};
    int t = 0;
    for (; t + 8 <= d; t += 8) {
        v8d x, y;
        memcpy(&x, a + t, sizeof x);
        memcpy(&y, b + t, sizeof y);
        x -= y;
        acc += x * x;
    }
    double s = 0;
    for (; t < d; t++) s += (a[t] - b[t]) * (a[t] - b[t]);
    return sqrt((((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + s);
}
/* g += k (a - b) */
V3_CLONES static void axpy_diff8(double *g, double k, const double *a, const double *b, int d) {
    int t = 0;
    for (; t + 8 <= d; t += 8) {
        v8d x, y, z;
        memcpy(&x, a + t, sizeof x);
        memcpy(&y, b + t, sizeof y);
        memcpy(&z, g + t, sizeof z);
        z += k * (x - y);
        memcpy(g + t, &z, sizeof z);
    }
    for (; t < d; t++) g[t] += k * (a[t] - b[t]);
}
/* out += (float)(g + s1 * m1 + s2 * m2) (m2 may be NULL): a row's gradient with its groups' mean gradients */
V3_CLONES static void finish_row(float *out, const double *g, double s1, const double *m1, double s2,
                                 const double *m2, int d) {
    int t = 0;
    for (; t + 8 <= d; t += 8) {
        v8d v, a, b = {0};
        memcpy(&v, g + t, sizeof v);
        memcpy(&a, m1 + t, sizeof a);
        if (m2) memcpy(&b, m2 + t, sizeof b);
        v = v + a / s1;
        if (m2) v += b / s2;
        v8f o, f = __builtin_convertvector(v, v8f);
        memcpy(&o, out + t, sizeof o);
        o += f;
        memcpy(out + t, &o, sizeof o);
    }
    for (; t < d; t++) {
        double v = g[t] + m1[t] / s1;
        if (m2) v += m2[t] / s2;
        out[t] += (float)v;
    }
}

static void add_term(CpuV3 *w, int id, size_t off, int groups, int m, int d) {
    Term *t = &w->t[id];
    t->off = off, t->groups = groups, t->m = m, t->d = d;
    t->poff = w->npairs;
    w->npairs += (size_t)groups * m * (m - 1) / 2;
}

void *cpu_v3_create(const V3LossCfg *cfg, int B, int n, int dc, int ds) {
    CpuV3 *w = xcalloc(1, sizeof *w);
    int N = B * n;
    w->cfg = *cfg, w->B = B, w->n = n, w->dc = dc, w->ds = ds;
    w->nn = cfg->supersample_content ? v3_supersample_n(N) : n;
    w->nB = N / w->nn;
    size_t o = 0;
    add_term(w, T_FZC, o, B, n, dc), o += (size_t)N * dc;
    add_term(w, T_FQ, o, B, n, dc), o += (size_t)N * dc;
    add_term(w, T_FZS, o, B, n, ds), o += (size_t)N * ds;
    size_t means = o;
    add_term(w, T_SZC, o, 1, w->nB, dc), o += (size_t)w->nB * dc;
    add_term(w, T_SQ, o, 1, w->nB, dc), o += (size_t)w->nB * dc;
    add_term(w, T_SZS, o, 1, B, ds), o += (size_t)B * ds;
    w->nterms = cfg->supersample_content ? N_TERMS : N_TERMS - 1;
    if (cfg->supersample_content) add_term(w, T_SZS_SS, o, 1, w->nB, ds), o += (size_t)w->nB * ds;
    w->buf = xmalloc(sizeof(double) * o);
    w->moff = means;
    w->gm = xmalloc(sizeof(double) * (o - means));
    w->pairs = xmalloc(sizeof(double) * (w->npairs ? w->npairs : 1));
    w->task = xmalloc(sizeof(int) * 4 * (w->npairs ? w->npairs : 1));
    size_t k = 0;
    for (int id = 0; id < w->nterms; id++)
        for (int g = 0; g < w->t[id].groups; g++)
            for (int i = 0; i < w->t[id].m; i++)
                for (int j = i + 1; j < w->t[id].m; j++, k++)
                    w->task[4 * k] = id, w->task[4 * k + 1] = g, w->task[4 * k + 2] = i, w->task[4 * k + 3] = j;
    w->grow = xmalloc(sizeof(double) * 2 * (size_t)N * (dc > ds ? dc : ds));
    w->each = xmalloc(sizeof(double) * 5 * (size_t)B);
    if (cfg->content_energy) w->gx = xmalloc(sizeof(double) * (size_t)N * dc);
    return w;
}

void cpu_v3_destroy(void *p) {
    CpuV3 *w = p;
    if (!w) return;
    free(w->buf), free(w->gm), free(w->pairs), free(w->task), free(w->grow), free(w->each), free(w->gx), free(w);
}

static const double *row(const CpuV3 *w, const Term *t, int g, int i) {
    return w->buf + t->off + ((size_t)g * t->m + i) * t->d;
}

/* dst = mean of `per` rows of d values at src (row stride d), the reference's order: sum in row order, divide */
V3_CLONES static void mean_rows(const double *src, int per, int d, double *dst) {
    int t = 0;
    for (; t + 8 <= d; t += 8) {
        v8d acc = {0}, v;
        for (int k = 0; k < per; k++) {
            memcpy(&v, src + (size_t)k * d + t, sizeof v);
            acc += v;
        }
        acc /= (double)per;
        memcpy(dst + t, &acc, sizeof acc);
    }
    for (; t < d; t++) {
        double m = 0;
        for (int k = 0; k < per; k++) m += src[(size_t)k * d + t];
        dst[t] = m / per;
    }
}

/* means of `per` consecutive rows of src [groups*per, d] into dst [groups, d] */
static void group_means(const double *src, int groups, int per, int d, double *dst) {
#pragma omp parallel for schedule(static) if ((size_t)groups * per * d >= 65536)
    for (int g = 0; g < groups; g++) mean_rows(src + (size_t)g * per * d, per, d, dst + (size_t)g * d);
}

/* dst = (double)src, 8 lanes */
V3_CLONES static void to_double(const float *src, size_t n, double *dst) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f f;
        memcpy(&f, src + i, sizeof f);
        v8d v = __builtin_convertvector(f, v8d);
        memcpy(dst + i, &v, sizeof v);
    }
    for (; i < n; i++) dst[i] = src[i];
}

/* a term's value from its distances: the mean over groups of each group's mpd, summed as the reference does;
 * each (if given) gets every group's mpd */
static double term_value(const CpuV3 *w, const Term *t, double *each) {
    const double *p = w->pairs + t->poff;
    size_t per = (size_t)t->m * (t->m - 1) / 2;
    double s = 0;
    for (int g = 0; g < t->groups; g++) {
        double sum = 0;
        for (size_t k = 0; k < per; k++) sum += p[(size_t)g * per + k];
        const double v = 2.0 * sum / ((double)t->m * (t->m - 1));
        if (each) each[g] = v;
        s += v;
    }
    return t->groups == 1 ? s : s / t->groups;
}

void cpu_v3_forward(void *p, const float *zc, const float *q, const float *zs) {
    CpuV3 *w = p;
    int N = w->B * w->n, dc = w->dc, ds = w->ds;
    size_t nc = (size_t)N * dc, ns = (size_t)N * ds;
    double *Zc = w->buf + w->t[T_FZC].off, *Q = w->buf + w->t[T_FQ].off, *Zs = w->buf + w->t[T_FZS].off;
#pragma omp parallel sections if (nc + ns >= 65536)
    {
#pragma omp section
        to_double(zc, nc, Zc), to_double(zs, ns / 2, Zs);
#pragma omp section
        to_double(q, nc, Q), to_double(zs + ns / 2, ns - ns / 2, Zs + ns / 2);
    }
    group_means(Zc, w->nB, w->nn, dc, w->buf + w->t[T_SZC].off);
    group_means(Q, w->nB, w->nn, dc, w->buf + w->t[T_SQ].off);
    group_means(Zs, w->B, w->n, ds, w->buf + w->t[T_SZS].off);
    if (w->nterms == N_TERMS) group_means(Zs, w->nB, w->nn, ds, w->buf + w->t[T_SZS_SS].off);
#pragma omp parallel for schedule(static) if (w->npairs * (size_t)dc >= 65536)
    for (size_t k = 0; k < w->npairs; k++) {
        const int *tk = w->task + 4 * k;
        const Term *t = &w->t[tk[0]];
        w->pairs[k] = dist8(row(w, t, tk[1], tk[2]), row(w, t, tk[1], tk[3]), t->d);
    }
    V3Stats *st = &w->st;
    st->nB = w->nB, st->nn = w->nn;
    const int B = w->B;
    double *mzc = w->each, *mq = w->each + B, *mzs = w->each + 2 * B;
    const double Fzc = term_value(w, &w->t[T_FZC], mzc), Fq = term_value(w, &w->t[T_FQ], mq);
    st->Fc = 0.5 * Fzc + 0.5 * Fq;
    if (w->cfg.content_energy) { /* the mean energy distance between samples (v3_loss); its cross distances are
                                    few (N^2/2 of d = dc), so the reference's loop serves */
        const double wf = (double)(w->n - 1) / w->n;
        st->Sc = (v3_cross_mean(Zc, B, w->n, dc, NULL, 0) - wf * Fzc) + (v3_cross_mean(Q, B, w->n, dc, NULL, 0) - wf * Fq);
    } else
        st->Sc = 0.5 * term_value(w, &w->t[T_SZC], NULL) + 0.5 * term_value(w, &w->t[T_SQ], NULL);
    st->Fs = term_value(w, &w->t[T_FZS], mzs);
    st->Ss = term_value(w, &w->t[T_SZS], NULL);
    st->Ss_ss = w->nterms == N_TERMS ? term_value(w, &w->t[T_SZS_SS], NULL) : st->Ss;
    if (w->cfg.per_sample) v3_stats_finish_ps(&w->cfg, st, B, mzc, mq, mzs);
    else v3_stats_finish(&w->cfg, st);
    v3_stats_pack(st, w->stats);
}

/* g += sum over the partners j of row i in group grp of term t: coef / dist_ij * (x_i - x_j), dist_ij > 0 */
static void gather(const CpuV3 *w, const Term *t, int grp, int i, double coef, double *g) {
    const double *p = w->pairs + t->poff + (size_t)grp * t->m * (t->m - 1) / 2, *xi = row(w, t, grp, i);
    int m = t->m;
    for (int j = 0; j < m; j++) {
        if (j == i) continue;
        int a = i < j ? i : j, b = i < j ? j : i; /* pair (a, b) sits at a*m - a(a+1)/2 + (b - a - 1) */
        double dist = p[(size_t)a * m - (size_t)a * (a + 1) / 2 + (b - a - 1)];
        if (dist > 0) axpy_diff8(g, coef / dist, xi, row(w, t, grp, j), t->d);
    }
}

void cpu_v3_backward(void *p, const float *zc, const float *q, const float *zs, float *gzc, float *gzs) {
    CpuV3 *w = p;
    const V3Stats *st = &w->st;
    int B = w->B, n = w->n, N = B * n, nn = w->nn;
    const int ps = w->cfg.per_sample;
    double *dFc_b = w->each + 3 * B, *dFs_b = w->each + 4 * B;
    const V3Coef c = ps ? v3_coef_ps(&w->cfg, B, w->each, w->each + B, w->each + 2 * B, st->Sc, st->Ss, st->Ss_ss,
                                     dFc_b, dFs_b)
                        : v3_coef(&w->cfg, st->Fc, st->Sc, st->Fs, st->Ss, st->Ss_ss);
    /* each pair term's coefficient, as mpd's gscale * 2 / (m (m - 1)) with frag_var's gscale / B */
    double coef[N_TERMS];
    double fr = 2.0 / ((double)n * (n - 1));
    coef[T_FZC] = 0.5 * c.dFc / B * fr, coef[T_FQ] = coef[T_FZC], coef[T_FZS] = c.dFs / B * fr;
    coef[T_SZC] = 0.5 * c.dSc * (2.0 / ((double)w->nB * (w->nB - 1))), coef[T_SQ] = coef[T_SZC];
    /* content_spread energy: S_c = sum over z_c, q of C - (n-1)/n F, so each within-sample content pair also gets
     * -dSc (n-1)/n of F's factor, the between-sample pairs dSc (v3_cross_mean, into gx), and the means nothing */
    const int energy = w->cfg.content_energy;
    const double fe = energy ? -c.dSc * ((double)(n - 1) / n) / B * fr : 0.0;
    if (energy) {
        coef[T_SZC] = coef[T_SQ] = 0;
        if (gzc) {
            memset(w->gx, 0, sizeof(double) * (size_t)N * w->dc);
            v3_cross_mean(w->buf + w->t[T_FZC].off, B, n, w->dc, w->gx, c.dSc);
            v3_cross_mean(w->buf + w->t[T_FQ].off, B, n, w->dc, w->gx, c.dSc);
        }
    }
    coef[T_SZS] = c.dSs * (2.0 / ((double)B * (B - 1)));
    coef[T_SZS_SS] = c.dSs_ss * (2.0 / ((double)w->nB * (w->nB - 1)));
    int first = gzc ? T_SZC : T_SZS, last = gzs ? w->nterms : T_SZS; /* the sample terms whose means are needed */
    /* the group means' gradients: one task per mean row */
    int mrows = 0, mstart[N_TERMS + 1];
    for (int id = first; id < last; id++) mstart[id] = mrows, mrows += w->t[id].m;
#pragma omp parallel for schedule(static) if ((size_t)mrows * w->t[first].m * w->dc >= 65536)
    for (int r = 0; r < mrows; r++) {
        int id = first;
        while (id + 1 < last && r >= mstart[id + 1]) id++;
        const Term *t = &w->t[id];
        int i = r - mstart[id];
        double *g = w->gm + (t->off - w->moff) + (size_t)i * t->d;
        memset(g, 0, sizeof(double) * t->d);
        gather(w, t, 0, i, coef[id], g);
    }
    /* each row: its fragment terms and its groups' mean gradients / group size, then += into the float gradient */
    int sides = (gzc ? 1 : 0) + (gzs ? 1 : 0);
#pragma omp parallel for schedule(static) if ((size_t)N * sides * n * w->dc >= 65536)
    for (int r = 0; r < N * sides; r++) {
        int zs_side = !gzc || r >= N, i = r % N, b = i / n, k = i % n;
        int d = zs_side ? w->ds : w->dc;
        double *g = w->grow + (size_t)r * (w->dc > w->ds ? w->dc : w->ds);
        memset(g, 0, sizeof(double) * d);
        if (!zs_side) {
            /* per-sample hinges: sample b's own dL/dF_c[b] (its 1/B included), as mpd's gscale 0.5 * dFc_b[b] */
            const double cf = (ps ? 0.5 * dFc_b[b] * fr : coef[T_FZC]) + fe;
            gather(w, &w->t[T_FZC], b, k, cf, g);
            gather(w, &w->t[T_FQ], b, k, cf, g);
            if (energy)
                for (int t = 0; t < d; t++) g[t] += w->gx[(size_t)i * d + t];
            const double *g1 = w->gm + (w->t[T_SZC].off - w->moff) + (size_t)(i / nn) * d,
                         *g2 = w->gm + (w->t[T_SQ].off - w->moff) + (size_t)(i / nn) * d;
            finish_row(gzc + (size_t)i * d, g, nn, g1, nn, g2, d);
        } else {
            gather(w, &w->t[T_FZS], b, k, ps ? dFs_b[b] * fr : coef[T_FZS], g);
            const double *g1 = w->gm + (w->t[T_SZS].off - w->moff) + (size_t)b * d,
                         *g2 = w->nterms == N_TERMS ? w->gm + (w->t[T_SZS_SS].off - w->moff) + (size_t)(i / nn) * d : NULL;
            finish_row(gzs + (size_t)i * d, g, n, g1, nn, g2, d);
        }
    }
}

const double *cpu_v3_stats(const void *p) { return ((const CpuV3 *)p)->stats; }
