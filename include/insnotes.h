/* InsNotes (v3.md section 1): 12 General-MIDI instruments (styles) x 12 pitch classes C4..B4 (contents).
 *
 * On disk (DIR, a few tens of MB, portable to a machine without FluidSynth):
 *   DIR/bank.v3nb    rendered notes, int16 mono 16 kHz, one clip per (program, pitch, velocity layer) with the
 *                    release tail; format at the top of datasets/insnotes_bank.c
 *   DIR/index.tsv    the seeded recipe: one line per file (= sample of the dataset): name, split token
 *                    (include/splits.h), style, program, the file's seed (velocities and envelope are drawn
 *                    from it) and the peak-normalisation gain; header lines give the format version, seed,
 *                    soundfont and whether the set is OOD.
 * A file is 120 note slots of 16896 samples (1.056 s = 33 hops): note k has MIDI pitch 60 + k % 12, starts at
 * 16896 k, lasts 1 s, velocity U{80..120}; the signal is the sum of the notes' clips (velocity between layers
 * by linear interpolation), times the authors' random piecewise envelope, times the stored peak gain (0.9 / peak).
 * When loaded, a sample is n_frag consecutive slots from a random start (mod 120), each slot STFT'd to 512 x 32
 * (n_fft 1024, hop 512, periodic Hann, centred with zero padding, log(|X| + 1e-5), Nyquist bin dropped), then
 * the authors' FrequencyMasking(15) and 0 -> 1e-8. Content = slot % 12, style = instrument index.
 * The DataSource's get_batch does all of it on the CPU (FFTW); its get_raw stops at the audio and the mask band,
 * which the loader uploads and turns into the same features on the device (cuda_stft_features). */
#ifndef V3_INSNOTES_H
#define V3_INSNOTES_H
#include <stddef.h>
#include <stdint.h>

#include "datasource.h"

#define INSNOTES_SR 16000
#define INSNOTES_SLOT 16896        /* samples per note slot: 1.056 s = 33 hops of 512 */
#define INSNOTES_NOTES 120         /* note slots per file */
#define INSNOTES_NOTE_LEN 16000    /* 1-s notes */
#define INSNOTES_NFFT 1024
#define INSNOTES_HOP 512
#define INSNOTES_BINS 512          /* 513 bins, Nyquist dropped */
#define INSNOTES_FRAMES 32         /* frames per fragment (the 33rd of a slot is discarded) */
#define INSNOTES_FRAG_AUDIO 16896  /* audio samples one fragment's 32 centred frames read: 31 * 512 + 1024 */
#define INSNOTES_N_PROGRAMS 12
#define INSNOTES_N_OOD_PROGRAMS 4

extern const int insnotes_programs[INSNOTES_N_PROGRAMS];         /* 0-based GM: 64, 19, 21, ... */
extern const int insnotes_ood_programs[INSNOTES_N_OOD_PROGRAMS]; /* 0, 4, 73, 78 */

typedef struct {
    const char *soundfont;     /* NULL: /usr/share/sounds/sf2/FluidR3_GM.sf2 (Debian fluid-soundfont-gm) */
    int files_per_instrument;  /* 100 (the authors'); mini: 4 */
    int ood;                   /* the 4 OOD programs instead of the 12 training ones */
    uint64_t seed;
    int velocity_layers;       /* rendered velocities spread over 80..120: 3 -> 80, 100, 120; 1 -> 100 */
    int clip_len;              /* samples per rendered clip: the 1-s note plus its release tail (33792 = 2 slots) */
} InsnotesParams;

void insnotes_defaults(InsnotesParams *p);
/* Render the bank with FluidSynth and write DIR/bank.v3nb and DIR/index.tsv (DIR created). Progress on stderr.
 * Without FluidSynth at build time: -1 and "install libfluidsynth-dev ..." in v3_last_error(). */
int insnotes_generate(const char *dir, const InsnotesParams *p);

/* Write audio of file `sample` of `split` as WAV or FLAC (by the extension of out_path) via libsndfile:
 * n_slots slots from start_slot (n_slots = 120, start 0: the whole file). */
int insnotes_export_audio(const char *dir, const char *split, uint64_t sample, int start_slot, int n_slots,
                          const char *out_path);

/* ---- Internals shared by datasets/insnotes_{bank,gen,source}.c and the tests (not for other callers) ---- */

/* The rendered note bank (DIR/bank.v3nb). clips[((prog * n_pitches + pitch) * n_layers + layer) * clip_len + t]
 * times gain[(prog * n_pitches + pitch) * n_layers + layer] is the clip in [-1, 1]. */
typedef struct {
    uint32_t sample_rate, n_programs, n_pitches, n_layers, clip_len;
    int32_t *programs;   /* [n_programs] 0-based GM program numbers */
    int32_t *velocities; /* [n_layers] ascending MIDI velocities */
    float *gain;         /* [n_programs * n_pitches * n_layers] */
    int16_t *clips;
} InsnotesBank;

/* Render with FluidSynth (soundfont path required). -1 with v3_last_error() on failure. */
int insnotes_bank_render(const char *soundfont, const int *programs, int n_programs, int n_layers, int clip_len,
                         InsnotesBank *b);
int insnotes_bank_save(const char *path, const InsnotesBank *b);  /* atomic: temp, fsync, rename */
int insnotes_bank_load(const char *path, InsnotesBank *b);        /* fully validated */
void insnotes_bank_free(InsnotesBank *b);
/* How much release tail the clip length cuts off: the largest max|x| over a clip's last 100 samples relative to
 * that clip's peak, over all clips (0 = every tail has died out); *program gets its GM program. */
double insnotes_bank_worst_tail(const InsnotesBank *b, int *program);
/* Write head then body to path atomically (temp file, fsync, rename, fsync of the directory); also index.tsv. */
int insnotes_write_atomic(const char *path, const void *head, size_t nhead, const void *body, size_t nbody);

#define INSNOTES_FILE_LEN (INSNOTES_NOTES * INSNOTES_SLOT)  /* 2027520 samples */
/* One file's recipe, drawn from its seed (insnotes_file_init): per-note velocity and envelope segments. */
typedef struct {
    int style;                         /* index into the bank's programs */
    float gain;                        /* peak-normalisation gain applied by insnotes_signal (1 = raw) */
    int velocity[INSNOTES_NOTES];
    double seg_end[INSNOTES_NOTES];    /* envelope level at the end of 1-s segment i (it starts at seg_end[i-1], 1.0) */
    unsigned char seg_sine[INSNOTES_NOTES]; /* 1: quarter-sine segment, 0: linear */
} InsnotesFile;
void insnotes_file_init(InsnotesFile *f, uint64_t file_seed, int style, float gain);
/* Samples [t0, t1) of the file's signal (0 outside [0, INSNOTES_FILE_LEN)), times f->gain. The value at t does
 * not depend on the range asked for. */
void insnotes_signal(const InsnotesBank *b, const InsnotesFile *f, int64_t t0, int64_t t1, float *out);
/* The feature's last two steps on the host, in place on B samples of n_frag log-magnitude STFTs ([512][32] each):
 * rows [mask[2b], mask[2b] + mask[2b+1]) of sample b's fragments set to 0 (the frequency mask, in the log domain),
 * then every exact 0 -> 1e-8. get_batch's CPU path; the GPU's (cuda_stft_features) is tested against it. */
void insnotes_mask_and_guard(float *x, int B, int n_frag, const int32_t *mask);
#endif
