/* The process-wide FFTW planner lock (include/fftw_planner.h). */
#include <pthread.h>

#include "fftw_planner.h"

static pthread_mutex_t g_planner = PTHREAD_MUTEX_INITIALIZER;

void fftw_planner_lock(void) { pthread_mutex_lock(&g_planner); }
void fftw_planner_unlock(void) { pthread_mutex_unlock(&g_planner); }
