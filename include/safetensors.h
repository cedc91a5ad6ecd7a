/* safetensors files (the format's public spec): u64 little-endian header length N, N bytes of JSON header
 * {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}},
 * then the raw little-endian tensor bytes; offsets are relative to the first byte after the header.
 * The reader validates everything (header length within the file, JSON syntax, known dtypes, shape x dtype size
 * == end - begin, offsets in bounds, no overlaps, no gaps, the buffer fully covered, unique names) and reports
 * a one-line error naming the file, the tensor and the expected value. */
#ifndef V3_SAFETENSORS_H
#define V3_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F64, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } StDtype;
#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t begin, end;           /* byte offsets into StFile.data */
} StTensor;

typedef struct {
    char *path;
    StTensor *t; int n;          /* in header order */
    char **meta_key, **meta_val; int n_meta;
    unsigned char *data; size_t data_len;
    unsigned char *file;         /* whole file (data points into it) */
} StFile;

/* Read and validate a whole file. 0, or -1 with v3_error (f is left empty and needs no st_free). */
int st_read(const char *path, StFile *f);
void st_free(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
const char *st_meta(const StFile *f, const char *key); /* NULL if absent */
const char *st_dtype_name(StDtype d);                  /* "F32", ... */
size_t st_dtype_size(StDtype d);
int64_t st_numel(const StTensor *t);
/* Copy tensor `name` into out as float32. It must exist and have exactly the given shape (ndim dims); F32 is copied,
 * F64/F16/BF16/integer/BOOL are converted. 0, or -1 with v3_error naming the file, tensor and expected shape. */
int st_get_f32(const StFile *f, const char *name, int ndim, const int64_t *shape, float *out);

/* Writer: collects tensors (data copied at st_add), writes the header (keys in insertion order, padded with spaces
 * to a multiple of 8 bytes) and the data through write_file_atomic. */
typedef struct StWriter StWriter;
StWriter *st_writer_new(void);
int st_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data);
int st_add_meta(StWriter *w, const char *key, const char *value);
int st_writer_save(StWriter *w, const char *path);
void st_writer_free(StWriter *w);
#endif
