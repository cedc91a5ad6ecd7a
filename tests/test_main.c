/* Test runner: runs every registered TEST (optionally only those whose name contains argv[1]) and ends with
 * the line "N passed, N failed" (plus ", N skipped" when some skipped). Exit status 1 if any failed. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops.h"
#include "testing.h"

typedef struct { const char *name, *file; test_fn fn; } TestEntry;
static TestEntry g_tests[1024];
static int g_ntests;

void test_register(const char *name, const char *file, test_fn fn) {
    if (g_ntests < 1024) g_tests[g_ntests++] = (TestEntry){name, file, fn};
}

static int cmp_tests(const void *a, const void *b) {
    const TestEntry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    qsort(g_tests, (size_t)g_ntests, sizeof g_tests[0], cmp_tests);
    cpu_gemm_init();
    v3_verbose = -1; /* no progress or summary output from the library: it would drown the report */
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < g_ntests; i++) {
        if (filter && !strstr(g_tests[i].name, filter)) continue;
        double t0 = now_seconds();
        fflush(stdout);
        v3_clear_error();
        int rc = g_tests[i].fn();
        double dt = now_seconds() - t0;
        const char *tag = rc == 0 ? "PASS" : rc == 77 ? "SKIP" : "FAIL";
        printf("%s %-44s (%.2fs)\n", tag, g_tests[i].name, dt);
        fflush(stdout);
        if (rc == 0) passed++;
        else if (rc == 77) skipped++;
        else failed++;
    }
    if (skipped) printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    else printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout); /* before LeakSanitizer's exit-time check, which ends the process without flushing */
    return failed ? 1 : 0;
}
