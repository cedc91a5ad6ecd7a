/* InsNotes generation (include/insnotes.h, v3.md section 1): the per-file recipe, the signal of any range of a
 * file (shared by the generator, the loader and the audio export), and `insnotes_generate`, which renders the
 * note bank and writes DIR/bank.v3nb and DIR/index.tsv.
 *
 * Recipe of file i (seed rng_derive_seed(seed, i); draws from one Rng in exactly this order):
 *   1. 120 velocities, v_j = 80 + rng_below(41) (U{80..120}; the authors' gen_midi.py);
 *   2. the authors' envelope (render_audio.py gen_randomize_envelope): start = 1.0; for each of 120 one-second
 *      segments: end = lo + (hi - lo) * rng_uniform() with lo = min(0.8, start - 0.2), hi = max(1.2, start + 0.2),
 *      then the kind, rng_below(2): 0 linear, start + (end - start) j / 15999, 1 quarter sine,
 *      sin(pi/2 j / 15999) (end - start) + start, j = 0..15999; start = end.
 * The 1,920,000-sample envelope is edge-padded by (2027520 - 1920000) / 2 = 53760 samples on each side, so (as in
 * the authors' code) it is not aligned with the notes.
 * Signal(t), t in [0, 2027520): the sum over notes j of clip(style, j % 12, v_j)(t - 16896 j) where
 * 0 <= t - 16896 j < clip_len, times envelope(t), times the file's peak gain 0.9 / max|signal| (stored in the
 * index so the loader never needs the whole file). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "insnotes.h"
#include "rng.h"
#include "splits.h"

const int insnotes_programs[INSNOTES_N_PROGRAMS] = {64, 19, 21, 41, 56, 59, 68, 71, 72, 75, 22, 52};
const int insnotes_ood_programs[INSNOTES_N_OOD_PROGRAMS] = {0, 4, 73, 78};

#define ENV_LEN (INSNOTES_NOTES * INSNOTES_NOTE_LEN)      /* 1,920,000 */
#define ENV_PAD ((INSNOTES_FILE_LEN - ENV_LEN) / 2)        /* 53,760 */
#define DEFAULT_SF "/usr/share/sounds/sf2/FluidR3_GM.sf2"

void insnotes_defaults(InsnotesParams *p) {
    memset(p, 0, sizeof *p);
    p->soundfont = NULL;
    p->files_per_instrument = 100;
    p->ood = 0;
    p->seed = 1;
    p->velocity_layers = 3;
    p->clip_len = 33792; /* 2 slots: worst tail (Church Organ) 1.2 % of the clip peak at the cut; 24000 left 16 % */
}

/* ---- recipe and signal ---- */

/* sin(pi/2 * j / 15999), j = 0..15999, computed once (sin per sample would dominate the peak pass). */
static double g_sinq[INSNOTES_NOTE_LEN];
static pthread_once_t g_sinq_once = PTHREAD_ONCE_INIT;
static void sinq_init(void) {
    for (int j = 0; j < INSNOTES_NOTE_LEN; j++) g_sinq[j] = sin(1.57079632679489661923 * j / (INSNOTES_NOTE_LEN - 1.0));
}

void insnotes_file_init(InsnotesFile *f, uint64_t file_seed, int style, float gain) {
    Rng r;
    rng_seed(&r, file_seed);
    f->style = style;
    f->gain = gain;
    for (int j = 0; j < INSNOTES_NOTES; j++) f->velocity[j] = 80 + (int)rng_below(&r, 41);
    double start = 1.0;
    for (int i = 0; i < INSNOTES_NOTES; i++) {
        double lo = fmin(0.8, start - 0.2), hi = fmax(1.2, start + 0.2);
        f->seg_end[i] = lo + (hi - lo) * rng_uniform(&r);
        f->seg_sine[i] = (unsigned char)rng_below(&r, 2);
        start = f->seg_end[i];
    }
}

/* Envelope at index j of segment seg (no padding here). */
static inline double env_at(const InsnotesFile *f, int seg, int j) {
    double s = seg ? f->seg_end[seg - 1] : 1.0, d = f->seg_end[seg] - s;
    return f->seg_sine[seg] ? g_sinq[j] * d + s : s + d * j / (INSNOTES_NOTE_LEN - 1.0);
}

/* out[t - t0] *= envelope(t) * gain for t in [lo, hi), walking segment by segment (no division per sample). */
static void apply_envelope(const InsnotesFile *f, int64_t t0, int64_t lo, int64_t hi, float *out) {
    for (int64_t t = lo; t < hi;) {
        int64_t e = t - ENV_PAD, end;
        int seg, j, step = 1;
        if (e < 0) { /* edge padding before: the first value */
            seg = 0, j = 0, step = 0;
            end = hi < ENV_PAD ? hi : ENV_PAD;
        } else if (e >= ENV_LEN) { /* edge padding after: the last value */
            seg = INSNOTES_NOTES - 1, j = INSNOTES_NOTE_LEN - 1, step = 0;
            end = hi;
        } else {
            seg = (int)(e / INSNOTES_NOTE_LEN), j = (int)(e % INSNOTES_NOTE_LEN);
            end = t + (INSNOTES_NOTE_LEN - j);
            if (end > hi) end = hi;
        }
        for (; t < end; t++, j += step) out[t - t0] = (float)(out[t - t0] * env_at(f, seg, j)) * f->gain;
    }
}

/* Coefficients of note j: clip value = ca * clip[lo] + cb * clip[hi]. Between two layers the velocity is a linear
 * interpolation of the rendered clips. With one layer, the clip is scaled by (v/100)^2, which approximates
 * FluidSynth's default velocity-to-attenuation curve (SF2 concave curve, roughly amplitude ~ (v/127)^2). */
static void note_coefs(const InsnotesBank *b, const InsnotesFile *f, int j, const int16_t **ca_clip, float *ca,
                       const int16_t **cb_clip, float *cb) {
    int L = (int)b->n_layers, v = f->velocity[j], lo = 0;
    size_t base = ((size_t)f->style * b->n_pitches + (size_t)(j % 12)) * b->n_layers;
    if (L == 1) {
        double s = (v / 100.0) * (v / 100.0);
        *ca_clip = *cb_clip = b->clips + base * b->clip_len;
        *ca = (float)(b->gain[base] * s);
        *cb = 0;
        return;
    }
    while (lo < L - 2 && v > b->velocities[lo + 1]) lo++;
    double w = (double)(v - b->velocities[lo]) / (b->velocities[lo + 1] - b->velocities[lo]);
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    *ca_clip = b->clips + (base + lo) * b->clip_len;
    *cb_clip = b->clips + (base + lo + 1) * b->clip_len;
    *ca = (float)(b->gain[base + lo] * (1 - w));
    *cb = (float)(b->gain[base + lo + 1] * w);
}

void insnotes_signal(const InsnotesBank *b, const InsnotesFile *f, int64_t t0, int64_t t1, float *out) {
    pthread_once(&g_sinq_once, sinq_init);
    if (t1 <= t0) return;
    memset(out, 0, sizeof(float) * (size_t)(t1 - t0));
    int64_t lo = t0 > 0 ? t0 : 0, hi = t1 < INSNOTES_FILE_LEN ? t1 : INSNOTES_FILE_LEN;
    if (lo >= hi) return;
    int64_t T = b->clip_len;
    int64_t jmin = lo - T + 1 > 0 ? (lo - T + 1 + INSNOTES_SLOT - 1) / INSNOTES_SLOT : 0;
    int64_t jmax = (hi - 1) / INSNOTES_SLOT;
    /* Notes are added in ascending order for every t, so a sample's value is independent of the range. */
    for (int64_t j = jmin; j <= jmax && j < INSNOTES_NOTES; j++) {
        int64_t on = j * INSNOTES_SLOT, a = lo > on ? lo : on, e = hi < on + T ? hi : on + T;
        if (a >= e) continue;
        const int16_t *pa, *pb;
        float ca, cb;
        note_coefs(b, f, (int)j, &pa, &ca, &pb, &cb);
        for (int64_t t = a; t < e; t++) out[t - t0] += ca * pa[t - on] + cb * pb[t - on];
    }
    apply_envelope(f, t0, lo, hi, out);
}

/* ---- generation ---- */

static int check_params(const InsnotesParams *p) {
    if (p->files_per_instrument < 1 || p->files_per_instrument > 1000)
        return v3_error("insnotes: files_per_instrument %d (expected 1..1000)", p->files_per_instrument);
    if (p->velocity_layers < 1 || p->velocity_layers > 41)
        return v3_error("insnotes: velocity_layers %d (expected 1..41)", p->velocity_layers);
    if (p->clip_len < INSNOTES_NOTE_LEN || p->clip_len > 160000)
        return v3_error("insnotes: clip_len %d (expected %d..160000 samples)", p->clip_len, INSNOTES_NOTE_LEN);
    return 0;
}

/* Peak |signal| of a whole file before normalisation, streamed in chunks. */
static double file_peak(const InsnotesBank *b, const InsnotesFile *f, float *buf, int64_t chunk) {
    float peak = 0;
    for (int64_t t = 0; t < INSNOTES_FILE_LEN; t += chunk) {
        int64_t e = t + chunk < INSNOTES_FILE_LEN ? t + chunk : INSNOTES_FILE_LEN;
        insnotes_signal(b, f, t, e, buf);
        for (int64_t i = 0; i < e - t; i++) peak = fmaxf(peak, fabsf(buf[i]));
    }
    return peak;
}

static int make_dir(const char *dir) {
    struct stat st;
    if (mkdir(dir, 0777) && errno != EEXIST) return v3_error("%s: cannot create directory: %s", dir, strerror(errno));
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) return v3_error("%s: exists and is not a directory", dir);
    return 0;
}

/* Append formatted text to a growing buffer. */
typedef struct { char *p; size_t n, cap; } Text;
static void text_add(Text *t, const char *fmt, ...) V3_PRINTF(2, 3);
static void text_add(Text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p ? t->p + t->n : NULL, t->p ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (t->p && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        t->cap = (t->cap + (size_t)k + 1) * 2;
        t->p = xrealloc(t->p, t->cap);
    }
}

int insnotes_generate(const char *dir, const InsnotesParams *p) {
    if (check_params(p)) return -1;
    const char *sf = p->soundfont ? p->soundfont : DEFAULT_SF;
    const int *progs = p->ood ? insnotes_ood_programs : insnotes_programs;
    int n_prog = p->ood ? INSNOTES_N_OOD_PROGRAMS : INSNOTES_N_PROGRAMS, fpi = p->files_per_instrument;
    int n_files = n_prog * fpi;
    size_t plen = strlen(dir) + 32;
    char *bank_path = xmalloc(plen), *index_path = xmalloc(plen);
    snprintf(bank_path, plen, "%s/bank.v3nb", dir);
    snprintf(index_path, plen, "%s/index.tsv", dir);
    InsnotesBank bank;
    double t0 = now_seconds();
    /* Render first: without FluidSynth or the soundfont this fails before anything is created. */
    int rc = insnotes_bank_render(sf, progs, n_prog, p->velocity_layers, p->clip_len, &bank);
    if (!rc && make_dir(dir)) {
        insnotes_bank_free(&bank);
        rc = -1;
    }
    if (!rc) {
        v3_log("insnotes: rendered %d programs x 12 pitches x %d layers in %.2f s\n", n_prog, p->velocity_layers,
               now_seconds() - t0);
        rc = insnotes_bank_save(bank_path, &bank);
    }
    if (rc) {
        insnotes_bank_free(&bank);
        free(bank_path);
        free(index_path);
        return -1;
    }
    /* Draw every file's recipe and normalise it; files are independent, so the work is shared among threads
     * without changing any result. */
    double t1 = now_seconds();
    uint64_t *seeds = xmalloc(sizeof(uint64_t) * n_files);
    float *gains = xmalloc(sizeof(float) * n_files);
    const int64_t chunk = 1 << 16, block = 48;
    for (int f0 = 0; f0 < n_files; f0 += (int)block) {
        int f1 = f0 + (int)block < n_files ? f0 + (int)block : n_files;
#pragma omp parallel
        {
            float *buf = xmalloc(sizeof(float) * chunk);
            InsnotesFile *fr = xmalloc(sizeof *fr);
#pragma omp for schedule(dynamic)
            for (int i = f0; i < f1; i++) {
                seeds[i] = rng_derive_seed(p->seed, (uint64_t)i);
                insnotes_file_init(fr, seeds[i], i / fpi, 1.0f);
                double peak = file_peak(&bank, fr, buf, chunk);
                gains[i] = (float)(0.9 / peak);
            }
            free(buf);
            free(fr);
        }
        v3_log("insnotes: drew and normalised %d/%d files, %.1f s\n", f1, n_files, now_seconds() - t1);
    }
    int8_t *split = xmalloc((size_t)n_files);
    if (!p->ood) splits_assign(n_files, p->seed, split);
    Text t = {0};
    text_add(&t, "# v3-insnotes 1\n# seed %llu\n# soundfont %s\n# ood %d\n# files_per_instrument %d\n# n_files %d\n",
             (unsigned long long)p->seed, sf, p->ood ? 1 : 0, fpi, n_files);
    text_add(&t, "# name\tsplit\tstyle\tprogram\tfile_seed\tgain\n");
    for (int i = 0; i < n_files; i++) {
        char tok[32];
        if (p->ood) split_token_ood(i % fpi, tok, sizeof tok);
        else snprintf(tok, sizeof tok, "%s", split_name(split[i]));
        if (!isfinite(gains[i]) || !(gains[i] > 0)) {
            rc = v3_error("insnotes: file %d has peak gain %g (silent file?)", i, gains[i]);
            break;
        }
        text_add(&t, "ins%02d_%03d\t%s\t%d\t%d\t0x%016llx\t%.9g\n", i / fpi, i % fpi, tok, i / fpi, progs[i / fpi],
                 (unsigned long long)seeds[i], gains[i]);
    }
    if (!rc) rc = insnotes_write_atomic(index_path, NULL, 0, t.p, t.n);
    if (!rc) v3_log("insnotes: wrote %s (%d files) and %s in %.1f s\n", index_path, n_files, bank_path,
                    now_seconds() - t0);
    free(t.p);
    free(split);
    free(seeds);
    free(gains);
    insnotes_bank_free(&bank);
    free(bank_path);
    free(index_path);
    return rc;
}
