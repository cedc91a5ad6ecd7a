/* Error reporting, checked allocation, CRC-32C, logging. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

static _Thread_local char g_err[1024]; /* per thread: the loader thread reports its own errors */
int v3_verbose = 1;

int v3_error(const char *fmt, ...) {
    va_list ap;
    char buf[sizeof g_err]; /* arguments may point into g_err (v3_error("...: %s", v3_last_error())) */
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(g_err, buf, sizeof g_err);
    return -1;
}

const char *v3_last_error(void) { return g_err[0] ? g_err : "unknown error"; }
void v3_clear_error(void) { g_err[0] = 0; }

void v3_fatal_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "v3: internal error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) V3_FATAL("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) V3_FATAL("out of memory allocating %zu x %zu bytes", n, sz);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) V3_FATAL("out of memory reallocating %zu bytes", n);
    return q;
}

float *falloc(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p) V3_FATAL("out of memory allocating %zu floats", n);
    memset(p, 0, bytes);
    return p;
}

void ffree(float *p) { free(p); }

/* CRC-32C, reflected polynomial 0x82F63B78, table built on first use. */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT; /* the loader thread checksums too */

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t crc32c(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (n--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

void v3_log(const char *fmt, ...) {
    if (v3_verbose <= 0) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int fsync_parent_dir(const char *path) {
    char *dir = xmalloc(strlen(path) + 2);
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    int rc = fd < 0 ? -1 : fsync(fd);
    int err = errno;
    if (fd >= 0) close(fd);
    if (rc) v3_error("%s: cannot fsync directory %s: %s", path, dir, strerror(err));
    free(dir);
    return rc;
}

int write_file_atomic(const char *path, int (*write)(FILE *f, void *ctx), void *ctx) {
    size_t n = strlen(path) + 8;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    int rc = -1;
    FILE *f = fopen(tmp, "wb");
    if (!f) v3_error("%s: cannot create %s: %s", path, tmp, strerror(errno));
    else {
        errno = 0;
        int werr = (write(f, ctx) || fflush(f) || fsync(fileno(f))) ? (errno ? errno : EIO) : 0;
        if (fclose(f) && !werr) werr = errno ? errno : EIO;
        if (werr) v3_error("%s: write to %s failed: %s", path, tmp, strerror(werr));
        else if (rename(tmp, path)) v3_error("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        else rc = fsync_parent_dir(path);
        if (rc && access(tmp, F_OK) == 0) remove(tmp); /* leave nothing partial behind */
    }
    free(tmp);
    return rc;
}
