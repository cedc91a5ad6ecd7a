/* InsNotes as a DataSource (include/datasource.h, include/insnotes.h): loads and validates DIR/bank.v3nb and
 * DIR/index.tsv, then assembles samples on demand: per sample a start slot and a frequency mask drawn from its
 * augmentation seed, the fragments' audio from the bank and the file's recipe, the log-magnitude STFT (FFTW), the
 * mask, and 0 -> 1e-8 (get_batch); or only the audio and the mask bands (get_raw), which the loader turns into
 * the same features on the device. Nothing here touches a GPU. Also the WAV/FLAC export of a file's audio. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "datasource.h"
#include "insnotes.h"
#include "rng.h"
#include "splits.h"
#include "stft.h"

#ifdef V3_HAVE_SNDFILE
#include <sndfile.h>
#endif

#define MASK_PARAM 15 /* torchaudio FrequencyMasking(freq_mask_param=15) */

typedef struct {
    int style;
    uint64_t seed;
    float gain;
} FileRec;

typedef struct {
    InsnotesBank bank;
    FileRec *files;   /* the split's files, in index.tsv order */
    int n_files_all;  /* files in the whole set */
    StftCpu *cpu;
    float *audio;     /* get_batch's [B * n_frag][INSNOTES_FRAG_AUDIO] */
    size_t audio_cap; /* floats */
    char index_path[600];
} Src;

/* Re-raise the last error with "path: what: " in front (v3_error must not format its own buffer). */
static int prefixed_error(const char *path, const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", v3_last_error());
    return v3_error("%s: %s%s%s", path, what ? what : "", what ? ": " : "", msg);
}

/* ---- index.tsv ---- */

/* Split a line into tab-separated fields in place; returns the count (at most max). */
static int split_tabs(char *line, char **f, int max) {
    int n = 0;
    for (char *p = line;;) {
        if (n == max) return max + 1;
        f[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) return n;
        *t = 0;
        p = t + 1;
    }
}

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (!*s || *end || errno || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

typedef struct {
    int ood, n_files, have_ood, have_n;
    char soundfont[256];
} IndexHead;

static int parse_header_line(const char *path, int ln, const char *line, IndexHead *h) {
    if (ln == 1) {
        if (strcmp(line, "# v3-insnotes 1"))
            return v3_error("%s:1: expected the first line '# v3-insnotes 1' (an InsNotes index, version 1)", path);
        return 0;
    }
    long v;
    if (!strncmp(line, "# ood ", 6)) {
        if (parse_int(line + 6, 0, 1, &v)) return v3_error("%s:%d: ood flag '%s' (expected 0 or 1)", path, ln, line + 6);
        h->ood = (int)v;
        h->have_ood = 1;
    } else if (!strncmp(line, "# n_files ", 10)) {
        if (parse_int(line + 10, 1, 1000000, &v))
            return v3_error("%s:%d: n_files '%s' (expected 1..1000000)", path, ln, line + 10);
        h->n_files = (int)v;
        h->have_n = 1;
    } else if (!strncmp(line, "# soundfont ", 12)) {
        snprintf(h->soundfont, sizeof h->soundfont, "%.255s", line + 12);
    }
    return 0; /* other comment lines (seed, column names) are informative */
}

/* Validate one file line; appends it to *all (and its token to *tokens). */
static int parse_file_line(const char *path, int ln, char *line, const InsnotesBank *b, const IndexHead *h,
                           int *per_style, FileRec *rec, char *tok, size_t ntok) {
    char *f[7];
    int n = split_tabs(line, f, 6);
    if (n != 6)
        return v3_error("%s:%d: %d tab-separated fields (expected 6: name, split, style, program, file_seed, gain)",
                        path, ln, n > 6 ? 7 : n);
    long style, prog;
    if (parse_int(f[2], 0, (long)b->n_programs - 1, &style))
        return v3_error("%s:%d: field style '%s' (expected an integer 0..%u, the bank's programs)", path, ln, f[2],
                        b->n_programs - 1);
    if (parse_int(f[3], 0, 127, &prog) || prog != b->programs[style])
        return v3_error("%s:%d: field program '%s' (expected %d, the bank's program for style %ld)", path, ln, f[3],
                        (int)b->programs[style], style);
    char want[32];
    snprintf(want, sizeof want, "ins%02ld_%03d", style, per_style[style]);
    if (strcmp(f[0], want))
        return v3_error("%s:%d: field name '%s' (expected %s: style %ld, its file %d)", path, ln, f[0], want, style,
                        per_style[style]);
    if (h->ood) {
        long r;
        if (strncmp(f[1], "ood", 3) || !isdigit((unsigned char)f[1][3]) || parse_int(f[1] + 3, 0, 1000000, &r) ||
            r != per_style[style])
            return v3_error("%s:%d: field split '%s' (expected ood%d: an OOD file's rank within its style)", path, ln,
                            f[1], per_style[style]);
    } else if (strcmp(f[1], "train") && strcmp(f[1], "val") && strcmp(f[1], "test"))
        return v3_error("%s:%d: field split '%s' (expected train, val or test)", path, ln, f[1]);
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(f[4], &end, 16);
    if (strncmp(f[4], "0x", 2) || strlen(f[4]) != 18 || *end || errno)
        return v3_error("%s:%d: field file_seed '%s' (expected 0x and 16 hex digits)", path, ln, f[4]);
    errno = 0;
    float g = strtof(f[5], &end);
    if (!*f[5] || *end || errno || !isfinite(g) || !(g > 0))
        return v3_error("%s:%d: field gain '%s' (expected a finite number > 0)", path, ln, f[5]);
    rec->style = (int)style;
    rec->seed = seed;
    rec->gain = g;
    snprintf(tok, ntok, "%s", f[1]);
    per_style[style]++;
    return 0;
}

/* Parse the whole index; keep the files of `split`. */
static int load_index(const char *path, const char *split, const InsnotesBank *b, Src *s, IndexHead *h) {
    FILE *fp = fopen(path, "r");
    if (!fp) return v3_error("%s: cannot open InsNotes index: %s (generate the set with v3 data insnotes)", path,
                             strerror(errno));
    memset(h, 0, sizeof *h);
    char line[1024];
    int ln = 0, rc = 0, n_all = 0, cap = 0, n_split = 0, per_style[128] = {0}, header_done = 0;
    while (!rc && fgets(line, sizeof line, fp)) {
        ln++;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\n') line[--len] = 0;
        else if (!feof(fp)) {
            rc = v3_error("%s:%d: line longer than %zu characters", path, ln, sizeof line - 2);
            break;
        }
        if (ln == 1 || line[0] == '#') {
            if (header_done) rc = v3_error("%s:%d: comment line after the file lines (expected header lines first)",
                                           path, ln);
            else rc = parse_header_line(path, ln, line, h);
            continue;
        }
        if (!header_done) {
            header_done = 1;
            if (!h->have_ood || !h->have_n) {
                rc = v3_error("%s: header lacks '# %s' (expected '# ood 0|1' and '# n_files N')", path,
                              h->have_ood ? "n_files N" : "ood 0|1");
                break;
            }
        }
        FileRec rec;
        char tok[64];
        if ((rc = parse_file_line(path, ln, line, b, h, per_style, &rec, tok, sizeof tok))) break;
        n_all++;
        int in = split_contains(split, tok, h->ood);
        if (in < 0) {
            rc = prefixed_error(path, NULL);
            break;
        }
        if (!in) continue;
        if (n_split == cap) {
            cap = cap ? cap * 2 : 256;
            s->files = xrealloc(s->files, sizeof(FileRec) * cap);
        }
        s->files[n_split++] = rec;
    }
    if (!rc && ferror(fp)) rc = v3_error("%s: read error", path);
    fclose(fp);
    if (rc) return -1;
    if (!header_done) return v3_error("%s: no file lines (expected a header and n_files lines)", path);
    if (n_all != h->n_files)
        return v3_error("%s: %d file lines (expected n_files = %d from the header; truncated index?)", path, n_all,
                        h->n_files);
    if (!n_split)
        return v3_error("%s: split '%s' is empty (none of the %d files belongs to it%s)", path, split, n_all,
                        h->ood ? "; an OOD test split needs more than 10 files per instrument" : "");
    s->n_files_all = n_all;
    return n_split;
}

/* ---- batches ---- */

/* Everything before the STFT: per sample the start slot and the mask band drawn from its augmentation seed, the
 * labels, and (audio != NULL) the fragments' audio. Shared by get_batch (CPU features) and get_raw (device). */
static int ins_assemble(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *audio, int32_t *mask,
                        int32_t *content, int32_t *style) {
    Src *s = ds->impl;
    int nf = (int)ds->n_frag;
    for (int b = 0; b < B; b++)
        if (idx[b] >= ds->n_samples)
            return v3_error("%s: sample %llu out of range (split %s has %llu files)", s->index_path,
                            (unsigned long long)idx[b], ds->split, (unsigned long long)ds->n_samples);
    int *starts = xmalloc(sizeof(int) * (B > 0 ? B : 1));
    for (int b = 0; b < B; b++) {
        const FileRec *rec = &s->files[idx[b]];
        /* The augmentation draws, in order: start slot, then torchaudio's mask_along_axis:
         * value = U * 15, min_value = U' * (512 - value), rows [(long)min_value, (long)min_value + (long)value). */
        Rng r;
        rng_seed(&r, aug[b]);
        starts[b] = (int)rng_below(&r, INSNOTES_NOTES);
        double value = rng_uniform(&r) * MASK_PARAM;
        double min_value = rng_uniform(&r) * (INSNOTES_BINS - value);
        mask[2 * b] = (int32_t)min_value;
        mask[2 * b + 1] = (int32_t)value;
        for (int i = 0; i < nf; i++) {
            int k = (starts[b] + i) % INSNOTES_NOTES;
            if (content) content[(size_t)b * nf + i] = k % 12;
            if (style) style[(size_t)b * nf + i] = rec->style;
        }
    }
    /* Assembling the audio is the CPU's share of the work (about a quarter of a CPU batch, all of it when the STFT
     * runs on the GPU); samples are independent, so on GPU runs, where the CPU is otherwise idle, they are spread
     * over the OpenMP threads. On CPU runs the model's own threads need the cores: one thread. */
    #pragma omp parallel for schedule(static) if (audio && ds->use_gpu)
    for (int b = 0; b < B; b++) {
        if (!audio) continue;
        const FileRec *rec = &s->files[idx[b]];
        InsnotesFile fr;
        insnotes_file_init(&fr, rec->seed, rec->style, rec->gain);
        for (int i = 0; i < nf; i++) {
            int k = (starts[b] + i) % INSNOTES_NOTES;
            /* The fragment's 32 centred frames read [16896 k - 512, 16896 k + 16384); samples before the file
             * start are the centring's zero padding. */
            int64_t t0 = (int64_t)k * INSNOTES_SLOT - INSNOTES_HOP;
            insnotes_signal(&s->bank, &fr, t0, t0 + INSNOTES_FRAG_AUDIO,
                            audio + ((size_t)b * nf + i) * INSNOTES_FRAG_AUDIO);
        }
    }
    free(starts);
    return 0;
}

void insnotes_mask_and_guard(float *x, int B, int n_frag, const int32_t *mask) {
    const size_t fe = (size_t)INSNOTES_BINS * INSNOTES_FRAMES;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n_frag; i++) {
            float *o = x + ((size_t)b * n_frag + i) * fe;
            /* one band for all fragments of the sample; the mask writes 0 in the log domain */
            for (int row = mask[2 * b]; row < mask[2 * b] + mask[2 * b + 1] && row < INSNOTES_BINS; row++)
                memset(o + (size_t)row * INSNOTES_FRAMES, 0, sizeof(float) * INSNOTES_FRAMES);
            for (size_t e = 0; e < fe; e++)
                if (o[e] == 0.0f) o[e] = 1e-8f; /* the authors' guard against exact zeros */
        }
}

/* The CPU path: audio, FFTW, mask, 0 -> 1e-8. */
static int ins_get_batch(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *x,
                         int32_t *content, int32_t *style) {
    Src *s = ds->impl;
    int nf = (int)ds->n_frag;
    size_t need = (size_t)B * nf * INSNOTES_FRAG_AUDIO;
    if (x && need > s->audio_cap) {
        free(s->audio);
        s->audio = xmalloc(sizeof(float) * need);
        s->audio_cap = need;
    }
    int32_t *mask = xmalloc(sizeof(int32_t) * 2 * (B > 0 ? B : 1));
    int rc = ins_assemble(ds, idx, aug, B, x ? s->audio : NULL, mask, content, style);
    if (!rc && x) {
        if (!s->cpu) s->cpu = stft_cpu_create();
        stft_logmag_cpu(s->cpu, s->audio, B * nf, x);
        insnotes_mask_and_guard(x, B, nf, mask);
    }
    free(mask);
    return rc;
}

/* The device path's host half (include/datasource.h): the audio and mask bands, into the caller's buffers. */
static int ins_get_raw(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *raw, int32_t *mask,
                       int32_t *content, int32_t *style) {
    return ins_assemble(ds, idx, aug, B, raw, mask, content, style);
}

static void ins_close(DataSource *ds) {
    Src *s = ds->impl;
    if (!s) return;
    insnotes_bank_free(&s->bank);
    free(s->files);
    stft_cpu_free(s->cpu);
    free(s->audio);
    free(s);
    ds->impl = NULL;
}

int insnotes_open(const char *dir, const char *split, int n_frag, DataSource *ds) {
    memset(ds, 0, sizeof *ds);
    if (n_frag < 1 || n_frag > INSNOTES_NOTES)
        return v3_error("%s: n_frag %d for InsNotes (expected 1..%d note slots per sample)", dir, n_frag,
                        INSNOTES_NOTES);
    Src *s = xcalloc(1, sizeof *s);
    char bank_path[600];
    snprintf(bank_path, sizeof bank_path, "%s/bank.v3nb", dir);
    snprintf(s->index_path, sizeof s->index_path, "%s/index.tsv", dir);
    IndexHead h;
    int n = -1;
    if (insnotes_bank_load(bank_path, &s->bank) == 0) n = load_index(s->index_path, split, &s->bank, s, &h);
    if (n < 0) {
        ds->impl = s;
        ins_close(ds);
        return -1;
    }
    DataSourceShape sh = {"insnotes", (uint64_t)n, (uint32_t)n_frag, 1, INSNOTES_BINS, INSNOTES_FRAMES, 12,
                          s->bank.n_programs, h.ood};
    datasource_set(ds, dir, split, &sh, s, ins_get_batch, ins_close);
    ds->get_raw = ins_get_raw;
    ds->raw_elems = INSNOTES_FRAG_AUDIO;
    const char *sf = strrchr(h.soundfont, '/');
    snprintf(ds->desc, sizeof ds->desc, "insnotes (%.80s, %u programs%s, %u velocity layers), %.31s: %d of %d files",
             sf ? sf + 1 : h.soundfont[0] ? h.soundfont : "unknown soundfont", s->bank.n_programs,
             h.ood ? " OOD" : "", s->bank.n_layers, split, n, s->n_files_all);
    return 0;
}

/* ---- audio export ---- */

int insnotes_export_audio(const char *dir, const char *split, uint64_t sample, int start_slot, int n_slots,
                          const char *out_path) {
    const char *dot = strrchr(out_path, '.');
    int flac = dot && !strcasecmp(dot, ".flac");
    if (!dot || (!flac && strcasecmp(dot, ".wav")))
        return v3_error("%s: unknown audio extension (expected .wav or .flac)", out_path);
    if (start_slot < 0 || start_slot >= INSNOTES_NOTES)
        return v3_error("start slot %d (expected 0..%d)", start_slot, INSNOTES_NOTES - 1);
    if (n_slots < 1 || n_slots > 100 * INSNOTES_NOTES)
        return v3_error("n_slots %d (expected 1..%d; 120 slots = a whole file)", n_slots, 100 * INSNOTES_NOTES);
#ifndef V3_HAVE_SNDFILE
    (void)dir; (void)split; (void)sample; (void)flac;
    return v3_error("exporting audio needs libsndfile: install the Debian package libsndfile1-dev (and rebuild)");
#else
    DataSource ds;
    if (insnotes_open(dir, split, 1, &ds)) return -1;
    Src *s = ds.impl;
    int rc = 0;
    if (sample >= ds.n_samples) {
        rc = v3_error("%s: sample %llu out of range (split %s has %llu files)", s->index_path,
                      (unsigned long long)sample, split, (unsigned long long)ds.n_samples);
        ins_close(&ds);
        return rc;
    }
    const FileRec *rec = &s->files[sample];
    InsnotesFile *fr = xmalloc(sizeof *fr);
    insnotes_file_init(fr, rec->seed, rec->style, rec->gain);
    size_t n = (size_t)n_slots * INSNOTES_SLOT;
    float *buf = xmalloc(sizeof(float) * n);
    for (int i = 0; i < n_slots; i++) {
        int64_t k = (start_slot + i) % INSNOTES_NOTES;
        insnotes_signal(&s->bank, fr, k * INSNOTES_SLOT, (k + 1) * INSNOTES_SLOT, buf + (size_t)i * INSNOTES_SLOT);
    }
    SF_INFO info;
    memset(&info, 0, sizeof info);
    info.samplerate = INSNOTES_SR;
    info.channels = 1;
    info.format = (flac ? SF_FORMAT_FLAC : SF_FORMAT_WAV) | SF_FORMAT_PCM_16;
    SNDFILE *sf = sf_open(out_path, SFM_WRITE, &info);
    if (!sf) rc = v3_error("%s: cannot create audio file: %s", out_path, sf_strerror(NULL));
    else {
        sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);
        if (sf_writef_float(sf, buf, (sf_count_t)n) != (sf_count_t)n)
            rc = v3_error("%s: write failed: %s", out_path, sf_strerror(sf));
        if (sf_close(sf) && !rc) rc = v3_error("%s: close failed", out_path);
    }
    free(buf);
    free(fr);
    ins_close(&ds);
    return rc;
#endif
}
