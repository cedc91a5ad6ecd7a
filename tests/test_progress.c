/* The training progress line: redrawn in place and throttled on a terminal, plain lines elsewhere. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "progress.h"
#include "testing.h"

static void contents(FILE *f, char *out, size_t cap) {
    fflush(f);
    rewind(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
}

TEST(progress_redraws_in_place_on_a_terminal) {
    FILE *f = tmpfile();
    CHECK(f, "tmpfile");
    char out[1024];
    int saved = v3_verbose;
    v3_verbose = 1; /* the test runner may run quiet */
    progress_set_output(f, 1);
    progress_update(0, "step %d", 1);
    progress_update(0, "step %d", 2); /* within 0.1 s of the last: dropped */
    progress_update(1, "step %d", 3); /* forced */
    progress_break();
    progress_break(); /* nothing showing: no second newline */
    contents(f, out, sizeof out);
    v3_verbose = saved;
    CHECK(!strcmp(out, "\rstep 1\033[K\rstep 3\033[K\n"), "terminal output: '%s'", out);
    v3_verbose = 1;
    fclose(f);
    f = tmpfile();
    progress_set_output(f, 0);
    progress_update(0, "step %d", 1);
    progress_update(0, "step %d", 2);
    progress_break();
    contents(f, out, sizeof out);
    CHECK(!strcmp(out, "step 1\nstep 2\n"), "plain output: '%s'", out);
    v3_verbose = 0; /* --quiet */
    progress_update(1, "step %d", 3);
    v3_verbose = saved;
    contents(f, out, sizeof out);
    CHECK(!strcmp(out, "step 1\nstep 2\n"), "--quiet printed: '%s'", out);
    progress_set_output(NULL, -1);
    fclose(f);
    return 0;
}
