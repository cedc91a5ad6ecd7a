/* `v3 transfer`: decode one sample's content codes with another sample's style (spec v3.md §2: the decoder takes
 * the quantised content and the style embedding of each fragment). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "cuda_backend.h"
#include "eval.h"
#include "fragment_tiles.h"
#include "griffinlim.h"
#include "insnotes.h"
#include "loader.h"
#include "phonenums.h"

/* "SPLIT:I" or "I" (test split). */
static int parse_sample(const char *opt, const char *s, char *split, size_t n, uint64_t *idx) {
    const char *colon = strchr(s, ':'), *num = s;
    if (colon) {
        if ((size_t)(colon - s) >= n || colon == s)
            return v3_error("%s '%s': expected SPLIT:INDEX (e.g. test:3) or INDEX", opt, s);
        memcpy(split, s, (size_t)(colon - s));
        split[colon - s] = 0;
        num = colon + 1;
    } else {
        snprintf(split, n, "test");
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(num, &end, 10);
    if (errno || end == num || *end || *num == '-')
        return v3_error("%s '%s': expected SPLIT:INDEX (e.g. test:3) or INDEX", opt, s);
    *idx = v;
    return 0;
}

/* Encode one sample (all its fragments) into the model's zc/q/zs; copies out q and zs. */
static int encode_sample(EvalRun *r, const char *opt, const char *spec, float *q, float *zs, float *x) {
    char split[32];
    uint64_t idx = 0;
    if (parse_sample(opt, spec, split, sizeof split, &idx)) return -1;
    DataSource ds;
    if (datasource_open(r->data_dir, split, r->m->cfg.n_fragments, &ds)) return -1;
    int rc = 0, n = r->m->cfg.n_fragments;
    if (idx >= ds.n_samples)
        rc = v3_error("%s %s: sample %llu out of range (%s/%s has %llu samples)", opt, spec, (unsigned long long)idx,
                      r->data_dir, split, (unsigned long long)ds.n_samples);
    if (!rc) rc = loader_eval_batch(&ds, r->seed, idx, 1, x, NULL, NULL);
    if (!rc && (int)ds.n_frag != n) rc = v3_error("%s: %u fragments per sample, the model expects %d", ds.dir, ds.n_frag, n);
    if (!rc) rc = model_encode(r->m, x, n);
    if (!rc) {
        memcpy(q, r->m->q, sizeof(float) * (size_t)n * r->m->dc);
        memcpy(zs, r->m->zs, sizeof(float) * (size_t)n * r->m->ds);
    }
    datasource_close(&ds);
    return rc;
}

int transfer_run(const TransferOpts *o) {
    const char *dot = strrchr(o->out, '.');
    int png = dot && !strcasecmp(dot, ".png"), wav = dot && !strcasecmp(dot, ".wav");
    if (!png && !wav) return v3_error("--out %s: expected a .png or .wav file name", o->out);
    EvalRun R;
    if (eval_run_open(&R, o->run_dir, o->checkpoint, o->data_dir)) { eval_run_close(&R); return -1; }
    Model *m = R.m;
    const ArchSpec *a = &m->arch;
    int n = m->cfg.n_fragments, C = a->C, H = a->H, W = a->W, rc = -1;
    size_t frag = (size_t)C * H * W;
    float *q = falloc((size_t)n * m->dc), *zs = falloc((size_t)n * m->ds), *scratch = falloc(frag * n),
          *x = falloc(frag * n);
    float *tmp = falloc((size_t)n * m->dc);
    if (wav && !(C == 1 && H == INSNOTES_BINS)) {
        v3_error("--out %s: audio output needs an InsNotes model (this one makes %d x %d x %d images; use .png)", o->out, C, H, W);
        goto out;
    }
    if (encode_sample(&R, "--content", o->content, q, tmp, scratch) || encode_sample(&R, "--style", o->style, tmp, zs, scratch))
        goto out;
    if (model_decode(m, q, zs, n, x)) goto out;
    if (png) {
        /* fragments side by side: an image page, or a spectrogram over time (full 512 bins, low at the bottom) */
        float lo = 0, hi = 1;
        if (C == 1) spec_display_range(x, frag * n, NULL, 0, &lo, &hi);
        uint8_t *tiles = xmalloc(frag / C * 3 * n), *page;
        for (int k = 0; k < n; k++)
            fragment_to_rgb(x + (size_t)k * frag, C, H, W, H, 1, lo, hi, tiles + (size_t)k * H * W * 3);
        int pw, ph;
        page = tiles_to_image(tiles, 1, n, H, W, 0, &pw, &ph);
        rc = png_write_rgb(o->out, page, pw, ph);
        free(tiles);
        free(page);
    } else {
        /* the fragments' spectrograms back to back, one Griffin-Lim over all frames */
        int frames = W * n;
        float *mag = falloc((size_t)frames * GL_BINS), *spec = falloc((size_t)H * frames),
              *audio = falloc((size_t)GL_HOP * (frames - 1));
        for (int k = 0; k < n; k++)
            for (int b = 0; b < H; b++)
                memcpy(spec + (size_t)b * frames + (size_t)k * W, x + (size_t)k * frag + (size_t)b * W, sizeof(float) * W);
        gl_features_to_mag(spec, frames, mag);
        char desc[256];
        int gpu = o->device && strcmp(o->device, "cpu") && cuda_probe(desc, sizeof desc) > 0;
        if (o->device && !strcmp(o->device, "cuda") && !gpu) rc = v3_error("--device cuda: no usable CUDA GPU (%s)", desc);
        else rc = gpu ? griffinlim_gpu(mag, frames, o->gl_iters, R.seed, audio)
                      : griffinlim_cpu(mag, frames, o->gl_iters, R.seed, audio);
        if (!rc) rc = wav_write_mono(o->out, audio, GL_HOP * (frames - 1), INSNOTES_SR);
        ffree(mag);
        ffree(spec);
        ffree(audio);
    }
    if (!rc && v3_verbose >= 0) printf("v3 transfer: content of %s with the style of %s -> %s\n", o->content, o->style, o->out);
out:
    ffree(q);
    ffree(zs);
    ffree(scratch);
    ffree(x);
    ffree(tmp);
    eval_run_close(&R);
    return rc;
}
