/* datasource_open: choose the kind from the files in the directory; the v3ds kind wraps a tensor file. */
#define _POSIX_C_SOURCE 200809L
#include "datasource.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "dataset.h"

static int exists_in(const char *dir, const char *name) {
    char p[1100];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* The first '#' line of index.tsv names the kind ("# v3-insnotes 1", "# v3-phonenums 1"). */
static int index_kind(const char *dir, char *kind, size_t cap) {
    char p[1100], line[256];
    snprintf(p, sizeof p, "%s/index.tsv", dir);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok || strncmp(line, "# v3-", 5)) return -1;
    size_t n = strcspn(line + 5, " \t\r\n");
    if (n + 1 > cap) n = cap - 1;
    memcpy(kind, line + 5, n);
    kind[n] = 0;
    return 0;
}

int datasource_open(const char *dir, const char *split, int n_frag, DataSource *ds) {
    memset(ds, 0, sizeof *ds);
    char kind[32] = "";
    if (exists_in(dir, "index.tsv")) {
        if (index_kind(dir, kind, sizeof kind))
            return v3_error("%s/index.tsv: first line: expected '# v3-insnotes 1' or '# v3-phonenums 1'", dir);
        /* n_frag <= 0: the authors' configs' choice (12 notes, the whole 10-digit page) */
        if (!strcmp(kind, "insnotes")) return insnotes_open(dir, split, n_frag > 0 ? n_frag : 12, ds);
        if (!strcmp(kind, "phonenums")) return phonenums_open(dir, split, n_frag > 0 ? n_frag : 10, ds);
        return v3_error("%s/index.tsv: unknown dataset kind '%s' (expected insnotes or phonenums)", dir, kind);
    }
    char f[64];
    snprintf(f, sizeof f, "%s.v3ds", split);
    if (exists_in(dir, f)) return v3ds_source_open(dir, split, n_frag, ds);
    if (access(dir, F_OK))
        return v3_error("%s: dataset directory not found (make one with v3 data insnotes|phonenums|synth --out %s)",
                        dir, dir);
    return v3_error("%s: no dataset here: expected index.tsv (v3 data insnotes/phonenums) or %s.v3ds (v3 data "
                    "synth)", dir, split);
}

void datasource_set(DataSource *ds, const char *dir, const char *split, const DataSourceShape *sh, void *impl,
                    int (*get_batch)(DataSource *, const uint64_t *, const uint64_t *, int, float *, int32_t *,
                                     int32_t *),
                    void (*close)(DataSource *)) {
    snprintf(ds->dir, sizeof ds->dir, "%s", dir);
    snprintf(ds->split, sizeof ds->split, "%s", split);
    snprintf(ds->kind, sizeof ds->kind, "%s", sh->kind);
    ds->n_samples = sh->n_samples;
    ds->n_frag = sh->n_frag;
    ds->C = sh->C;
    ds->H = sh->H;
    ds->W = sh->W;
    ds->n_content = sh->n_content;
    ds->n_style = sh->n_style;
    ds->ood = sh->ood;
    ds->impl = impl;
    ds->get_batch = get_batch;
    ds->close = close;
}

void datasource_close(DataSource *ds) {
    if (ds && ds->close) ds->close(ds);
    if (ds) memset(ds, 0, sizeof *ds);
}

/* ---- v3ds: the whole split in memory; no augmentation ---- */

static int v3ds_get(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *x, int32_t *content,
                    int32_t *style) {
    const Dataset *d = ds->impl;
    int *ii = xmalloc(sizeof(int) * (B > 0 ? B : 1));
    for (int b = 0; b < B; b++) {
        if (idx[b] >= d->n_samples) {
            free(ii);
            return v3_error("%s: sample %llu out of range (%llu samples)", d->path, (unsigned long long)idx[b],
                            (unsigned long long)d->n_samples);
        }
        ii[b] = (int)idx[b];
    }
    dataset_gather(d, ii, B, x, content, style);
    free(ii);
    return 0;
}

static void v3ds_close(DataSource *ds) {
    dataset_free(ds->impl);
    free(ds->impl);
}

int v3ds_source_open(const char *dir, const char *split, int n_frag, DataSource *ds) {
    Dataset *d = xcalloc(1, sizeof *d);
    if (dataset_load_split(dir, split, d)) { free(d); return -1; }
    if (n_frag > 0 && (int)d->n_frag != n_frag) {
        int rc = v3_error("%s: samples have %u fragments but the config's model expects %d (model_config.n_fragments)", d->path,
                          d->n_frag, n_frag);
        dataset_free(d);
        free(d);
        return rc;
    }
    memset(ds, 0, sizeof *ds);
    DataSourceShape sh = {"v3ds", d->n_samples, d->n_frag, d->C, d->H, d->W, d->n_content, d->n_style, 0};
    datasource_set(ds, dir, split, &sh, d, v3ds_get, v3ds_close);
    snprintf(ds->desc, sizeof ds->desc, "%.200s (%llu samples)", d->path, (unsigned long long)d->n_samples);
    return 0;
}
