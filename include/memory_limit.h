/* How much memory a run may use, and sizes such as "8G" on the command line (host/train/memory_limit.c). */
#ifndef V3_MEMORY_LIMIT_H
#define V3_MEMORY_LIMIT_H
#include <stddef.h>

/* --max-memory in bytes; 0 = no option given (the machine's memory is the limit). */
extern size_t v3_max_memory;
/* The limit in bytes; *from_option (may be NULL) says whether --max-memory set it. */
size_t v3_memory_limit(int *from_option);
/* "123", "512M", "8G", "1.5GiB", ...; 0, or -1 if it is not a size. */
int v3_parse_size(const char *s, size_t *out);
double v3_gib(size_t bytes);
#endif
