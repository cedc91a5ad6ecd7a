/* Shared helpers: error reporting, checked allocation, small utilities.
 * Library code never exits on bad input: it records a one-line message with v3_error() and returns -1.
 * The CLI prints that message ("v3: error: ...") and exits non-zero; tests read it with v3_last_error(). */
#ifndef V3_COMMON_H
#define V3_COMMON_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define V3_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define V3_PRINTF(a, b)
#endif

/* Record an error message (one line, no trailing newline). Always returns -1 so callers can `return v3_error(...)`. */
int v3_error(const char *fmt, ...) V3_PRINTF(1, 2);
const char *v3_last_error(void);
void v3_clear_error(void);

/* Fatal internal errors (bugs, out of memory): print file:line and abort the process. */
void v3_fatal_at(const char *file, int line, const char *fmt, ...) V3_PRINTF(3, 4) __attribute__((noreturn));
#define V3_FATAL(...) v3_fatal_at(__FILE__, __LINE__, __VA_ARGS__)

void *xmalloc(size_t n);          /* never returns NULL */
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
float *falloc(size_t n);          /* 64-byte aligned float buffer, zeroed */
void ffree(float *p);

/* CRC-32C (Castagnoli), used for dataset and checkpoint integrity. */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);

/* Verbosity: 1 normal, 0 quiet (--quiet: no progress, still the final metrics), -1 silent (tests). */
extern int v3_verbose;
void v3_log(const char *fmt, ...) V3_PRINTF(1, 2); /* to stderr when v3_verbose > 0 */

double now_seconds(void);
/* fsync the directory holding path, so a rename into it is durable (the last step of every atomic write).
 * 0, or -1 with v3_error naming path and directory. */
int fsync_parent_dir(const char *path);
/* Atomic file write: write(f, ctx) fills path.tmp, which is flushed, fsynced, closed and renamed over path, and
 * the directory fsynced; on any failure the temp file is removed and path is untouched. write returns 0, or
 * nonzero on failure (errno describing it). 0, or -1 with v3_error naming path. */
int write_file_atomic(const char *path, int (*write)(FILE *f, void *ctx), void *ctx);
#ifdef __cplusplus
}
#endif
#endif
