/* conv2d (any stride/padding, rectangular kernels) and stride-1 transposed conv2d, forward and backward.
 * Lowered to im2col over a chunk of images, so each chunk is one GEMM: cols [cin*kh*kw, nc*Ho*Wo].
 * The transposed conv is the adjoint of a conv: its forward is a conv's data-gradient and vice versa. */
#include <string.h>

#include "common.h"
#include "ops.h"

/* Internal scratch, grown on demand. Single-threaded callers only (the trainer is one thread). */
static float *g_scratch[3];
static size_t g_scratch_n[3];

static float *scratch(int slot, size_t n) {
    if (g_scratch_n[slot] < n) {
        ffree(g_scratch[slot]);
        g_scratch[slot] = falloc(n);
        g_scratch_n[slot] = n;
    }
    return g_scratch[slot];
}

/* Keep the im2col buffer under ~32M floats (128 MB); big models then run the batch in chunks. */
#define COL_CAP ((size_t)32 << 20)

static int chunk_images(size_t per_image, int N) {
    size_t c = per_image ? COL_CAP / per_image : (size_t)N;
    if (c < 1) c = 1;
    return c > (size_t)N ? N : (int)c;
}

/* Output columns ow whose input column ow*s - p + j lies inside [0, W): [*lo, *hi). Lets the copy loops run
 * without a bounds test per element (im2col/col2im were 40% of a small model's CPU step). */
static void valid_cols(int Wo, int W, int s, int p, int j, int *lo, int *hi) {
    int a = p - j, l = a > 0 ? (a + s - 1) / s : 0;   /* ceil((p - j) / s), at least 0 */
    int h = (W - 1 + p - j) >= 0 ? (W - 1 + p - j) / s + 1 : 0;
    *lo = l < Wo ? l : Wo;
    *hi = h < Wo ? h : Wo;
    if (*hi < *lo) *hi = *lo;
}

/* cols[(c*kh+i)*kw+j][n*HoWo + oh*Wo + ow] = x[n][c][oh*sh-ph+i][ow*sw-pw+j] (0 outside). */
static void im2col(const float *x, int nc, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                   int Ho, int Wo, float *cols) {
    size_t HoWo = (size_t)Ho * Wo, ld = (size_t)nc * HoWo;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < C * kh * kw; r++) {
        int c = r / (kh * kw), i = (r / kw) % kh, j = r % kw, lo, hi;
        valid_cols(Wo, W, sw, pw, j, &lo, &hi);
        float *row = cols + (size_t)r * ld;
        for (int n = 0; n < nc; n++) {
            const float *xc = x + ((size_t)n * C + c) * H * W;
            float *out = row + n * HoWo;
            for (int oh = 0; oh < Ho; oh++) {
                int ih = oh * sh - ph + i;
                float *o = out + (size_t)oh * Wo;
                if (ih < 0 || ih >= H) { memset(o, 0, sizeof(float) * Wo); continue; }
                const float *xr = xc + (size_t)ih * W;
                for (int ow = 0; ow < lo; ow++) o[ow] = 0.0f;
                if (sw == 1) {
                    if (hi > lo) memcpy(o + lo, xr + (lo - pw + j), sizeof(float) * (size_t)(hi - lo));
                } else
                    for (int ow = lo; ow < hi; ow++) o[ow] = xr[ow * sw - pw + j];
                for (int ow = hi; ow < Wo; ow++) o[ow] = 0.0f;
            }
        }
    }
}

/* Adjoint of im2col: dx[n][c] = sum over (i,j) of the matching cols entries. Each (n,c) plane is owned by one
 * thread and summed in a fixed order ((i, j) outer; each (i, j) touches an element at most once), so the result
 * is deterministic. */
static void col2im(const float *cols, int nc, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                   int Ho, int Wo, float *dx) {
    size_t HoWo = (size_t)Ho * Wo, ld = (size_t)nc * HoWo;
#pragma omp parallel for schedule(static)
    for (int nci = 0; nci < nc * C; nci++) {
        int n = nci / C, c = nci % C;
        float *d = dx + (size_t)nci * H * W;
        memset(d, 0, sizeof(float) * H * W);
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                int lo, hi;
                valid_cols(Wo, W, sw, pw, j, &lo, &hi);
                const float *row = cols + ((size_t)(c * kh + i) * kw + j) * ld + n * HoWo;
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * sh - ph + i;
                    if (ih < 0 || ih >= H) continue;
                    float *dr = d + (size_t)ih * W;
                    const float *rr = row + (size_t)oh * Wo;
                    if (sw == 1)
                        for (int ow = lo; ow < hi; ow++) dr[ow - pw + j] += rr[ow];
                    else
                        for (int ow = lo; ow < hi; ow++) dr[ow * sw - pw + j] += rr[ow];
                }
            }
    }
}

/* [nc][Cc][HW] <-> [Cc][nc*HW] */
static void to_channel_major(const float *y, int nc, int Cc, size_t HW, float *t) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < Cc; c++)
        for (int n = 0; n < nc; n++) memcpy(t + ((size_t)c * nc + n) * HW, y + ((size_t)n * Cc + c) * HW, HW * 4);
}

static void from_channel_major(const float *t, int nc, int Cc, size_t HW, float *y) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < nc; n++)
        for (int c = 0; c < Cc; c++) memcpy(y + ((size_t)n * Cc + c) * HW, t + ((size_t)c * nc + n) * HW, HW * 4);
}

static void add_bias(float *y, int nc, int Cc, size_t HW, const float *b) {
    if (!b) return;
#pragma omp parallel for schedule(static)
    for (int nci = 0; nci < nc * Cc; nci++) {
        float bv = b[nci % Cc], *p = y + (size_t)nci * HW;
        for (size_t k = 0; k < HW; k++) p[k] += bv;
    }
}

/* db[c] += sum over n, hw of dy (double accumulation). */
void ref_bias_grad(const float *dy, int N, int Cc, size_t HW, float *db) {
    if (!db) return;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < Cc; c++) {
        double s = 0;
        for (int n = 0; n < N; n++) {
            const float *p = dy + ((size_t)n * Cc + c) * HW;
            for (size_t k = 0; k < HW; k++) s += p[k];
        }
        db[c] += (float)s;
    }
}

void ref_conv2d_fwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *b,
                    float *y) {
    int Ho = conv_out_size(H, g->kh, g->sh, g->ph), Wo = conv_out_size(W, g->kw, g->sw, g->pw);
    size_t HoWo = (size_t)Ho * Wo, Kc = (size_t)g->cin * g->kh * g->kw;
    int chunk = chunk_images(Kc * HoWo, N);
    float *cols = scratch(0, Kc * HoWo * chunk), *t = scratch(1, (size_t)g->cout * HoWo * chunk);
    for (int n0 = 0; n0 < N; n0 += chunk) {
        int nc = N - n0 < chunk ? N - n0 : chunk;
        im2col(x + (size_t)n0 * g->cin * H * W, nc, g->cin, H, W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, Ho, Wo,
               cols);
        cpu_sgemm(0, 0, g->cout, nc * (int)HoWo, (int)Kc, 1.0f, w, (int)Kc, cols, nc * (int)HoWo, 0.0f, t,
                  nc * (int)HoWo);
        from_channel_major(t, nc, g->cout, HoWo, y + (size_t)n0 * g->cout * HoWo);
    }
    add_bias(y, N, g->cout, HoWo, b);
}

void ref_conv2d_bwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *dy,
                    float *dx, float *dw, float *db) {
    int Ho = conv_out_size(H, g->kh, g->sh, g->ph), Wo = conv_out_size(W, g->kw, g->sw, g->pw);
    size_t HoWo = (size_t)Ho * Wo, Kc = (size_t)g->cin * g->kh * g->kw;
    int chunk = chunk_images(Kc * HoWo, N);
    float *cols = scratch(0, Kc * HoWo * chunk), *t = scratch(1, (size_t)g->cout * HoWo * chunk);
    float *dcols = dx ? scratch(2, Kc * HoWo * chunk) : NULL;
    ref_bias_grad(dy, N, g->cout, HoWo, db);
    for (int n0 = 0; n0 < N; n0 += chunk) {
        int nc = N - n0 < chunk ? N - n0 : chunk, L = nc * (int)HoWo;
        to_channel_major(dy + (size_t)n0 * g->cout * HoWo, nc, g->cout, HoWo, t);
        im2col(x + (size_t)n0 * g->cin * H * W, nc, g->cin, H, W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, Ho, Wo,
               cols);
        cpu_sgemm(0, 1, g->cout, (int)Kc, L, 1.0f, t, L, cols, L, 1.0f, dw, (int)Kc);
        if (dx) {
            cpu_sgemm(1, 0, (int)Kc, L, g->cout, 1.0f, w, (int)Kc, t, L, 0.0f, dcols, L);
            col2im(dcols, nc, g->cin, H, W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, Ho, Wo,
                   dx + (size_t)n0 * g->cin * H * W);
        }
    }
}

/* Transposed conv (stride 1). Weight [cin, cout, kh, kw] is, as a matrix, [cin, cout*kh*kw]. The output image
 * Hy x Wy is the *input* of the adjoint conv (cout channels, pad ph/pw) whose output is the H x W input. */
static void convT_out(const ConvGeom *g, int H, int W, int *Hy, int *Wy) {
    *Hy = H + g->kh - 1 - 2 * g->ph;
    *Wy = W + g->kw - 1 - 2 * g->pw;
}

void ref_convT2d_fwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *b,
                     float *y) {
    if (g->sh != 1 || g->sw != 1) V3_FATAL("transposed conv supports stride 1 only");
    int Hy, Wy;
    convT_out(g, H, W, &Hy, &Wy);
    size_t HW = (size_t)H * W, Kc = (size_t)g->cout * g->kh * g->kw;
    int chunk = chunk_images(Kc * HW, N);
    float *cols = scratch(0, Kc * HW * chunk), *t = scratch(1, (size_t)g->cin * HW * chunk);
    for (int n0 = 0; n0 < N; n0 += chunk) {
        int nc = N - n0 < chunk ? N - n0 : chunk, L = nc * (int)HW;
        to_channel_major(x + (size_t)n0 * g->cin * HW, nc, g->cin, HW, t);
        cpu_sgemm(1, 0, (int)Kc, L, g->cin, 1.0f, w, (int)Kc, t, L, 0.0f, cols, L);
        col2im(cols, nc, g->cout, Hy, Wy, g->kh, g->kw, 1, 1, g->ph, g->pw, H, W, y + (size_t)n0 * g->cout * Hy * Wy);
    }
    add_bias(y, N, g->cout, (size_t)Hy * Wy, b);
}

void ref_convT2d_bwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *dy,
                     float *dx, float *dw, float *db) {
    int Hy, Wy;
    convT_out(g, H, W, &Hy, &Wy);
    size_t HW = (size_t)H * W, Kc = (size_t)g->cout * g->kh * g->kw;
    int chunk = chunk_images(Kc * HW, N);
    float *cols = scratch(0, Kc * HW * chunk), *t = scratch(1, (size_t)g->cin * HW * chunk);
    ref_bias_grad(dy, N, g->cout, (size_t)Hy * Wy, db);
    for (int n0 = 0; n0 < N; n0 += chunk) {
        int nc = N - n0 < chunk ? N - n0 : chunk, L = nc * (int)HW;
        im2col(dy + (size_t)n0 * g->cout * Hy * Wy, nc, g->cout, Hy, Wy, g->kh, g->kw, 1, 1, g->ph, g->pw, H, W,
               cols);
        to_channel_major(x + (size_t)n0 * g->cin * HW, nc, g->cin, HW, t);
        cpu_sgemm(0, 1, g->cin, (int)Kc, L, 1.0f, t, L, cols, L, 1.0f, dw, (int)Kc);
        if (dx) {
            float *dxt = scratch(2, (size_t)g->cin * HW * chunk);
            cpu_sgemm(0, 0, g->cin, L, (int)Kc, 1.0f, w, (int)Kc, cols, L, 0.0f, dxt, L);
            from_channel_major(dxt, nc, g->cin, HW, dx + (size_t)n0 * g->cin * HW);
        }
    }
}
