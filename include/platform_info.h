/* What decides a run's last bits on the CPU (NOTES.md, "Reproducibility"): the BLAS kernel set OpenBLAS chose
 * for this CPU, the thread count and the CPU model. Written beside every run and printed at its start. */
#ifndef V3_PLATFORM_INFO_H
#define V3_PLATFORM_INFO_H
#include <stddef.h>

/* One line such as "OpenBLAS 0.3.21 SkylakeX kernels, 2 threads, Intel(R) Xeon(R) Processor". */
void platform_describe(char *buf, size_t n);
/* DIR/platform.txt: the same, one "key: value" per line. 0, or -1 with v3_error. */
int platform_write(const char *dir);
/* How this run treats denormal floats (the cpu backend flushes them: cpu_denormals_init); set records it for
 * platform.txt, NULL only reads. Returns the current text. */
const char *platform_denormals(const char *set);
#endif
