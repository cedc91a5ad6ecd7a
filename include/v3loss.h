/* The V3 statistics and hinge losses (spec v3.md §3), forward and hand-written backward, CPU reference.
 * mpd = mean pairwise Euclidean distance over ordered pairs; u(0) = 0 (zero subgradient at zero distance).
 * The model passes q as the codewords or as v3_ste_value (loss_config.tie_gradient). */
#ifndef V3_V3LOSS_H
#define V3_V3LOSS_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double w_content, w_style, w_sample, w_fragment;
    double relativity; /* r */
    double eps;        /* 1e-5 */
    int supersample_content;
    /* The rest of the objective, so the step reads every loss weight from one place (model_build fills all of
     * them from loss_config.weights): total = w_recon * recon + weighted V3 terms + w_commit * commit. */
    double w_recon, w_commit;
    /* ours (loss_config.term_relativity): a term's own r; 0 = relativity. Where it equals relativity the loss
     * and its gradient are bit-identical to the single-r form (include/v3_coef.h). */
    double r_content, r_style, r_sample, r_fragment;
    /* ours (loss_config.per_sample_hinges): the content, style and fragment hinges per sample, averaged
     * (include/v3_coef.h, v3_hinges_ps); 0 = the authors' hinges of the means. */
    int per_sample;
    /* ours (loss_config.content_spread: energy): S_c as the mean energy distance between the samples' sets of
     * content codes instead of the distance between their means (v3_loss); 0 = means, the authors' S_c. */
    int content_energy;
    /* ours (loss_config.hinge: log): each hinge on the log of its ratio, h = ln(r/t)/ln r, linear below t = 1
     * (include/v3_coef.h, v3_hinge_log); 0 = linear, the authors' h = (r - t)/r. */
    int log_hinge;
} V3LossCfg;

typedef struct {
    double Fc, Sc, Fs, Ss; /* content_frag_var, content_samp_var, style_frag_var, style_samp_var */
    double Ss_ss;          /* supersample style spread (only with supersample_content; else = Ss) */
    double content, style, sample, fragment; /* unweighted hinge values h(.) */
    double weighted;       /* w_content*content + ... + w_fragment*fragment */
    int nB, nn;            /* the (B', n') grouping used for S_c (= B, n without supersampling) */
} V3Stats;

/* The straight-through value as PyTorch forms it in float32, out[i] = z[i] + (q[i] - z[i]) (vector-quantize-pytorch:
 * x + (quantize - x).detach()). It equals q up to rounding, so two fragments on the same codeword are at a tiny
 * non-zero distance and the norm's gradient gives them unit-length pushes in the rounding direction, as in the
 * authors' training (loss_config.tie_gradient: pytorch; NOTES.md, "Ties in the quantised codes"). */
void v3_ste_value(size_t n, const float *z, const float *q, float *out);

/* Largest divisor of m that is <= floor(sqrt(m)) (the supersample fragment count n'). */
int v3_supersample_n(int m);

/* The hinges and the weighted sum from st's five statistics (v3_loss's last step; the cpu backend's too). */
void v3_stats_finish(const V3LossCfg *cfg, V3Stats *st);

/* The same for the per-sample form (cfg->per_sample): the hinges from st's S_c, S_s, S_s^ss and the per-sample
 * mpds mzc, mq, mzs [B] (st's F_c and F_s stay the means, for the log). */
void v3_stats_finish_ps(const V3LossCfg *cfg, V3Stats *st, int B, const double *mzc, const double *mq,
                        const double *mzs);

/* The mean distance between rows of different samples of X [B*n, d] (double), over ordered pairs:
 * C = sum_{b != b'} sum_{k, l} |x_bk - x_b'l| / (B(B-1) n^2). If G != NULL, G += gscale * dC/dX (zero distances
 * give the zero subgradient). With the within-sample mpd F it gives the mean energy distance between samples,
 * 2 (C - (n-1)/n F) (loss_config.content_spread: energy). */
double v3_cross_mean(const double *X, int B, int n, int d, double *G, double gscale);

/* zc, q: [B*n, dc]; zs: [B*n, ds] (fragment index b*n+k). Fills st. If gzc/gzs are not NULL, ADDS the gradient
 * of st->weighted to them (q's share goes to zc: straight-through). Requires B >= 2 (B' >= 2) and n >= 2. */
void v3_loss(const V3LossCfg *cfg, int B, int n, int dc, int ds, const float *zc, const float *q, const float *zs,
             V3Stats *st, float *gzc, float *gzs);
#ifdef __cplusplus
}
#endif
#endif
