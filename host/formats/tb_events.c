/* TensorBoard event files (include/tb_events.h): protobuf encoded by hand, only the fields TensorBoard reads. */
#define _POSIX_C_SOURCE 200809L
#include "tb_events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "phonenums.h" /* png_encode_rgb */

struct TbWriter {
    FILE *f;
    char path[1200];
};

/* A growable byte buffer for one message. */
typedef struct { uint8_t *p; size_t n, cap; } Buf;

static void put(Buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_byte(Buf *b, uint8_t v) { put(b, &v, 1); }
static void put_varint(Buf *b, uint64_t v) {
    while (v >= 0x80) { put_byte(b, (uint8_t)(v | 0x80)); v >>= 7; }
    put_byte(b, (uint8_t)v);
}
/* Length-delimited field (wire type 2). */
static void put_bytes_field(Buf *b, int field, const void *d, size_t n) {
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    put(b, d, n);
}
static void put_varint_field(Buf *b, int field, uint64_t v) {
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, v);
}

uint32_t tb_masked_crc(const void *data, size_t n) {
    uint32_t c = crc32c(0, data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static int write_record(TbWriter *w, const Buf *ev) {
    uint8_t hdr[12];
    uint64_t len = ev->n;
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(len >> (8 * i));
    uint32_t lc = tb_masked_crc(hdr, 8), dc = tb_masked_crc(ev->p, ev->n);
    for (int i = 0; i < 4; i++) hdr[8 + i] = (uint8_t)(lc >> (8 * i));
    uint8_t tail[4];
    for (int i = 0; i < 4; i++) tail[i] = (uint8_t)(dc >> (8 * i));
    if (fwrite(hdr, 1, 12, w->f) != 12 || fwrite(ev->p, 1, ev->n, w->f) != ev->n || fwrite(tail, 1, 4, w->f) != 4 ||
        fflush(w->f))
        return v3_error("%s: cannot write event record: %s", w->path, strerror(errno));
    return 0;
}

/* Event header: wall_time (field 1, double) and step (field 2). */
static void event_start(Buf *ev, int64_t step) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    put_byte(ev, 0x09);
    put(ev, &t, 8); /* little-endian host */
    if (step) put_varint_field(ev, 2, (uint64_t)step);
}

/* Event.summary (field 5) holding one Summary.value (field 1) = value. */
static int write_summary(TbWriter *w, int64_t step, const Buf *value) {
    Buf summary = {0}, ev = {0};
    put_bytes_field(&summary, 1, value->p, value->n);
    event_start(&ev, step);
    put_bytes_field(&ev, 5, summary.p, summary.n);
    int rc = write_record(w, &ev);
    free(summary.p);
    free(ev.p);
    return rc;
}

TbWriter *tb_open(const char *dir) {
    if (mkdir(dir, 0755) && errno != EEXIST) {
        v3_error("%s: cannot create TensorBoard directory: %s", dir, strerror(errno));
        return NULL;
    }
    TbWriter *w = xcalloc(1, sizeof *w);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s", dir, (long long)time(NULL), host);
    if (!(w->f = fopen(w->path, "ab"))) {
        v3_error("%s: cannot create event file: %s", w->path, strerror(errno));
        free(w);
        return NULL;
    }
    Buf ev = {0};
    event_start(&ev, 0);
    put_bytes_field(&ev, 3, "brain.Event:2", 13);
    int rc = write_record(w, &ev);
    free(ev.p);
    if (rc) { tb_close(w); return NULL; }
    return w;
}

int tb_scalar(TbWriter *w, const char *tag, int64_t step, float value) {
    if (!w) return 0;
    Buf v = {0};
    put_bytes_field(&v, 1, tag, strlen(tag));
    put_byte(&v, 0x15); /* simple_value, field 2, fixed32 */
    put(&v, &value, 4);
    int rc = write_summary(w, step, &v);
    free(v.p);
    return rc;
}

int tb_image_rgb(TbWriter *w, const char *tag, int64_t step, const uint8_t *rgb, int width, int height) {
    if (!w) return 0;
    uint8_t *png;
    size_t n;
    if (png_encode_rgb(rgb, width, height, &png, &n)) return -1;
    Buf img = {0}, v = {0};
    put_varint_field(&img, 1, (uint64_t)height);
    put_varint_field(&img, 2, (uint64_t)width);
    put_varint_field(&img, 3, 3); /* colorspace RGB */
    put_bytes_field(&img, 4, png, n);
    put_bytes_field(&v, 1, tag, strlen(tag));
    put_bytes_field(&v, 4, img.p, img.n); /* Summary.Value.image */
    int rc = write_summary(w, step, &v);
    free(png);
    free(img.p);
    free(v.p);
    return rc;
}

const char *tb_path(const TbWriter *w) { return w->path; }

void tb_close(TbWriter *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    free(w);
}
