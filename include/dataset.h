/* Our dataset container format (.v3ds), one file per split: dir/train.v3ds, dir/val.v3ds, dir/test.v3ds.
 *
 * Layout, all little-endian:
 *   header, 64 bytes:
 *     char     magic[8]   = "V3DSET\0\1"
 *     uint32   version    = 1
 *     uint32   dtype      = 0 (float32; 1 = int16 reserved for later issues)
 *     uint64   n_samples
 *     uint32   n_frag, C, H, W        fragment tensor shape (InsNotes: C = 1)
 *     uint32   n_content, n_style     number of label classes (labels are 0..n-1; -1 = unknown)
 *     uint32   header_crc             CRC-32C of bytes [0, 48) of the header
 *     uint32   payload_crc            CRC-32C of everything after the header
 *     uint8    reserved[8] = 0
 *   payload:
 *     float32  x[n_samples][n_frag][C][H][W]
 *     int32    content[n_samples][n_frag]
 *     int32    style[n_samples][n_frag]
 * The file size must equal 64 + payload size exactly; anything else is reported as truncated or oversized. */
#ifndef V3_DATASET_H
#define V3_DATASET_H
#include <stdint.h>

#define V3DS_MAGIC "V3DSET\0\1"
#define V3DS_VERSION 1u
#define V3DS_HEADER_BYTES 64

typedef struct {
    uint64_t n_samples;
    uint32_t n_frag, C, H, W;
    uint32_t n_content, n_style;
    float *x;            /* [n_samples * n_frag * C * H * W] */
    int32_t *content;    /* [n_samples * n_frag] */
    int32_t *style;      /* [n_samples * n_frag] */
    char path[512];
} Dataset;

/* Elements of one fragment (C*H*W) and of one sample (n_frag*C*H*W). */
static inline uint64_t dataset_frag_elems(const Dataset *d) { return (uint64_t)d->C * d->H * d->W; }
static inline uint64_t dataset_sample_elems(const Dataset *d) { return (uint64_t)d->n_frag * dataset_frag_elems(d); }

/* Allocate an empty dataset of the given shape (labels zeroed). */
int dataset_alloc(Dataset *d, uint64_t n_samples, uint32_t n_frag, uint32_t C, uint32_t H, uint32_t W,
                  uint32_t n_content, uint32_t n_style);
void dataset_free(Dataset *d);
/* Load and fully validate a file (magic, version, dtype, sizes, CRCs, label ranges, finite values).
 * On failure: -1 and a one-line v3_last_error() naming the file and what was expected. */
int dataset_load(const char *path, Dataset *d);
/* Write atomically (temp file, fsync, rename, fsync of the directory). */
int dataset_save(const char *path, const Dataset *d);
/* dir/<split>.v3ds */
int dataset_load_split(const char *dir, const char *split, Dataset *d);
/* Copy samples idx[0..B) into x_out [B, n_frag, C, H, W] and labels into content_out/style_out [B, n_frag] (NULL to skip). */
void dataset_gather(const Dataset *d, const int *idx, int B, float *x_out, int32_t *content_out, int32_t *style_out);

/* Synthetic "coloured strokes" data for tests and CPU runs: fragment 3 x H x W (H = W = 16 by default).
 * Content = which of n_content stroke shapes/positions is drawn; style = the stroke colour (one per sample,
 * from n_style colours), with per-fragment jitter and noise. Each sample holds n_frag fragments whose contents
 * are a random permutation (n_frag <= n_content) so, as in PhoneNums, every sample spans the vocabulary. */
typedef struct {
    uint64_t seed;
    int n_train, n_val, n_test;   /* samples per split */
    int n_frag;                   /* fragments per sample */
    int n_content;                /* stroke classes, at most 10 */
    int n_style;                  /* colours, at most 8 */
    int H, W;                     /* fragment size, default 16 x 16 */
    float noise;                  /* Gaussian pixel noise sigma in [-1,1] units */
} SynthParams;

void synth_defaults(SynthParams *p);
/* Write dir/train.v3ds, dir/val.v3ds, dir/test.v3ds (creates dir). Deterministic given the seed. */
int synth_generate(const char *dir, const SynthParams *p);
#endif
