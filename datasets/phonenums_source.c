/* PhoneNums as a DataSource (include/datasource.h, include/phonenums.h): reads and checks DIR/index.tsv, keeps
 * every page of the requested split in memory as uint8 (800 pages = 37 MB) and cuts fragments per batch.
 * A sample is one page; its n_frag fragments are consecutive 32-column patches from a start drawn from the
 * sample's augmentation seed, so batches are reproducible (the authors' loader always uses the whole page). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "datasource.h"
#include "phonenums.h"
#include "rng.h"
#include "splits.h"

#define PAGE_BYTES ((size_t)PHONENUMS_H * PHONENUMS_W * 3)

typedef struct {
    int n;
    uint8_t *pix;      /* [n][48][320][3] */
    uint8_t *digits;   /* [n][10] */
    uint8_t *colour;   /* [n] */
    float lut[256];    /* v -> (v / 255 - 0.5) / 0.5, as torchvision ToTensor + Normalize compute it in float */
} PnImpl;

static void pn_close(DataSource *ds) {
    PnImpl *m = ds->impl;
    if (m) {
        free(m->pix);
        free(m->digits);
        free(m->colour);
        free(m);
    }
    ds->impl = NULL;
}

static int pn_get_batch(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *x, int32_t *content,
                        int32_t *style) {
    const PnImpl *m = ds->impl;
    const int nf = (int)ds->n_frag, H = PHONENUMS_H, PW = PHONENUMS_PATCH_W;
    for (int b = 0; b < B; b++) {
        if (idx[b] >= (uint64_t)m->n)
            return v3_error("%s/index.tsv: sample %llu out of range (split %s has %d pages)", ds->dir,
                            (unsigned long long)idx[b], ds->split, m->n);
        int start = 0;
        if (nf < PHONENUMS_DIGITS) { /* with the whole page nothing is drawn */
            Rng r;
            rng_seed(&r, aug[b]);
            start = (int)rng_below(&r, (uint32_t)(PHONENUMS_DIGITS + 1 - nf));
        }
        const uint8_t *page = m->pix + idx[b] * PAGE_BYTES;
        for (int i = 0; i < nf; i++) {
            int k = start + i;
            if (content) content[b * nf + i] = m->digits[idx[b] * PHONENUMS_DIGITS + k];
            if (style) style[b * nf + i] = m->colour[idx[b]];
            if (!x) continue;
            float *o = x + ((size_t)b * nf + i) * 3 * H * PW; /* CHW */
            for (int y = 0; y < H; y++) {
                const uint8_t *src = page + ((size_t)y * PHONENUMS_W + k * PW) * 3;
                for (int c = 0; c < 3; c++)
                    for (int xx = 0; xx < PW; xx++) o[((size_t)c * H + y) * PW + xx] = m->lut[src[xx * 3 + c]];
            }
        }
    }
    return 0;
}

/* Split a line at tabs into at most max fields (in place); returns the count. */
static int split_tabs(char *s, char **f, int max) {
    int n = 0;
    for (;;) {
        if (n == max) return max + 1;
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (!t) return n;
        *t = 0;
        s = t + 1;
    }
}

/* A colour name's index in either palette; *ood_out says which. -1 if unknown. */
static int colour_lookup(const char *name, int *ood_out) {
    for (int o = 0; o < 2; o++)
        for (int c = 0; c < PHONENUMS_N_COLOURS; c++)
            if (!strcmp(name, phonenums_colour_name(o, c))) {
                *ood_out = o;
                return c;
            }
    return -1;
}

/* Check one index line (fields already split). Returns 0 or v3_error naming file:line and the field. */
static int check_line(const char *ip, int ln, char **f, int ood, uint8_t digits[10], int *colour) {
    const char *file = f[0], *tok = f[1], *dg = f[2], *cis = f[3], *cname = f[4];
    /* digits: a permutation of 0..9 */
    int seen = 0;
    if (strlen(dg) != 10) return v3_error("%s:%d: field 3 (digits) '%s': expected 10 digits", ip, ln, dg);
    for (int k = 0; k < 10; k++) {
        if (dg[k] < '0' || dg[k] > '9' || (seen >> (dg[k] - '0') & 1))
            return v3_error("%s:%d: field 3 (digits) '%s': expected a permutation of 0123456789", ip, ln, dg);
        seen |= 1 << (dg[k] - '0');
        digits[k] = (uint8_t)(dg[k] - '0');
    }
    /* colour index and name, consistent with each other and with the header's palette */
    char *end;
    long ci = strtol(cis, &end, 10);
    if (!*cis || *end || ci < 0 || ci >= PHONENUMS_N_COLOURS)
        return v3_error("%s:%d: field 4 (colour index) '%s': expected 0..7", ip, ln, cis);
    int name_ood = 0, ni = colour_lookup(cname, &name_ood);
    if (ni < 0) return v3_error("%s:%d: field 5 (colour name) '%s': not a PhoneNums colour", ip, ln, cname);
    if (name_ood != ood)
        return v3_error("%s:%d: field 5 (colour name) '%s' is in the %s palette but the header says ood %d", ip, ln,
                        cname, name_ood ? "OOD" : "training", ood);
    if (ni != ci)
        return v3_error("%s:%d: field 4 (colour index) %ld disagrees with colour '%s' (index %d)", ip, ln, ci, cname,
                        ni);
    *colour = (int)ci;
    /* split token */
    if (ood) {
        long r = strncmp(tok, "ood", 3) ? -1 : strtol(tok + 3, &end, 10);
        if (r < 0 || tok[3] < '0' || tok[3] > '9' || *end)
            return v3_error("%s:%d: field 2 (split) '%s': expected ood<rank> in an OOD set", ip, ln, tok);
    } else if (strcmp(tok, "train") && strcmp(tok, "val") && strcmp(tok, "test")) {
        return v3_error("%s:%d: field 2 (split) '%s': expected train, val or test", ip, ln, tok);
    }
    /* file name NNNNN_<digits>_<colour>.png must carry the same labels */
    char want[64];
    const char *us = strchr(file, '_');
    size_t flen = strlen(file);
    snprintf(want, sizeof want, "_%s_%s.png", dg, cname);
    if (!us || us == file || strspn(file, "0123456789") != (size_t)(us - file) || flen >= 200 ||
        strcmp(us, want))
        return v3_error("%s:%d: field 1 (file) '%s': expected NNNNN%s (the labels of this line)", ip, ln, file,
                        want);
    return 0;
}

int phonenums_open(const char *dir, const char *split, int n_frag, DataSource *ds) {
    memset(ds, 0, sizeof *ds);
    char ip[1100];
    if ((size_t)snprintf(ip, sizeof ip, "%s/index.tsv", dir) >= sizeof ip || strlen(dir) >= sizeof ds->dir ||
        strlen(split) >= sizeof ds->split)
        return v3_error("%s: directory or split name too long", dir);
    if (n_frag < 1 || n_frag > PHONENUMS_DIGITS)
        return v3_error("%s: n_frag %d: a PhoneNums page has 10 fragments, expected 1..10", dir, n_frag);
    FILE *f = fopen(ip, "r");
    if (!f) return v3_error("%s: cannot open (not a PhoneNums directory? run `v3 data phonenums`)", ip);
    PnImpl *m = xcalloc(1, sizeof *m);
    int cap = 0, ln = 0, ood = -1, n_pages = -1, n_lines = 0, have_magic = 0, rc = 0;
    char *line = NULL, **files = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        ln++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (ln == 1) {
            if (strcmp(line, "# v3-phonenums 1")) {
                rc = v3_error("%s:1: expected the header '# v3-phonenums 1'", ip);
                break;
            }
            have_magic = 1;
            continue;
        }
        if (line[0] == '#') {
            if (!strncmp(line, "# ood ", 6)) {
                ood = !strcmp(line + 6, "1") ? 1 : !strcmp(line + 6, "0") ? 0 : -2;
                if (ood == -2) {
                    rc = v3_error("%s:%d: header 'ood': expected 0 or 1", ip, ln);
                    break;
                }
            } else if (!strncmp(line, "# n_pages ", 10)) {
                n_pages = atoi(line + 10);
            }
            continue;
        }
        if (ood < 0 || n_pages < 1) {
            rc = v3_error("%s:%d: page line before the '# ood' and '# n_pages' header lines", ip, ln);
            break;
        }
        if (n_lines == 0) { /* validate the split name once the palette is known */
            if (split_contains(split, ood ? "ood0" : "train", ood) < 0) {
                char e[900];
                snprintf(e, sizeof e, "%s", v3_last_error());
                rc = v3_error("%s: %s", ip, e);
                break;
            }
        }
        n_lines++;
        char *fld[6];
        int nf = split_tabs(line, fld, 5);
        if (nf != 5) {
            rc = v3_error("%s:%d: expected 5 tab-separated fields (file, split, digits, colour index, colour name), "
                          "got %s%d", ip, ln, nf > 5 ? "more than " : "", nf > 5 ? 5 : nf);
            break;
        }
        uint8_t dg[10];
        int colour = 0;
        if (check_line(ip, ln, fld, ood, dg, &colour)) {
            rc = -1;
            break;
        }
        if (!split_contains(split, fld[1], ood)) continue;
        if (m->n == cap) {
            cap = cap ? 2 * cap : 256;
            m->digits = xrealloc(m->digits, (size_t)cap * 10);
            m->colour = xrealloc(m->colour, (size_t)cap);
            files = xrealloc(files, sizeof(char *) * (size_t)cap);
        }
        memcpy(m->digits + (size_t)m->n * 10, dg, 10);
        m->colour[m->n] = (uint8_t)colour;
        files[m->n++] = strdup(fld[0]);
    }
    free(line);
    fclose(f);
    if (!rc && !have_magic) rc = v3_error("%s: empty file, expected the header '# v3-phonenums 1'", ip);
    if (!rc && n_lines != n_pages)
        rc = v3_error("%s: header says n_pages %d but the file has %d page lines (truncated?)", ip, n_pages, n_lines);
    if (!rc && m->n == 0) rc = v3_error("%s: split '%s' is empty", ip, split);
    if (!rc) {
        m->pix = xmalloc(PAGE_BYTES * (size_t)m->n);
        for (int i = 0; i < m->n && !rc; i++) {
            char pp[1400];
            uint8_t *px;
            int w, h;
            snprintf(pp, sizeof pp, "%s/pages/%s", dir, files[i]);
            if (png_read_rgb(pp, PHONENUMS_W, PHONENUMS_H, &px, &w, &h)) {
                rc = -1;
                break;
            }
            memcpy(m->pix + PAGE_BYTES * (size_t)i, px, PAGE_BYTES);
            free(px);
        }
    }
    for (int i = 0; i < m->n; i++) free(files[i]);
    free(files);
    if (rc) {
        ds->impl = m;
        pn_close(ds);
        memset(ds, 0, sizeof *ds);
        return -1;
    }
    for (int v = 0; v < 256; v++) m->lut[v] = ((float)v / 255.0f - 0.5f) / 0.5f;
    DataSourceShape sh = {"phonenums", (uint64_t)m->n, (uint32_t)n_frag, 3, PHONENUMS_H, PHONENUMS_PATCH_W,
                          PHONENUMS_DIGITS, PHONENUMS_N_COLOURS, ood};
    datasource_set(ds, dir, split, &sh, m, pn_get_batch, pn_close);
    snprintf(ds->desc, sizeof ds->desc, "phonenums (%s palette), %d pages of 10 digits, %d fragments per sample",
             ood ? "OOD" : "training", m->n, n_frag);
    return 0;
}
