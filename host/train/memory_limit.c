/* The memory a run may use: the machine's (physical memory, or a smaller cgroup limit in a container) unless
 * --max-memory sets less. Configs are checked against it before anything big is allocated, so an absurd but
 * legal size fails at once with the estimate instead of swapping or being killed minutes later. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory_limit.h"

size_t v3_max_memory = 0;

size_t v3_memory_limit(int *from_option) {
    if (from_option) *from_option = v3_max_memory != 0;
    if (v3_max_memory) return v3_max_memory;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
    size_t phys = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : (size_t)-1;
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r"); /* cgroup v2; "max" = unlimited */
    if (f) {
        unsigned long long cg;
        if (fscanf(f, "%llu", &cg) == 1 && cg > 0 && cg < phys) phys = (size_t)cg;
        fclose(f);
    }
    return phys;
}

int v3_parse_size(const char *s, size_t *out) {
    char *end;
    if (!s || !isdigit((unsigned char)*s)) return -1;
    double v = strtod(s, &end);
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end || !(v * mul >= 1) || v * mul > 9.0e18) return -1;
    *out = (size_t)(v * mul);
    return 0;
}

double v3_gib(size_t bytes) { return (double)bytes / (1024.0 * 1024 * 1024); }
