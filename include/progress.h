/* Training status on stderr: on a terminal one line redrawn in place (at most every 0.1 s, and always when
 * forced); when stderr is not a terminal (CI, pipes, files) every update is a plain line. Silent when
 * v3_verbose <= 0 (--quiet). */
#ifndef V3_PROGRESS_H
#define V3_PROGRESS_H
#include <stdio.h>

#include "common.h"

void progress_update(int force, const char *fmt, ...) V3_PRINTF(2, 3);
/* End an in-place line (newline) before other output; a no-op when none is showing. */
void progress_break(void);
/* Tests: write to f and behave as on a terminal (tty = 1) or not (0); f = NULL restores stderr (tty probed). */
void progress_set_output(FILE *f, int tty);
#endif
