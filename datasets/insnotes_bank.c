/* InsNotes note bank: FluidSynth rendering, atomic save and fully validating load of DIR/bank.v3nb.
 *
 * File layout (all integers and floats little-endian; header fields are encoded byte by byte so the layout
 * depends neither on struct padding nor on host byte order):
 *   offset  size  field
 *        0     8  magic "V3NBANK\0"
 *        8     4  version (1)
 *       12     4  sample_rate (16000)
 *       16     4  n_programs P (1..128)
 *       20     4  n_pitches (12)
 *       24     4  n_layers L (1..41, velocity layers)
 *       28     4  clip_len T (16000..160000 samples: the 1-s note plus its release tail)
 *       32     4  base_pitch (60: pitch p of the bank is MIDI note 60 + p)
 *       36    20  reserved, zero
 *       56     4  header CRC-32C of bytes [0, 56)
 *       60     4  payload CRC-32C of every byte after the header
 *   payload (N = P * 12 * L clips):
 *     int32   programs[P]        0-based GM program numbers, 0..127, distinct
 *     int32   velocities[L]      MIDI velocities, 1..127, strictly ascending
 *     float32 gain[N]            per clip, finite and > 0: sample value = int16 * gain
 *     int16   clips[N][T]        clip (program, pitch, layer) at index (program * 12 + pitch) * L + layer
 * The file size must be exactly 64 + 4 P + 4 L + 4 N + 2 N T bytes.
 *
 * Rendering follows the authors' midi2audio/fluidsynth defaults (v3.md section 1, data.md section 1): 16 kHz,
 * gain 0.2, reverb and chorus on, stereo mixed to mono as (L + R) / 2 (librosa's to_mono). Each clip starts from
 * a fresh synth (see render_clip): note-on at sample 0, note-off at sample 16000 (a multiple of
 * FluidSynth's 64-sample block, so both events are sample-exact), rendered to clip_len. A clip is stored as int16
 * with gain = peak / 32767, which keeps 15 bits of resolution for quiet clips as well as loud ones. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "insnotes.h"

#ifdef V3_HAVE_FLUIDSYNTH
#include <fluidsynth.h>
#endif

#define NB_MAGIC "V3NBANK"  /* 7 characters + the terminating NUL = 8 bytes */
#define NB_VERSION 1u
#define NB_HEADER 64
#define NB_BASE_PITCH 60
#define NB_MAX_LAYERS 41    /* velocities 80..120 are 41 distinct values */
#define NB_MAX_CLIP 160000

enum {
    OFF_VERSION = 8, OFF_SR = 12, OFF_NPROG = 16, OFF_NPITCH = 20, OFF_NLAYER = 24, OFF_CLIPLEN = 28,
    OFF_BASE = 32, OFF_RESERVED = 36, OFF_HCRC = 56, OFF_PCRC = 60
};

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put_f32(unsigned char *p, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(p, v);
}
static float get_f32(const unsigned char *p) {
    uint32_t v = get_u32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static uint64_t n_clips(const InsnotesBank *b) { return (uint64_t)b->n_programs * b->n_pitches * b->n_layers; }

static uint64_t payload_bytes(const InsnotesBank *b) {
    uint64_t n = n_clips(b);
    return 4ull * b->n_programs + 4ull * b->n_layers + 4ull * n + 2ull * n * b->clip_len;
}

void insnotes_bank_free(InsnotesBank *b) {
    if (!b) return;
    free(b->programs);
    free(b->velocities);
    free(b->gain);
    free(b->clips);
    memset(b, 0, sizeof *b);
}

/* Allocate the arrays for the shape already in b. */
static void bank_alloc(InsnotesBank *b) {
    uint64_t n = n_clips(b);
    b->programs = xcalloc(b->n_programs, sizeof(int32_t));
    b->velocities = xcalloc(b->n_layers, sizeof(int32_t));
    b->gain = xcalloc((size_t)n, sizeof(float));
    b->clips = xcalloc((size_t)(n * b->clip_len), sizeof(int16_t));
}

/* Shape ranges (shared by save and load so save never writes what load rejects). NULL when fine. */
static const char *bad_shape(const InsnotesBank *b, char *why, size_t n) {
    if (b->sample_rate != INSNOTES_SR) snprintf(why, n, "sample rate %u (expected %d)", b->sample_rate, INSNOTES_SR);
    else if (b->n_pitches != 12) snprintf(why, n, "n_pitches %u (expected 12)", b->n_pitches);
    else if (b->n_programs < 1 || b->n_programs > 128) snprintf(why, n, "n_programs %u (expected 1..128)", b->n_programs);
    else if (b->n_layers < 1 || b->n_layers > NB_MAX_LAYERS)
        snprintf(why, n, "n_layers %u (expected 1..%d)", b->n_layers, NB_MAX_LAYERS);
    else if (b->clip_len < INSNOTES_NOTE_LEN || b->clip_len > NB_MAX_CLIP)
        snprintf(why, n, "clip_len %u (expected %d..%d)", b->clip_len, INSNOTES_NOTE_LEN, NB_MAX_CLIP);
    else return NULL;
    return why;
}

static const char *bad_contents(const InsnotesBank *b, char *why, size_t n) {
    for (uint32_t i = 0; i < b->n_programs; i++) {
        if (b->programs[i] < 0 || b->programs[i] > 127) {
            snprintf(why, n, "program[%u] = %d (expected 0..127)", i, (int)b->programs[i]);
            return why;
        }
        for (uint32_t j = 0; j < i; j++)
            if (b->programs[j] == b->programs[i]) {
                snprintf(why, n, "program %d appears twice (expected distinct programs)", (int)b->programs[i]);
                return why;
            }
    }
    for (uint32_t l = 0; l < b->n_layers; l++)
        if (b->velocities[l] < 1 || b->velocities[l] > 127 || (l && b->velocities[l] <= b->velocities[l - 1])) {
            snprintf(why, n, "velocity[%u] = %d (expected 1..127, strictly ascending)", l, (int)b->velocities[l]);
            return why;
        }
    for (uint64_t c = 0; c < n_clips(b); c++)
        if (!isfinite(b->gain[c]) || !(b->gain[c] > 0)) {
            snprintf(why, n, "gain of clip %llu is %g (expected finite and > 0)", (unsigned long long)c, b->gain[c]);
            return why;
        }
    return NULL;
}

/* ---- save ---- */

static void build_header(unsigned char *h, const InsnotesBank *b, uint32_t pcrc) {
    memset(h, 0, NB_HEADER);
    memcpy(h, NB_MAGIC, 8);
    put_u32(h + OFF_VERSION, NB_VERSION);
    put_u32(h + OFF_SR, b->sample_rate);
    put_u32(h + OFF_NPROG, b->n_programs);
    put_u32(h + OFF_NPITCH, b->n_pitches);
    put_u32(h + OFF_NLAYER, b->n_layers);
    put_u32(h + OFF_CLIPLEN, b->clip_len);
    put_u32(h + OFF_BASE, NB_BASE_PITCH);
    put_u32(h + OFF_HCRC, crc32c(0, h, OFF_HCRC));
    put_u32(h + OFF_PCRC, pcrc);
}

/* The payload exactly as it appears on disk. */
static unsigned char *encode_payload(const InsnotesBank *b, size_t *len) {
    uint64_t n = n_clips(b), nt = n * b->clip_len;
    *len = (size_t)payload_bytes(b);
    unsigned char *buf = xmalloc(*len), *p = buf;
    for (uint32_t i = 0; i < b->n_programs; i++, p += 4) put_u32(p, (uint32_t)b->programs[i]);
    for (uint32_t i = 0; i < b->n_layers; i++, p += 4) put_u32(p, (uint32_t)b->velocities[i]);
    for (uint64_t i = 0; i < n; i++, p += 4) put_f32(p, b->gain[i]);
    for (uint64_t i = 0; i < nt; i++, p += 2) {
        uint16_t v = (uint16_t)b->clips[i];
        p[0] = (unsigned char)v;
        p[1] = (unsigned char)(v >> 8);
    }
    return buf;
}

typedef struct { const void *head, *body; size_t nhead, nbody; } TwoParts;

static int write_parts(FILE *f, void *ctx) {
    const TwoParts *t = ctx;
    return (t->nhead && fwrite(t->head, 1, t->nhead, f) != t->nhead) ||
           (t->nbody && fwrite(t->body, 1, t->nbody, f) != t->nbody);
}

int insnotes_write_atomic(const char *path, const void *head, size_t nhead, const void *body, size_t nbody) {
    TwoParts t = {head, body, nhead, nbody};
    return write_file_atomic(path, write_parts, &t);
}

int insnotes_bank_save(const char *path, const InsnotesBank *b) {
    char why[160];
    if (bad_shape(b, why, sizeof why) || bad_contents(b, why, sizeof why))
        return v3_error("%s: refusing to save note bank: %s", path, why);
    size_t len;
    unsigned char *payload = encode_payload(b, &len), h[NB_HEADER];
    build_header(h, b, crc32c(0, payload, len));
    int rc = insnotes_write_atomic(path, h, sizeof h, payload, len);
    free(payload);
    return rc;
}

/* ---- load ---- */

static int load_open(const char *path, FILE *f, InsnotesBank *b) {
    unsigned char h[NB_HEADER];
    size_t got = fread(h, 1, sizeof h, f);
    if (got < 8 || memcmp(h, NB_MAGIC, 8))
        return v3_error("%s: not an InsNotes note bank (expected magic V3NBANK; regenerate with v3 data insnotes)",
                        path);
    if (got < sizeof h)
        return v3_error("%s: truncated note bank: expected at least the %d-byte header, file has %zu bytes", path,
                        NB_HEADER, got);
    uint32_t ver = get_u32(h + OFF_VERSION);
    if (ver != NB_VERSION) return v3_error("%s: unsupported note bank version %u (expected %u)", path, ver, NB_VERSION);
    if (crc32c(0, h, OFF_HCRC) != get_u32(h + OFF_HCRC))
        return v3_error("%s: note bank header checksum mismatch (file corrupt)", path);
    for (int i = OFF_RESERVED; i < OFF_HCRC; i++)
        if (h[i]) return v3_error("%s: reserved header byte %d is %u (expected 0)", path, i, h[i]);
    if (get_u32(h + OFF_BASE) != NB_BASE_PITCH)
        return v3_error("%s: base pitch %u (expected %d)", path, get_u32(h + OFF_BASE), NB_BASE_PITCH);
    b->sample_rate = get_u32(h + OFF_SR);
    b->n_programs = get_u32(h + OFF_NPROG);
    b->n_pitches = get_u32(h + OFF_NPITCH);
    b->n_layers = get_u32(h + OFF_NLAYER);
    b->clip_len = get_u32(h + OFF_CLIPLEN);
    char why[160];
    if (bad_shape(b, why, sizeof why)) return v3_error("%s: bad note bank header: %s", path, why);
    struct stat st;
    if (fstat(fileno(f), &st)) return v3_error("%s: cannot stat note bank: %s", path, strerror(errno));
    uint64_t want = NB_HEADER + payload_bytes(b), have = (uint64_t)st.st_size;
    if (have != want)
        return v3_error("%s: %s note bank: expected %llu bytes (%u programs x 12 pitches x %u layers x %u samples), "
                        "file has %llu", path, have < want ? "truncated" : "oversized", (unsigned long long)want,
                        b->n_programs, b->n_layers, b->clip_len, (unsigned long long)have);
    size_t len = (size_t)payload_bytes(b);
    unsigned char *buf = xmalloc(len);
    if (fread(buf, 1, len, f) != len) {
        free(buf);
        return v3_error("%s: read error in note bank payload (file changed while reading?)", path);
    }
    if (crc32c(0, buf, len) != get_u32(h + OFF_PCRC)) {
        free(buf);
        return v3_error("%s: note bank payload checksum mismatch (file corrupt)", path);
    }
    bank_alloc(b);
    const unsigned char *p = buf;
    uint64_t n = n_clips(b), nt = n * b->clip_len;
    for (uint32_t i = 0; i < b->n_programs; i++, p += 4) b->programs[i] = (int32_t)get_u32(p);
    for (uint32_t i = 0; i < b->n_layers; i++, p += 4) b->velocities[i] = (int32_t)get_u32(p);
    for (uint64_t i = 0; i < n; i++, p += 4) b->gain[i] = get_f32(p);
    for (uint64_t i = 0; i < nt; i++, p += 2) b->clips[i] = (int16_t)(uint16_t)(p[0] | p[1] << 8);
    free(buf);
    if (bad_contents(b, why, sizeof why)) return v3_error("%s: bad note bank contents: %s", path, why);
    return 0;
}

int insnotes_bank_load(const char *path, InsnotesBank *b) {
    memset(b, 0, sizeof *b);
    FILE *f = fopen(path, "rb");
    if (!f)
        return v3_error("%s: cannot open note bank: %s (generate the set with v3 data insnotes)", path,
                        strerror(errno));
    int rc = load_open(path, f, b);
    fclose(f);
    if (rc) insnotes_bank_free(b);
    return rc;
}

/* ---- rendering ---- */

#ifdef V3_HAVE_FLUIDSYNTH
static char g_fs_msg[512]; /* last FluidSynth error message, quoted in our errors (rendering is single-threaded) */

static void fs_log(int level, const char *msg, void *data) {
    (void)level;
    (void)data;
    snprintf(g_fs_msg, sizeof g_fs_msg, "%s", msg ? msg : "");
    for (char *c = g_fs_msg; *c; c++)
        if (*c == '\n') *c = ' ';
}

/* One clip into mono[clip_len] (L, R: scratch of clip_len floats). fluid_synth_system_reset does not give a clean
 * state: the reverb keeps the previous clip's tail and even with effects off a repeated note differs by ~1e-4
 * (measured with FluidSynth 2.3.1). So every clip gets a fresh synth that borrows the soundfont loaded once by
 * the owner synth (creating one costs ~2 ms; reloading FluidR3 would cost ~0.2 s per clip). A fresh synth
 * renders bit-identically to one that loaded the soundfont itself. */
static int render_clip(fluid_settings_t *st, fluid_sfont_t *font, int prog, int key, int vel, int clip_len, float *L,
                       float *R, float *mono) {
    fluid_synth_t *syn = new_fluid_synth(st);
    if (!syn) return -1;
    int rc = -1;
    if (fluid_synth_add_sfont(syn, font) != FLUID_FAILED) {
        if (fluid_synth_program_change(syn, 0, prog) == FLUID_OK && fluid_synth_noteon(syn, 0, key, vel) == FLUID_OK &&
            fluid_synth_write_float(syn, INSNOTES_NOTE_LEN, L, 0, 1, R, 0, 1) == FLUID_OK &&
            fluid_synth_noteoff(syn, 0, key) == FLUID_OK &&
            fluid_synth_write_float(syn, clip_len - INSNOTES_NOTE_LEN, L, INSNOTES_NOTE_LEN, 1, R,
                                    INSNOTES_NOTE_LEN, 1) == FLUID_OK)
            rc = 0;
        fluid_synth_remove_sfont(syn, font); /* the owner synth keeps (and finally frees) the soundfont */
    }
    delete_fluid_synth(syn);
    if (rc) return -1;
    for (int t = 0; t < clip_len; t++) mono[t] = 0.5f * (L[t] + R[t]);
    return 0;
}

/* Quantise a mono clip to int16 with gain = peak / 32767; -1 for a silent clip. */
static int quantise(const float *mono, int n, int16_t *q, float *gain) {
    float peak = 0;
    for (int t = 0; t < n; t++) peak = fmaxf(peak, fabsf(mono[t]));
    if (!(peak > 0)) return -1;
    *gain = peak / 32767.0f;
    for (int t = 0; t < n; t++) {
        long v = lrintf(mono[t] / *gain);
        q[t] = (int16_t)(v > 32767 ? 32767 : v < -32767 ? -32767 : v);
    }
    return 0;
}

static int render_all(fluid_settings_t *st, fluid_synth_t *syn, int sfid, const char *sf, InsnotesBank *b) {
    fluid_sfont_t *font = fluid_synth_get_sfont_by_id(syn, sfid);
    for (uint32_t i = 0; i < b->n_programs; i++)
        if (!font || !fluid_sfont_get_preset(font, 0, b->programs[i]))
            return v3_error("%s: soundfont has no preset for GM program %d (bank 0); InsNotes needs programs %s", sf,
                            (int)b->programs[i], "64 19 21 41 56 59 68 71 72 75 22 52 (OOD: 0 4 73 78)");
    int T = (int)b->clip_len;
    float *L = xmalloc(sizeof(float) * T), *R = xmalloc(sizeof(float) * T), *mono = xmalloc(sizeof(float) * T);
    int16_t *check = xmalloc(sizeof(int16_t) * T);
    int rc = 0;
    double t0 = now_seconds();
    for (uint32_t p = 0; p < b->n_programs && !rc; p++) {
        for (uint32_t k = 0; k < 12 && !rc; k++)
            for (uint32_t l = 0; l < b->n_layers && !rc; l++) {
                size_t c = ((size_t)p * 12 + k) * b->n_layers + l;
                if (render_clip(st, font, b->programs[p], NB_BASE_PITCH + (int)k, b->velocities[l], T, L, R, mono))
                    rc = v3_error("%s: FluidSynth failed rendering program %d note %u velocity %d: %s", sf,
                                  (int)b->programs[p], NB_BASE_PITCH + k, (int)b->velocities[l], g_fs_msg);
                else if (quantise(mono, T, b->clips + c * T, &b->gain[c]))
                    rc = v3_error("%s: program %d note %u velocity %d rendered silence (expected a sounding note)",
                                  sf, (int)b->programs[p], NB_BASE_PITCH + k, (int)b->velocities[l]);
            }
        if (!rc)
            v3_log("insnotes: rendered program %d (%u/%u), %.2f s\n", (int)b->programs[p], p + 1, b->n_programs,
                   now_seconds() - t0);
    }
    /* Self-check that no state carries over between clips: the first clip, rendered again after all the others,
     * must be bit-identical to its first rendering. */
    float g;
    if (!rc && (render_clip(st, font, b->programs[0], NB_BASE_PITCH, b->velocities[0], T, L, R, mono) ||
                quantise(mono, T, check, &g) || g != b->gain[0] || memcmp(check, b->clips, sizeof(int16_t) * T)))
        rc = v3_error("%s: FluidSynth state carried over between clips (re-rendering the first clip gave different "
                      "samples); the bank would depend on rendering order", sf);
    free(L);
    free(R);
    free(mono);
    free(check);
    return rc;
}
#endif

int insnotes_bank_render(const char *soundfont, const int *programs, int n_programs, int n_layers, int clip_len,
                         InsnotesBank *b) {
    memset(b, 0, sizeof *b);
#ifndef V3_HAVE_FLUIDSYNTH
    (void)soundfont; (void)programs; (void)n_programs; (void)n_layers; (void)clip_len;
    return v3_error("rendering InsNotes needs FluidSynth: install the Debian package libfluidsynth-dev (and "
                    "rebuild)");
#else
    if (n_layers < 1 || n_layers > NB_MAX_LAYERS)
        return v3_error("velocity layers %d (expected 1..%d)", n_layers, NB_MAX_LAYERS);
    if (clip_len < INSNOTES_NOTE_LEN || clip_len > NB_MAX_CLIP)
        return v3_error("clip_len %d (expected %d..%d samples)", clip_len, INSNOTES_NOTE_LEN, NB_MAX_CLIP);
    if (n_programs < 1 || n_programs > 128) return v3_error("n_programs %d (expected 1..128)", n_programs);
    for (int i = 0; i < n_programs; i++) {
        int bad = programs[i] < 0 || programs[i] > 127;
        for (int j = 0; j < i; j++) bad |= programs[j] == programs[i];
        if (bad) return v3_error("insnotes: program %d (expected distinct GM programs 0..127)", programs[i]);
    }
    FILE *probe = fopen(soundfont, "rb");
    if (!probe)
        return v3_error("%s: cannot open soundfont: %s (Debian: apt-get install fluid-soundfont-gm for FluidR3_GM.sf2)",
                        soundfont, strerror(errno));
    unsigned char riff[12];
    size_t got = fread(riff, 1, sizeof riff, probe);
    fclose(probe);
    /* Check the RIFF "sfbk" signature ourselves: FluidSynth hands other files to libinstpatch, which prints
     * GLib assertions on stderr before failing. */
    if (got < 12 || memcmp(riff, "RIFF", 4) || memcmp(riff + 8, "sfbk", 4))
        return v3_error("%s: not a SoundFont (expected a RIFF 'sfbk' .sf2/.sf3 file)", soundfont);
    b->sample_rate = INSNOTES_SR;
    b->n_programs = (uint32_t)n_programs;
    b->n_pitches = 12;
    b->n_layers = (uint32_t)n_layers;
    b->clip_len = (uint32_t)clip_len;
    bank_alloc(b);
    for (int i = 0; i < n_programs; i++) b->programs[i] = programs[i];
    /* Layers spread evenly over the recipe's velocity range 80..120 (one layer: its middle, 100). */
    for (int l = 0; l < n_layers; l++)
        b->velocities[l] = n_layers == 1 ? 100 : (int32_t)lround(80.0 + 40.0 * l / (n_layers - 1));
    /* FluidSynth prints warnings on stderr by default; keep errors for our messages and drop the rest. */
    g_fs_msg[0] = 0;
    fluid_set_log_function(FLUID_PANIC, fs_log, NULL);
    fluid_set_log_function(FLUID_ERR, fs_log, NULL);
    fluid_set_log_function(FLUID_WARN, NULL, NULL);
    fluid_set_log_function(FLUID_INFO, NULL, NULL);
    fluid_set_log_function(FLUID_DBG, NULL, NULL);
    fluid_settings_t *st = new_fluid_settings();
    fluid_synth_t *syn = NULL;
    int rc = -1;
    if (!st) v3_error("FluidSynth: cannot create settings: %s", g_fs_msg);
    else if (fluid_settings_setnum(st, "synth.sample-rate", INSNOTES_SR) != FLUID_OK)
        v3_error("FluidSynth: cannot set synth.sample-rate to %d: %s", INSNOTES_SR, g_fs_msg);
    else if (!(syn = new_fluid_synth(st))) v3_error("FluidSynth: cannot create synth: %s", g_fs_msg);
    else {
        double t0 = now_seconds();
        int sfid = fluid_synth_sfload(syn, soundfont, 1);
        if (sfid == FLUID_FAILED)
            v3_error("%s: FluidSynth cannot load this soundfont (expected a .sf2/.sf3 file): %s", soundfont, g_fs_msg);
        else {
            v3_log("insnotes: loaded soundfont %s in %.2f s\n", soundfont, now_seconds() - t0);
            rc = render_all(st, syn, sfid, soundfont, b);
        }
    }
    if (syn) delete_fluid_synth(syn);
    if (st) delete_fluid_settings(st);
    if (rc) insnotes_bank_free(b);
    return rc;
#endif
}

double insnotes_bank_worst_tail(const InsnotesBank *b, int *program) {
    size_t n = (size_t)b->n_programs * b->n_pitches * b->n_layers, L = b->clip_len, tail = L < 100 ? L : 100;
    double worst = 0;
    if (program) *program = -1;
    for (size_t c = 0; c < n; c++) {
        const int16_t *x = b->clips + c * L;
        int peak = 0, end = 0;
        for (size_t t = 0; t < L; t++) {
            int a = x[t] < 0 ? -x[t] : x[t];
            if (a > peak) peak = a;
            if (t >= L - tail && a > end) end = a;
        }
        double r = peak ? (double)end / peak : 0; /* the per-clip gain cancels */
        if (r > worst) {
            worst = r;
            if (program) *program = b->programs[c / ((size_t)b->n_pitches * b->n_layers)];
        }
    }
    return worst;
}
