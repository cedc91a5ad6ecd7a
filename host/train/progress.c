/* include/progress.h */
#define _DEFAULT_SOURCE /* TIOCGWINSZ */
#include "progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

static FILE *g_out;          /* stderr unless a test redirects it */
static int g_tty = -1;       /* unknown until first use */
static int g_showing;        /* an in-place line is on screen */
static double g_last;

void progress_update(int force, const char *fmt, ...) {
    if (v3_verbose <= 0) return;
    if (!g_out) g_out = stderr;
    if (g_tty < 0) g_tty = isatty(fileno(g_out));
    double now = now_seconds();
    if (g_tty && !force && g_showing && now - g_last < 0.1) return;
    g_last = now;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (g_tty) {
        /* a line wider than the terminal would wrap, and the carriage return could no longer redraw it */
        struct winsize ws;
        if (ioctl(fileno(g_out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && ws.ws_col < sizeof line)
            line[ws.ws_col - 1] = 0;
        fprintf(g_out, "\r%s\033[K", line); /* carriage return, text, clear the rest of the old line */
        g_showing = 1;
    } else {
        fprintf(g_out, "%s\n", line);
    }
    fflush(g_out);
}

void progress_break(void) {
    if (g_showing) {
        fputc('\n', g_out ? g_out : stderr);
        g_showing = 0;
    }
}

void progress_set_output(FILE *f, int tty) {
    g_out = f;
    g_tty = tty;
    g_showing = 0;
    g_last = 0;
}
