/* The training loop. The data order of epoch e is a permutation drawn from a stream derived from (seed, e), and
 * all other randomness lives in the model's RNG (checkpointed), so a resumed run replays the uninterrupted one
 * bit for bit on the same machine and thread count. */
#define _POSIX_C_SOURCE 200809L
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "datasource.h"
#include "loader.h"
#include "platform_info.h"
#include "progress.h"
#include "tb_events.h"
#include "train_images.h"
#include "model.h"
#include "step.h"

int (*train_test_nan_hook)(uint64_t step) = NULL;

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

static int mkdir_p(const char *path) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST) return v3_error("%s: cannot create directory: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) && errno != EEXIST) return v3_error("%s: cannot create directory: %s", buf, strerror(errno));
    return 0;
}

/* The model's expectations of a dataset, checked before step 0. */
static int check_dataset(const DataSource *d, const Model *m) {
    const ArchSpec *a = &m->arch;
    if ((int)d->n_frag != m->cfg.n_fragments || (int)d->C != a->C || (int)d->H != a->H || (int)d->W != a->W)
        return v3_error("%s (%s split): dataset fragments are %u x [%u, %u, %u] but the config's model expects "
                        "%d x [%d, %d, %d] (model_config.n_fragments x [in_channels, n_feature, fragment_len])",
                        d->dir, d->split, d->n_frag, d->C, d->H, d->W, m->cfg.n_fragments, a->C, a->H, a->W);
    if (d->n_samples < 2) return v3_error("%s (%s split): dataset has %llu samples; at least 2 are needed", d->dir,
                                          d->split, (unsigned long long)d->n_samples);
    return 0;
}

/* Drop JSONL lines whose "step" is beyond the checkpoint, so a resumed log reads like an uninterrupted one. */
static void truncate_log(const char *path, uint64_t step) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "w");
    if (!o) { fclose(f); return; }
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        if (!strchr(line, '\n') && feof(f)) break; /* a line cut short by a kill: never a complete record */
        const char *s = strstr(line, "\"step\":");
        if (s && strtoull(s + 7, NULL, 10) > step) continue;
        fputs(line, o);
    }
    fclose(f);
    fclose(o);
    rename(tmp, path);
}

typedef struct {
    Model *m;
    const Backend *be;   /* --device */
    Step *st;            /* the training step on it: training, validation */
    int device_batches;  /* the loader puts batches in the backend's memory (CUDA) */
    V3Math math;
    DataSource train, val;
    Loader *ld;          /* streams training batches (loader thread) */
    int B, spe;          /* batch size, steps per epoch */
    uint64_t seed;
    float *xb;           /* validation batch */
    FILE *log;
    TbWriter *tb;        /* TensorBoard scalars beside log.jsonl (DIR/tb) */
    char dir[1024], ckdir[1100];
    double resume_val;   /* validation loss recorded in the checkpoint resumed from (NaN: none) */
    uint64_t *skip;      /* --on-nan rollback: steps whose batches are drawn and discarded (skipped_steps.txt) */
    char (*skip_term)[64];
    int n_skip;
    V3LossCfg full_loss; /* the config's loss weights (validation; training from loss_config.style_from_step on) */
} Run;

/* Puts the loss weights of a training step (style_on = 0: before loss_config.style_from_step, the weights of the
 * terms that involve the style code, style, sample and fragment, at 0) or of validation (style_on = 1) in place;
 * remakes the V3 workspaces only when they change. */
static int use_loss_weights(Run *r, int style_on) {
    V3LossCfg want = r->full_loss;
    if (!style_on) want.w_style = want.w_sample = want.w_fragment = 0;
    if (r->m->loss.w_style == want.w_style && r->m->loss.w_sample == want.w_sample &&
        r->m->loss.w_fragment == want.w_fragment)
        return 0;
    return step_set_loss(r->st, &want);
}

/* "atoms":[[n(class 0), n(class 1), ...], ...]: the atom-by-content confusion counts of a validation pass. */
static void log_atoms(FILE *f, const int *ind, const int32_t *content, int N, int K, int C) {
    int *M = xcalloc((size_t)K * C, sizeof(int));
    for (int i = 0; i < N; i++)
        if (content[i] >= 0 && content[i] < C) M[(size_t)ind[i] * C + content[i]]++;
    fprintf(f, ",\"atoms\":[");
    for (int k = 0; k < K; k++) {
        fprintf(f, "%s[", k ? "," : "");
        for (int c = 0; c < C; c++) fprintf(f, "%s%d", c ? "," : "", M[(size_t)k * C + c]);
        fputc(']', f);
    }
    fputc(']', f);
    free(M);
}

/* Validation in eval mode over the whole val split; returns mean total loss, fills purity. On a non-finite loss
 * it fails with the term(s) in bad. */
static int validate(Run *r, double *val_loss, double *purity, LossTerms *mean, char *bad, size_t cap) {
    DataSource *v = &r->val;
    int nb = (int)((v->n_samples + r->B - 1) / r->B), frags = r->m->cfg.n_fragments;
    int *all_ind = xmalloc(sizeof(int) * v->n_samples * frags);
    int32_t *all_content = xmalloc(sizeof(int32_t) * v->n_samples * frags);
    double tot = 0, w = 0;
    memset(mean, 0, sizeof *mean);
    if (use_loss_weights(r, 1)) {
        free(all_ind), free(all_content);
        return -1;
    }
    for (int b = 0; b < nb; b++) {
        int start = b * r->B, n = (int)v->n_samples - start;
        if (n > r->B) n = r->B;
        if (n < 2) break; /* sample-level statistics need two samples */
        LossTerms L;
        memset(&L, 0, sizeof L);
        int rc = loader_eval_batch(v, r->seed, (uint64_t)start, n, r->xb, all_content + (size_t)start * frags, NULL);
        if (!rc) rc = step_forward(r->st, r->xb, 0, n, 0, VQ_EVAL, &L);
        if (rc && !isfinite(L.total)) loss_nonfinite_terms(&L, bad, cap);
        if (rc) { free(all_ind); free(all_content); return -1; }
        memcpy(all_ind + (size_t)start * frags, step_indices(r->st), sizeof(int) * n * frags);
        tot += L.total * n;
        w += n;
        double *acc = &mean->total, *src = &L.total;
        for (size_t k = 0; k < sizeof(LossTerms) / sizeof(double); k++) acc[k] += src[k] * n;
    }
    double *acc = &mean->total;
    for (size_t k = 0; k < sizeof(LossTerms) / sizeof(double); k++) acc[k] /= w;
    int counted = (int)w * frags;
    *purity = codebook_purity(all_ind, all_content, counted, r->m->vq.K, (int)v->n_content);
    log_atoms(r->log, all_ind, all_content, counted, r->m->vq.K, (int)v->n_content);
    *val_loss = tot / w;
    free(all_ind);
    free(all_content);
    return 0;
}

/* Every loss term as TensorBoard scalars "<prefix>/<term>". Write errors are ignored: log.jsonl is the record
 * of the run, the event file a view of it. */
static void tb_terms(TbWriter *tb, const char *prefix, int64_t step, const LossTerms *L) {
    static const char *const names[] = {"loss", "recon", "commit", "content", "style", "sample", "fragment",
                                        "Fc", "Sc", "Fs", "Ss"};
    const double *v = &L->total;
    char tag[64];
    for (int i = 0; i < 11 && tb; i++) {
        snprintf(tag, sizeof tag, "%s/%s", prefix, names[i]);
        tb_scalar(tb, tag, step, (float)v[i]);
    }
}

static void log_terms(FILE *f, const LossTerms *L) {
    fprintf(f, "\"loss\":%.9e,\"recon\":%.9e,\"commit\":%.9e,\"content\":%.9e,\"style\":%.9e,\"sample\":%.9e,"
               "\"fragment\":%.9e,\"Fc\":%.9e,\"Sc\":%.9e,\"Fs\":%.9e,\"Ss\":%.9e",
            L->total, L->recon, L->commit, L->content, L->style, L->sample, L->fragment, L->Fc, L->Sc, L->Fs, L->Ss);
}

/* The one way the training state reaches the host Model (checkpoints, TensorBoard images): the step's state
 * (a no-op on host backends) and the backend's algorithm choices beside the checkpoints, so --resume uses the
 * same algorithms. */
static int state_to_host(Run *r) {
    char path[1300];
    snprintf(path, sizeof path, "%s/conv_algos.txt", r->ckdir);
    return step_to_host(r->st) || r->be->algos_save(path) ? -1 : 0;
}

/* Keep the best save_top_k epoch checkpoints by validation loss (the authors' rule) plus latest.v3ck.
 * (The host Model holds the state: state_to_host came first.) */
static int save_epoch_checkpoint(Run *r, const CkptMeta *meta) {
    char path[1300];
    snprintf(path, sizeof path, "%s/epoch%05u_step%08llu.v3ck", r->ckdir, meta->epoch,
             (unsigned long long)meta->step);
    if (checkpoint_save(path, r->m, meta)) return -1;
    for (;;) {
        DIR *d = opendir(r->ckdir);
        if (!d) return v3_error("%s: cannot list checkpoints: %s", r->ckdir, strerror(errno));
        struct dirent *e;
        int count = 0;
        double worst = -INFINITY;
        char worst_name[512] = "";
        while ((e = readdir(d))) {
            size_t L = strlen(e->d_name);
            if (strncmp(e->d_name, "epoch", 5) || L < 5 || strcmp(e->d_name + L - 5, ".v3ck")) continue;
            char p[1700];
            snprintf(p, sizeof p, "%s/%s", r->ckdir, e->d_name);
            CkptMeta mm;
            if (checkpoint_peek(p, &mm)) continue;
            count++;
            double vl = isnan(mm.val_loss) ? INFINITY : mm.val_loss;
            if (vl > worst) { worst = vl; snprintf(worst_name, sizeof worst_name, "%s", e->d_name); }
        }
        closedir(d);
        if (count <= r->m->cfg.save_top_k || !worst_name[0]) break;
        char p[1700];
        snprintf(p, sizeof p, "%s/%s", r->ckdir, worst_name);
        unlink(p);
    }
    return 0;
}

static int save_latest(Run *r, uint64_t step, int epoch, double val_loss) {
    char path[1300];
    snprintf(path, sizeof path, "%s/latest.v3ck", r->ckdir);
    CkptMeta meta = {step, r->seed, (uint32_t)epoch, val_loss};
    return checkpoint_save(path, r->m, &meta);
}

static int setup(Run *r, const TrainOpts *o, Config *c) {
    config_defaults(c);
    if (config_load(o->config_path, c)) return -1;
    for (int i = 0; i < o->n_sets; i++)
        if (config_set(c, o->sets[i])) return -1;
    if (o->data_dir) snprintf(c->data_dir, sizeof c->data_dir, "%s", o->data_dir);
    if (config_validate(c)) return -1;
    if (!c->data_dir[0]) return v3_error("%s: key 'data_dir': expected a dataset directory (or pass --data DIR)", c->path);
    if (!c->has_seed) v3_log("v3: note: %s: random_seed is empty; using seed 0 so the run is reproducible\n", c->path);
    r->seed = c->has_seed ? c->random_seed : 0;
    if (v3_math_parse(o->math ? o->math : "fp32", &r->math)) return v3_error("--math: %s", v3_last_error());
    if (!(r->be = backend_select(o->device, r->math))) return -1;
    r->device_batches = r->be == &backend_cuda;
    double t_open = now_seconds();
    if (datasource_open(c->data_dir, "train", c->n_fragments, &r->train) ||
        datasource_open(c->data_dir, "val", c->n_fragments, &r->val))
        return -1;
    r->train.use_gpu = r->val.use_gpu = r->device_batches;
    v3_log("v3: data: %s; train %llu, val %llu samples (opened in %.1f s)\n", r->train.desc,
           (unsigned long long)r->train.n_samples, (unsigned long long)r->val.n_samples, now_seconds() - t_open);
    r->m = model_build(c, r->seed);
    if (!r->m) return -1;
    if (check_dataset(&r->train, r->m) || check_dataset(&r->val, r->m)) return -1;
    r->B = c->batch_size;
    r->spe = (int)((r->train.n_samples + r->B - 1) / r->B);
    if (r->train.n_samples % r->B == 1) { /* a 1-sample batch has no sample-level spread (0/0) */
        r->spe--;
        v3_log("v3: note: dropping the last batch of each epoch (1 sample: sample-level statistics need 2)\n");
    }
    size_t se = datasource_sample_elems(&r->train);
    r->xb = falloc(se * r->B);
    snprintf(r->dir, sizeof r->dir, "%s", o->out_dir);
    snprintf(r->ckdir, sizeof r->ckdir, "%s/checkpoints", o->out_dir);
    return mkdir_p(r->ckdir);
}

static void teardown(Run *r) {
    if (r->log) fclose(r->log);
    tb_close(r->tb);
    step_free(r->st);
    model_free(r->m);
    loader_free(r->ld);
    datasource_close(&r->train);
    datasource_close(&r->val);
    ffree(r->xb);
    free(r->skip);
    free(r->skip_term);
}

/* --on-nan rollback's skip list, checkpoints/skipped_steps.txt: one "STEP TERM" line per rollback (STEP numbered
 * as in log.jsonl), kept beside the checkpoints so that --resume replays the same skips. */
static void skip_path(const Run *r, char *p, size_t cap) { snprintf(p, cap, "%s/skipped_steps.txt", r->ckdir); }

static void skip_push(Run *r, uint64_t step, const char *term) {
    r->skip = xrealloc(r->skip, sizeof *r->skip * (size_t)(r->n_skip + 1));
    r->skip_term = xrealloc(r->skip_term, sizeof *r->skip_term * (size_t)(r->n_skip + 1));
    r->skip[r->n_skip] = step;
    snprintf(r->skip_term[r->n_skip++], sizeof *r->skip_term, "%s", term);
}

static int load_skips(Run *r) {
    char p[1300], term[64];
    skip_path(r, p, sizeof p);
    FILE *f = fopen(p, "r");
    if (!f) return 0; /* no rollbacks yet */
    unsigned long long st;
    int n;
    while ((n = fscanf(f, "%llu %63s", &st, term)) == 2) skip_push(r, st, term);
    int bad = n != EOF;
    fclose(f);
    return bad ? v3_error("%s: expected lines \"STEP TERM\"", p) : 0;
}

static int write_skips(FILE *f, void *ctx) {
    const Run *r = ctx;
    for (int i = 0; i < r->n_skip; i++)
        if (fprintf(f, "%llu %s\n", (unsigned long long)r->skip[i], r->skip_term[i]) < 0) return -1;
    return 0;
}

/* The non-finite term(s) that made the run skip `step`'s batch, or NULL. */
static const char *skip_term(const Run *r, uint64_t step) {
    for (int i = 0; i < r->n_skip; i++)
        if (r->skip[i] == step) return r->skip_term[i];
    return NULL;
}

/* "last good checkpoint: PATH (step K)", or that there is none: the state a --resume would continue from. */
static void describe_latest(const Run *r, char *buf, size_t cap) {
    char p[1300];
    CkptMeta meta;
    snprintf(p, sizeof p, "%s/latest.v3ck", r->ckdir);
    if (access(p, F_OK) == 0 && checkpoint_peek(p, &meta) == 0)
        snprintf(buf, cap, "last good checkpoint: %s (step %llu)", p, (unsigned long long)meta.step);
    else
        snprintf(buf, cap, "no checkpoint in %s yet", r->ckdir);
}

/* --on-nan rollback after step n failed with non-finite `term`: record the skip (first, so a kill from here on
 * still resumes into the same skip), reload latest.v3ck, cut log.jsonl back to it and restart the loader there.
 * The replay logs the skipped step as {"kind":"rollback",...} when it reaches it. */
static int rollback(Run *r, const TrainOpts *o, uint64_t n, const char *term, uint64_t total, uint64_t *step,
                    double *last_val) {
    char why[1024], ck[1500], p[1300], logp[1100];
    snprintf(why, sizeof why, "%s", v3_last_error());
    snprintf(p, sizeof p, "%s/latest.v3ck", r->ckdir);
    describe_latest(r, ck, sizeof ck);
    if (access(p, F_OK) != 0)
        return v3_error("step %llu: %s; --on-nan rollback: no checkpoint in %s to roll back to",
                        (unsigned long long)n, why, r->ckdir);
    if (r->n_skip >= o->max_rollbacks)
        return v3_error("step %llu: %s; stopping: the run has rolled back %d time(s), the limit (--max-rollbacks %d); "
                        "%s", (unsigned long long)n, why, r->n_skip, o->max_rollbacks, ck);
    skip_push(r, n, term);
    skip_path(r, p, sizeof p);
    if (write_file_atomic(p, write_skips, r)) return -1;
    loader_free(r->ld);
    r->ld = NULL;
    CkptMeta meta;
    snprintf(p, sizeof p, "%s/latest.v3ck", r->ckdir);
    if (checkpoint_load(p, r->m, &meta) || step_from_host(r->st)) return -1;
    snprintf(logp, sizeof logp, "%s/log.jsonl", r->dir);
    fclose(r->log);
    truncate_log(logp, meta.step);
    if (!(r->log = fopen(logp, "a"))) return v3_error("%s: cannot open log: %s", logp, strerror(errno));
    progress_break();
    v3_log("v3: step %llu: non-finite %s; rolled back to %s (step %llu); its batch will be skipped (rollback %d of "
           "at most %d)\n", (unsigned long long)n, term, p, (unsigned long long)meta.step, r->n_skip, o->max_rollbacks);
    *step = meta.step;
    *last_val = meta.val_loss;
    LoaderOpts lo = {&r->train, r->B, r->spe, r->seed, r->device_batches};
    if (!(r->ld = loader_create(&lo)) || loader_start(r->ld, *step, total)) return -1;
    return 0;
}

/* Step n failed; term names what was non-finite when that is why (its loss, its gradient, or the validation
 * after it). --on-nan rollback rolls back (0: go on from *step); otherwise the error names the step as log.jsonl
 * numbers it and the checkpoint a --resume would continue from (-1). */
static int step_failed(Run *r, const TrainOpts *o, uint64_t n, const char *term, uint64_t total, uint64_t *step,
                       double *last_val) {
    if (term[0] && o->on_nan_rollback) return rollback(r, o, n, term, total, step, last_val);
    char why[1024], ck[1500];
    snprintf(why, sizeof why, "%s", v3_last_error());
    describe_latest(r, ck, sizeof ck);
    return v3_error("step %llu: %s; stopping; %s", (unsigned long long)n, why, ck);
}

/* Test hook (train_test_nan_hook): a non-finite loss at step n, before any update. */
static int test_nan(LossTerms *L, uint64_t n) {
    if (!train_test_nan_hook || !train_test_nan_hook(n)) return 0;
    L->recon = L->total = NAN;
    return loss_nonfinite_error(L);
}


static int train_loop(Run *r, const TrainOpts *o, uint64_t step) {
    const Config *c = &r->m->cfg;
    uint64_t total = o->steps >= 0 ? (uint64_t)o->steps : (uint64_t)c->epochs * r->spe;
    if (total > (uint64_t)V3_MAX_STEPS)
        return v3_error("%s: epochs %d x %llu steps per epoch = %llu steps, over the limit of %lld (V3_MAX_STEPS)",
                        c->path, c->epochs, (unsigned long long)r->spe, (unsigned long long)total, V3_MAX_STEPS);
    double t0 = now_seconds(), last_val = r->resume_val, last_purity = NAN;
    uint64_t step0 = step;
    LoaderOpts lo = {&r->train, r->B, r->spe, r->seed, r->device_batches};
    if (step < total && (!(r->ld = loader_create(&lo)) || loader_start(r->ld, step, total))) return -1;
    while (step < total && !g_stop) {
        int epoch = (int)(step / r->spe);
        const Batch *bt = loader_next(r->ld);
        if (!bt) return v3_error("step %llu: %s", (unsigned long long)step + 1, v3_last_error());
        const char *skipped = skip_term(r, step + 1);
        if (skipped) { /* rolled back from: the batch is drawn and dropped, so later steps keep their batches */
            fprintf(r->log, "{\"kind\":\"rollback\",\"step\":%llu,\"term\":\"%s\"}\n", (unsigned long long)step + 1,
                    skipped);
            fflush(r->log);
            step++;
            goto epoch_end;
        }
        int B = bt->B;
        double lr = c->lr * config_lr_factor(c, epoch);
        LossTerms L;
        memset(&L, 0, sizeof L);
        char term[128] = ""; /* what was non-finite, when that is why the step failed */
        int rc;
        /* the batch is in the backend's memory when the loader put it there (bt->x_dev), else on the host */
        const float *x = bt->x_dev ? bt->x_dev : bt->x;
        if (use_loss_weights(r, step >= (uint64_t)c->style_from_step)) return -1;
        /* model_config.kmeans_reinit_step: the quantiser's first-forward k-means runs again on this batch */
        if (c->kmeans_reinit_step > 0 && step == (uint64_t)c->kmeans_reinit_step) r->m->vq.initted = 0.0f;
        if ((rc = step_forward(r->st, x, bt->x_dev != NULL, B, 1, VQ_TRAIN, &L)) == 0 &&
            (rc = test_nan(&L, step + 1)) == 0) {
            step_backward(r->st);
            /* A non-finite gradient with a finite loss would poison the weights and surface one step late, so the
             * rollback would skip the wrong batch: check it before the update. */
            if (step_grads_finite(r->st)) {
                step_adamw(r->st, (float)lr);
            } else {
                rc = v3_error("non-finite gradient (loss %g)", L.total);
                snprintf(term, sizeof term, "gradient");
            }
        }
        if (rc && !term[0] && !isfinite(L.total)) loss_nonfinite_terms(&L, term, sizeof term);
        if (rc) {
            if (step_failed(r, o, step + 1, term, total, &step, &last_val)) return -1;
            step0 = step; /* rolled back (the speed and ETA count from here) */
            t0 = now_seconds();
            continue;
        }
        step++;
        if (step % (uint64_t)c->log_every_n_steps == 0 || step == total) {
            fprintf(r->log, "{\"kind\":\"train\",\"step\":%llu,\"epoch\":%d,\"lr\":%.9e,", (unsigned long long)step,
                    epoch, lr);
            log_terms(r->log, &L);
            fprintf(r->log, ",\"perplexity\":%.6f}\n", step_perplexity(r->st));
            tb_terms(r->tb, "train", (int64_t)step, &L);
            tb_scalar(r->tb, "train/lr", (int64_t)step, (float)lr);
            tb_scalar(r->tb, "train/perplexity", (int64_t)step, (float)step_perplexity(r->st));
            fflush(r->log);
            double el = now_seconds() - t0, rate = (step - step0) / (el > 0 ? el : 1e-9);
            /* what matters first (a narrow terminal cuts the line): progress, loss, speed, ETA; then the terms */
            progress_update(step == total, "step %llu/%llu  epoch %d  loss %.5f  %.0f frag/s  ETA %.0fs  (recon %.5f "
                            "content %.4f style %.4f sample %.4f fragment %.4f commit %.5f)", (unsigned long long)step,
                            (unsigned long long)total, epoch, L.total, rate * B * c->n_fragments, (total - step) / rate,
                            L.recon, L.content, L.style, L.sample, L.fragment, L.commit);
        }
    epoch_end:
        if (step % r->spe == 0) { /* epoch end: validate, checkpoint */
            if ((epoch + 1) % c->val_every_n_epochs == 0) {
                double purity;
                LossTerms V;
                fprintf(r->log, "{\"kind\":\"val\",\"step\":%llu,\"epoch\":%d", (unsigned long long)step, epoch);
                char bad[128] = "";
                if (validate(r, &last_val, &purity, &V, bad, sizeof bad)) { /* the weights of this step are bad */
                    char why[1024], vt[140] = "";
                    snprintf(why, sizeof why, "%s", v3_last_error());
                    v3_error("validation: %s", why);
                    if (bad[0]) snprintf(vt, sizeof vt, "val:%s", bad);
                    if (step_failed(r, o, step, vt, total, &step, &last_val)) return -1;
                    step0 = step;
                    t0 = now_seconds();
                    continue;
                }
                last_purity = purity;
                fputc(',', r->log);
                log_terms(r->log, &V);
                fprintf(r->log, ",\"purity\":%.6f}\n", purity);
                tb_terms(r->tb, "val", (int64_t)step, &V);
                tb_scalar(r->tb, "val/purity", (int64_t)step, (float)purity);
                fflush(r->log);
                progress_break();
                v3_log("val  epoch %d  loss %.5f  recon %.5f  codebook purity %.4f\n", epoch, last_val, V.recon,
                       purity);
            }
            if (state_to_host(r)) return -1;
            if ((epoch + 1) % c->save_every_n_epochs == 0) {
                CkptMeta meta = {step, r->seed, (uint32_t)(epoch + 1), last_val};
                if (save_epoch_checkpoint(r, &meta)) return -1;
            }
            if (save_latest(r, step, epoch + 1, last_val)) return -1;
            int ti = c->tb_images_every_n_epochs;
            if (ti > 0 && (epoch + 1) % ti == 0 && train_tb_images(r->tb, r->m, &r->val, r->seed, (int64_t)step))
                v3_log("v3: warning: TensorBoard images: %s\n", v3_last_error());
        }
    }
    progress_break();
    if (step % r->spe != 0 || step == step0) /* mid-epoch stop (or nothing run): make the state resumable */
        if (state_to_host(r) || save_latest(r, step, (int)(step / r->spe), last_val)) return -1;
    if (g_stop) {
        v3_log("v3: interrupted by signal %d at step %llu; checkpoint saved in %s (continue with --resume)\n",
               (int)g_stop, (unsigned long long)step, r->ckdir);
        return 1;
    }
    if (r->ld) {
        double wait, prod;
        uint64_t nb;
        loader_times(r->ld, &wait, &prod, &nb);
        double el = now_seconds() - t0;
        v3_log("v3: data: %llu batches loaded in %.1f s of loader-thread time; the trainer waited %.1f s of %.1f s "
               "(%.1f%%)\n", (unsigned long long)nb, prod, wait, el, el > 0 ? 100 * wait / el : 0);
    }
    v3_log("v3: done at step %llu; checkpoints in %s, log in %s/log.jsonl\n", (unsigned long long)step, r->ckdir,
           r->dir);
    if (!isnan(last_purity) && v3_verbose >= 0) /* this process's last validation on stdout (also with --quiet) */
        printf("final validation (epoch %d): loss %.5f  codebook purity %.4f\n", (int)(step / r->spe) - 1, last_val,
               last_purity);
    return 0;
}

int train_run(const TrainOpts *o) {
    Run r;
    memset(&r, 0, sizeof r);
    Config c;
    g_stop = 0;
    r.resume_val = NAN;
    int had_dir = access(o->out_dir, F_OK) == 0; /* (setup creates it) */
    if (setup(&r, o, &c)) { teardown(&r); return -1; }
    uint64_t step = 0;
    char latest[1300], logp[1100], skipp[1300];
    snprintf(latest, sizeof latest, "%s/latest.v3ck", r.ckdir);
    snprintf(logp, sizeof logp, "%s/log.jsonl", r.dir);
    skip_path(&r, skipp, sizeof skipp);
    int resume = o->resume;
    if (resume && access(latest, F_OK) != 0 && errno == ENOENT) {
        /* killed before its first checkpoint: the run restarts, and its log with it */
        if (had_dir) v3_log("v3: --resume: no checkpoint in %s yet; starting at step 0\n", r.ckdir);
        else v3_log("v3: --resume: %s does not exist; starting a new run there at step 0\n", r.dir);
        resume = 0;
    }
    if (resume) {
        CkptMeta meta;
        if (checkpoint_load(latest, r.m, &meta)) { teardown(&r); return -1; }
        if (meta.seed != r.seed) {
            teardown(&r);
            return v3_error("%s: checkpoint was written with seed %llu but the config gives %llu", latest,
                            (unsigned long long)meta.seed, (unsigned long long)r.seed);
        }
        step = meta.step;
        r.resume_val = meta.val_loss;
        if (load_skips(&r)) { teardown(&r); return -1; }
        truncate_log(logp, step);
        v3_log("v3: resumed from %s at step %llu\n", latest, (unsigned long long)step);
    } else if (access(latest, F_OK) == 0) {
        teardown(&r);
        return v3_error("%s: a run already exists here; pass --resume to continue it or choose another --out", latest);
    } else {
        unlink(skipp); /* rollbacks of a run that is not continued (usually there is none) */
    }
    if (resume) {
        char ap[1300];
        snprintf(ap, sizeof ap, "%s/conv_algos.txt", r.ckdir);
        if (access(ap, F_OK) == 0 && r.be->algos_load(ap)) { teardown(&r); return -1; }
    }
    if (!(r.st = step_create(r.m, r.be, r.B * c.n_fragments, r.math))) {
        teardown(&r);
        return -1;
    }
    r.full_loss = r.m->loss;
    r.log = fopen(logp, resume ? "a" : "w");
    if (!r.log) { teardown(&r); return v3_error("%s: cannot open log: %s", logp, strerror(errno)); }
    char tbdir[1100];
    snprintf(tbdir, sizeof tbdir, "%s/tb", r.dir);
    if (!(r.tb = tb_open(tbdir))) v3_log("v3: warning: %s; continuing without TensorBoard files\n", v3_last_error());
    FILE *cf;
    char cpath[1100];
    snprintf(cpath, sizeof cpath, "%s/config.txt", r.dir);
    if ((cf = fopen(cpath, "w"))) { config_print(&r.m->cfg, cf); fclose(cf); }
    snprintf(cpath, sizeof cpath, "%s/config.yaml", r.dir); /* what `v3 eval --run DIR` rebuilds the model from */
    if (config_save(&r.m->cfg, cpath)) { teardown(&r); return -1; }
    if (platform_write(r.dir)) { teardown(&r); return -1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = train_loop(&r, o, step);
    teardown(&r);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    return rc;
}
