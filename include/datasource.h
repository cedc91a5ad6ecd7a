/* A split of a dataset as the trainer sees it: n_samples samples of n_frag fragments [C, H, W] with per-fragment
 * content/style labels, produced a batch at a time. Three kinds sit behind this interface:
 *   v3ds      a tensor file DIR/<split>.v3ds (synthetic data; include/dataset.h)
 *   insnotes  a note bank plus a seeded recipe; samples are assembled and STFT'd when loaded (include/insnotes.h):
 *             on the CPU by get_batch, or on the device from get_raw's audio (host/train/loader.c)
 *   phonenums PNG pages plus a label index (include/phonenums.h)
 * datasource_open() picks the kind from the files in DIR. */
#ifndef V3_DATASOURCE_H
#define V3_DATASOURCE_H
#include <stdint.h>

typedef struct DataSource DataSource;
struct DataSource {
    char dir[512];
    char split[32];          /* train, val, test, 1_shot, 5_shot, 10_shot */
    char kind[16];           /* "v3ds", "insnotes", "phonenums" */
    char desc[256];          /* one line for logs, e.g. "insnotes (FluidR3_GM.sf2, 12 programs), 960 files" */
    uint64_t n_samples;
    uint32_t n_frag, C, H, W;
    uint32_t n_content, n_style;
    int ood;                 /* an OOD set: splits 1_shot, 5_shot, 10_shot, test (else train, val, test) */
    int use_gpu;             /* set by the caller after open (a GPU run): the loader computes the features of kinds
                              * with get_raw on the device (host/train/loader.c with LoaderOpts.cuda); get_batch stays on
                              * the CPU but spreads its work over the OpenMP threads (the cores are otherwise idle) */
    uint32_t raw_elems;      /* floats of raw input per fragment for get_raw (0: the kind has no get_raw) */
    void *impl;
    /* Fill B samples: sample idx[b] with augmentation seed aug[b] (the random start slot/fragment and the
     * frequency mask are pure functions of it, so a batch is reproducible and resumes replay exactly).
     * x: [B, n_frag, C, H, W]; content/style: [B, n_frag] (either may be NULL). Returns 0, or -1 with
     * v3_last_error() naming the file. A DataSource is used by one thread at a time; two DataSources are
     * independent (each owns its scratch buffers and FFT plans). */
    int (*get_batch)(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *x, int32_t *content,
                     int32_t *style);
    /* Optional (NULL unless raw_elems > 0): the same batch before its feature transform, for features computed
     * on the device where the training step reads them. Same samples, augmentation draws and labels as
     * get_batch; raw: [B * n_frag][raw_elems] (may be NULL: labels and mask only); mask: [B][2], the frequency
     * band [mask[2b], mask[2b] + mask[2b+1]) of sample b's fragments that the feature sets to 0 (then 0 -> 1e-8).
     * Only InsNotes has one: raw = each fragment's INSNOTES_FRAG_AUDIO audio samples, the feature the
     * log-magnitude STFT of include/stft.h; cuda_stft_features (include/cuda_backend.h) turns it into x on the
     * device, equal to get_batch's x up to float rounding. Never touches a GPU itself. */
    int (*get_raw)(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *raw, int32_t *mask,
                   int32_t *content, int32_t *style);
    void (*close)(DataSource *ds);
};

static inline uint64_t datasource_sample_elems(const DataSource *d) {
    return (uint64_t)d->n_frag * d->C * d->H * d->W;
}

/* Open split `split` of the dataset in dir. n_frag: fragments per sample wanted by the model (InsNotes and
 * PhoneNums cut that many consecutive fragments from a random start; v3ds files must hold exactly n_frag).
 * n_frag <= 0 takes the kind's default: 12 for InsNotes, 10 for PhoneNums, the stored count for v3ds.
 * On failure: -1 and a one-line v3_last_error() naming the file and the expectation. */
int datasource_open(const char *dir, const char *split, int n_frag, DataSource *ds);
void datasource_close(DataSource *ds);

/* For the per-kind openers: names, shape and the kind's functions in one call (desc is left to the caller). */
typedef struct {
    const char *kind;
    uint64_t n_samples;
    uint32_t n_frag, C, H, W, n_content, n_style;
    int ood;
} DataSourceShape;
void datasource_set(DataSource *ds, const char *dir, const char *split, const DataSourceShape *shape, void *impl,
                    int (*get_batch)(DataSource *, const uint64_t *, const uint64_t *, int, float *, int32_t *,
                                     int32_t *),
                    void (*close)(DataSource *));

/* Per-kind openers (datasource_open dispatches to them). */
int v3ds_source_open(const char *dir, const char *split, int n_frag, DataSource *ds);
int insnotes_open(const char *dir, const char *split, int n_frag, DataSource *ds);
int phonenums_open(const char *dir, const char *split, int n_frag, DataSource *ds);
#endif
