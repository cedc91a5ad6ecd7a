/* The loader thread and its two buffers (include/loader.h). Slot k holds the batches of steps with s % 2 == k;
 * the thread fills a slot only after the trainer has handed it back, so at most one batch is ahead.
 * On CUDA a batch reaches the slot's device buffer in one of two ways: the host batch (get_batch) uploaded on the
 * copy stream, or, for sources with device features (use_gpu and get_raw: InsNotes), the raw audio uploaded and
 * turned into the features in place by cuda_stft_features; the features are then never on the host. */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda_backend.h"
#include "rng.h"

enum { SLOT_FREE, SLOT_READY, SLOT_FAILED };

struct Loader {
    LoaderOpts o;
    Batch slot[2];
    int state[2];
    uint64_t *idx, *aug;
    int *perm;
    int perm_epoch;
    uint64_t first, last, next_consume;
    int have_out;           /* the trainer holds slot (next_consume - 1) % 2 */
    int running, stop;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char err[1024];
    double wait_s, produce_s;
    uint64_t produced;
    CudaCopyStream *cs;
    int dev_feat;           /* features computed on the device (cuda, ds->use_gpu, ds->get_raw) */
    CudaStft *stft;         /* dev_feat: the device feature workspace */
    float *raw;             /* dev_feat: pinned [B * n_frag][raw_elems], the batch's audio (one buffer: each
                             * batch is uploaded before produce returns) */
    int32_t *mask;          /* dev_feat: [B][2] */
};

uint64_t loader_aug_seed(uint64_t seed, int epoch, uint64_t sample) {
    return rng_derive_seed(rng_derive_seed(seed, 0xa06e0000ull + (uint64_t)(int64_t)epoch), sample);
}

static size_t sample_floats(const Loader *l) { return (size_t)datasource_sample_elems(l->o.ds); }

Loader *loader_create(const LoaderOpts *o) {
    Loader *l = xcalloc(1, sizeof *l);
    l->o = *o;
    l->dev_feat = o->cuda && o->ds->use_gpu && o->ds->get_raw && o->ds->raw_elems;
    size_t xs = sizeof(float) * sample_floats(l) * o->B, ls = sizeof(int32_t) * o->ds->n_frag * o->B;
    if (l->dev_feat) {
        size_t rs = sizeof(float) * o->ds->raw_elems * o->ds->n_frag * o->B;
        l->mask = xmalloc(sizeof(int32_t) * 2 * o->B);
        if (!(l->raw = cuda_host_alloc(rs))) { loader_free(l); return NULL; }
    }
    for (int k = 0; k < 2; k++) {
        Batch *b = &l->slot[k];
        if (o->cuda) {
            if (!l->dev_feat && !(b->x = cuda_host_alloc(xs))) { loader_free(l); return NULL; }
            b->x_dev = cuda_alloc(xs);
        } else {
            b->x = falloc(sample_floats(l) * o->B);
        }
        b->content = xmalloc(ls);
        b->style = xmalloc(ls);
    }
    l->idx = xmalloc(sizeof(uint64_t) * o->B);
    l->aug = xmalloc(sizeof(uint64_t) * o->B);
    l->perm = xmalloc(sizeof(int) * (o->ds->n_samples ? o->ds->n_samples : 1));
    l->perm_epoch = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    return l;
}

/* Fill slot b with the batch of `step` (runs in the loader thread, without the lock). */
static int produce(Loader *l, uint64_t step, Batch *b) {
    const LoaderOpts *o = &l->o;
    int epoch = (int)(step / (uint64_t)o->steps_per_epoch), pos = (int)(step % (uint64_t)o->steps_per_epoch);
    uint64_t N = o->ds->n_samples;
    if (l->perm_epoch != epoch) {
        Rng e;
        rng_seed(&e, rng_derive_seed(o->seed, 0x5eed0000ull + (uint64_t)epoch));
        rng_permutation(&e, (int)N, l->perm);
        l->perm_epoch = epoch;
    }
    uint64_t start = (uint64_t)pos * o->B;
    int n = (int)(N - start < (uint64_t)o->B ? N - start : (uint64_t)o->B);
    for (int i = 0; i < n; i++) {
        l->idx[i] = (uint64_t)l->perm[start + i];
        l->aug[i] = loader_aug_seed(o->seed, epoch, l->idx[i]);
    }
    b->step = step;
    b->epoch = epoch;
    b->B = n;
    if (l->dev_feat) { /* audio up once, features made in the slot's device buffer: nothing comes back */
        if (!l->stft && !(l->stft = cuda_stft_create())) return -1;
        if (o->ds->get_raw(o->ds, l->idx, l->aug, n, l->raw, l->mask, b->content, b->style)) return -1;
        return cuda_stft_features(l->stft, l->raw, n, (int)o->ds->n_frag, l->mask, (float *)b->x_dev);
    }
    if (o->ds->get_batch(o->ds, l->idx, l->aug, n, b->x, b->content, b->style)) return -1;
    if (o->cuda && !l->cs && !(l->cs = cuda_copy_stream_create())) return -1;
    if (o->cuda &&
        cuda_copy_stream_h2d(l->cs, (void *)b->x_dev, b->x, sizeof(float) * sample_floats(l) * (size_t)n))
        return -1;
    return 0;
}

static void *thread_main(void *arg) {
    Loader *l = arg;
    int bad = 0;
    if (l->o.cuda && cuda_thread_bind()) bad = 1; /* the copy stream or STFT workspace is made on first use */
    for (uint64_t s = l->first; s < l->last; s++) {
        int k = (int)(s % 2);
        pthread_mutex_lock(&l->mu);
        while (!l->stop && l->state[k] != SLOT_FREE) pthread_cond_wait(&l->cv, &l->mu);
        int stop = l->stop;
        pthread_mutex_unlock(&l->mu);
        if (stop) break;
        double t0 = now_seconds();
        int rc = bad ? -1 : produce(l, s, &l->slot[k]);
        pthread_mutex_lock(&l->mu);
        l->produce_s += now_seconds() - t0;
        l->produced++;
        if (rc) snprintf(l->err, sizeof l->err, "%s", v3_last_error());
        l->state[k] = rc ? SLOT_FAILED : SLOT_READY;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        if (rc) break;
    }
    return NULL;
}

int loader_start(Loader *l, uint64_t first, uint64_t last) {
    if (l->running) return v3_error("loader: already started");
    if (l->o.steps_per_epoch < 1) return v3_error("loader: no batches per epoch");
    l->first = l->next_consume = first;
    l->last = last;
    l->state[0] = l->state[1] = SLOT_FREE;
    if (first >= last) return 0;
    if (pthread_create(&l->th, NULL, thread_main, l)) return v3_error("loader: cannot start the loader thread");
    l->running = 1;
    return 0;
}

const Batch *loader_next(Loader *l) {
    if (l->next_consume >= l->last) { v3_error("loader: no batch after step %llu", (unsigned long long)l->last); return NULL; }
    double t0 = now_seconds();
    pthread_mutex_lock(&l->mu);
    if (l->have_out) { /* hand the previous batch's buffer back */
        l->state[(l->next_consume - 1) % 2] = SLOT_FREE;
        l->have_out = 0;
        pthread_cond_broadcast(&l->cv);
    }
    int k = (int)(l->next_consume % 2);
    while (l->state[k] == SLOT_FREE) pthread_cond_wait(&l->cv, &l->mu);
    int failed = l->state[k] == SLOT_FAILED;
    char err[1024];
    snprintf(err, sizeof err, "%s", l->err);
    pthread_mutex_unlock(&l->mu);
    l->wait_s += now_seconds() - t0;
    if (failed) { v3_error("%s", err); return NULL; }
    l->have_out = 1;
    l->next_consume++;
    return &l->slot[k];
}

const Batch *loader_produce(Loader *l, uint64_t step) {
    if (l->running) { v3_error("loader: loader_produce on a started loader"); return NULL; }
    if (l->o.steps_per_epoch < 1) { v3_error("loader: no batches per epoch"); return NULL; }
    if (l->o.cuda && cuda_thread_bind()) return NULL;
    return produce(l, step, &l->slot[0]) ? NULL : &l->slot[0];
}

void loader_times(const Loader *l, double *wait_s, double *produce_s, uint64_t *batches) {
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    if (wait_s) *wait_s = l->wait_s;
    if (produce_s) *produce_s = l->produce_s;
    if (batches) *batches = l->produced;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
}

void loader_free(Loader *l) {
    if (!l) return;
    if (l->running) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->th, NULL);
    }
    if (l->cs) cuda_copy_stream_destroy(l->cs);
    cuda_stft_destroy(l->stft);
    if (l->raw) cuda_host_free(l->raw);
    free(l->mask);
    for (int k = 0; k < 2; k++) {
        Batch *b = &l->slot[k];
        if (l->o.cuda) {
            if (b->x) cuda_host_free(b->x);
            cuda_free((void *)b->x_dev);
        } else {
            ffree(b->x);
        }
        free(b->content);
        free(b->style);
    }
    free(l->idx);
    free(l->aug);
    free(l->perm);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

int loader_eval_batch(DataSource *ds, uint64_t seed, uint64_t first, int B, float *x, int32_t *content,
                      int32_t *style) {
    uint64_t *idx = xmalloc(sizeof(uint64_t) * (B > 0 ? B : 1)), *aug = xmalloc(sizeof(uint64_t) * (B > 0 ? B : 1));
    for (int i = 0; i < B; i++) {
        idx[i] = first + (uint64_t)i;
        aug[i] = loader_aug_seed(seed, -1, idx[i]);
    }
    int rc = ds->get_batch(ds, idx, aug, B, x, content, style);
    free(idx);
    free(aug);
    return rc;
}
