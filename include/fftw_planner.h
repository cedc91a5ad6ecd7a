/* One process-wide lock around FFTW's planner (plan creation and destruction), shared by every file that makes
 * FFTW plans (host/dsp/stft_cpu.c, host/dsp/griffinlim.c): FFTW's planner keeps global state and is not thread-safe, so
 * a lock per file would not be enough. fftwf_execute on distinct plans needs no lock. */
#ifndef V3_FFTW_PLANNER_H
#define V3_FFTW_PLANNER_H
void fftw_planner_lock(void);
void fftw_planner_unlock(void);
#endif
