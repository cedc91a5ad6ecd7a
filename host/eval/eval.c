/* `v3 eval`: the measurements of spec v3.md §6 on a trained run, written to DIR/eval/results.json with a short
 * table on stdout, plus figures and (InsNotes) audio. The network runs on the CPU in eval mode. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "cuda_backend.h"
#include "eval_parts.h"
#include "eval_verdict.h"
#include "phonenums.h"
#include "plot.h"
#include "progress.h"

void eval_opts_defaults(EvalOpts *o) {
    memset(o, 0, sizeof *o);
    o->split = "test";
    o->device = "auto";
    o->pr_variant = PR_UPSTREAM;
    o->tsne_points = 2000;
    o->sheet_styles = 8;
    o->gl_iters = 32;
    o->probe_samples = 0;
    o->few_shot = 1;
    o->figures = o->audio = 1;
}

static const char *const PITCH[12] = {"C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"};
static const char *const INSTR[12] = {"Soprano Sax", "Pipe Organ", "Accordion", "Viola", "Trumpet", "Muted Trumpet",
                                      "Oboe", "Clarinet", "Piccolo", "Pan Flute", "Harmonica", "Choir Aahs"};
static const char *const INSTR_OOD[4] = {"Grand Piano", "Tine E-Piano", "Flute", "Tin Whistle"};

const char *eval_content_name(const DataSource *ds, int c, char *buf, size_t n) {
    if (!strcmp(ds->kind, "insnotes") && c >= 0 && c < 12) snprintf(buf, n, "%s", PITCH[c]);
    else snprintf(buf, n, "%d", c);
    return buf;
}

/* What the content and style labels of a data source are, in words (the verdict's rows) */
static void label_kinds(const DataSource *ds, const char **content, const char **style) {
    int pn = !strcmp(ds->kind, "phonenums"), in = !strcmp(ds->kind, "insnotes");
    *content = pn ? "digit" : in ? "pitch" : "content";
    *style = pn ? "colour" : in ? "instrument" : "style";
}

const char *eval_style_name(const DataSource *ds, int s, char *buf, size_t n) {
    if (!strcmp(ds->kind, "insnotes") && s >= 0 && s < (ds->ood ? 4 : 12)) snprintf(buf, n, "%s", (ds->ood ? INSTR_OOD : INSTR)[s]);
    else if (!strcmp(ds->kind, "phonenums") && s >= 0 && s < 8) snprintf(buf, n, "%s", phonenums_colour_name(ds->ood, s));
    else snprintf(buf, n, "style %d", s);
    return buf;
}

static int mkdir_1(const char *p) {
    if (mkdir(p, 0755) && errno != EEXIST) return v3_error("%s: cannot create directory: %s", p, strerror(errno));
    return 0;
}

/* ---- results.json pieces ---- */
static void json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fprintf(f, "null");
}

static void json_pr(FILE *f, const char *name, const PrResult *p, int first) {
    fprintf(f, "%s\n    \"%s\": {\"auc\": ", first ? "" : ",", name);
    json_num(f, p->auc);
    fprintf(f, ", \"f1_min\": ");
    json_num(f, p->f1_min);
    fprintf(f, ", \"f1_max\": ");
    json_num(f, p->f1_max);
    fprintf(f, ", \"queries\": %d, \"k\": [", p->n_queries);
    for (int i = 0; i < p->n_k; i++) fprintf(f, "%s%d", i ? ", " : "", p->k[i]);
    fprintf(f, "], \"precision\": [");
    for (int i = 0; i < p->n_k; i++) { fprintf(f, "%s", i ? ", " : ""); json_num(f, p->P[i]); }
    fprintf(f, "], \"recall\": [");
    for (int i = 0; i < p->n_k; i++) { fprintf(f, "%s", i ? ", " : ""); json_num(f, p->R[i]); }
    fprintf(f, "]}");
}

static void json_ints(FILE *f, const int *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", v[i]);
    fputc(']', f);
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

typedef struct { char *buf; size_t n; } MemText;
static int write_text(FILE *f, void *ctx) {
    MemText *t = ctx;
    return fwrite(t->buf, 1, t->n, f) == t->n ? 0 : -1;
}

/* ---- the codebook section ---- */
typedef struct {
    int K, C, used;
    int64_t *M;
    double purity_authors, purity_weighted, one_to_one;
    int *atom_hung, *atom_major, *rank;
    int S;
    double one_to_one_style, *per_style; /* a Hungarian map per style label (one_to_one_within_styles) */
} Codebook;

static void codebook_measure(Codebook *cb, const Encoded *e, int K, int C, int S) {
    cb->K = K;
    cb->C = C;
    cb->S = S;
    cb->per_style = xmalloc(sizeof(double) * (size_t)(S > 0 ? S : 1));
    cb->one_to_one_style = one_to_one_within_styles(e->atom, e->content, e->style, e->N, K, C, S, cb->per_style);
    cb->M = xcalloc((size_t)K * C, sizeof(int64_t));
    confusion_counts(e->atom, e->content, e->N, K, C, cb->M);
    cb->purity_authors = purity_authors(cb->M, K, C);
    cb->purity_weighted = purity_weighted(cb->M, K, C);
    cb->atom_hung = xmalloc(sizeof(int) * K);
    cb->atom_major = xmalloc(sizeof(int) * K);
    cb->rank = xmalloc(sizeof(int) * K);
    cb->one_to_one = one_to_one_accuracy(cb->M, K, C, cb->atom_hung);
    atom_majority(cb->M, K, C, cb->atom_major);
    zero_shot_perm(cb->atom_major, K, cb->rank);
    cb->used = 0;
    for (int a = 0; a < K; a++) cb->used += cb->atom_major[a] >= 0;
}

static void codebook_free(Codebook *cb) {
    free(cb->M);
    free(cb->per_style);
    free(cb->atom_hung);
    free(cb->atom_major);
    free(cb->rank);
}

/* Zero-shot accuracies of an OOD encoding with the in-distribution atom maps. */
typedef struct { double authors, majority, hungarian; } OodAcc;
static OodAcc ood_acc(const Encoded *e, const Codebook *cb) {
    OodAcc a;
    a.authors = zero_shot_accuracy(e->atom, e->content, e->N, cb->rank);
    a.majority = mapped_accuracy(e->atom, e->content, e->N, cb->atom_major);
    a.hungarian = mapped_accuracy(e->atom, e->content, e->N, cb->atom_hung);
    return a;
}

static void json_ood(FILE *f, const OodAcc *a) {
    fprintf(f, "{\"accuracy_authors\": ");
    json_num(f, a->authors);
    fprintf(f, ", \"accuracy_majority_map\": ");
    json_num(f, a->majority);
    fprintf(f, ", \"accuracy_hungarian_map\": ");
    json_num(f, a->hungarian);
    fputc('}', f);
}

/* ---- linear probes ---- */
typedef struct { int done; double c_from_zc, s_from_zc, s_from_q, c_from_zs, s_from_zs, chance_c, chance_s; int n_train; } Probes;

static double majority_rate(const int32_t *y, int N, int C) {
    int *h = xcalloc((size_t)C + 1, sizeof(int)), best = 0, tot = 0;
    for (int i = 0; i < N; i++)
        if (y[i] >= 0 && y[i] < C) { h[y[i]]++; tot++; }
    for (int c = 0; c < C; c++) if (h[c] > best) best = h[c];
    free(h);
    return tot ? (double)best / tot : NAN;
}

static int run_probes(const Encoded *tr, const Encoded *te, int C, int S, Probes *p) {
    const double l2 = 1e-4;
    const int iters = 300;
    p->n_train = tr->N;
    if (linear_probe(tr->zc, tr->content, tr->N, te->zc, te->content, te->N, tr->dc, C, l2, iters, &p->c_from_zc, NULL) ||
        linear_probe(tr->zc, tr->style, tr->N, te->zc, te->style, te->N, tr->dc, S, l2, iters, &p->s_from_zc, NULL) ||
        linear_probe(tr->q, tr->style, tr->N, te->q, te->style, te->N, tr->dc, S, l2, iters, &p->s_from_q, NULL) ||
        linear_probe(tr->zs, tr->content, tr->N, te->zs, te->content, te->N, tr->ds, C, l2, iters, &p->c_from_zs, NULL) ||
        linear_probe(tr->zs, tr->style, tr->N, te->zs, te->style, te->N, tr->ds, S, l2, iters, &p->s_from_zs, NULL))
        return -1;
    p->chance_c = majority_rate(te->content, te->N, C);
    p->chance_s = majority_rate(te->style, te->N, S);
    p->done = 1;
    return 0;
}

/* OOD dataset directory: the option, else <data_dir>-ood when it exists (NULL: none). */
static const char *find_ood(const EvalOpts *o, const char *data_dir, char *buf, size_t n) {
    if (o->ood_dir) return o->ood_dir;
    size_t L = strlen(data_dir);
    while (L > 1 && data_dir[L - 1] == '/') L--;
    snprintf(buf, n, "%.*s-ood", (int)L, data_dir);
    struct stat st;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? buf : NULL;
}

static void print_row(const char *what, double v, const char *note) {
    if (isfinite(v)) printf("  %-50s %8.4f   %s\n", what, v, note);
    else printf("  %-50s %8s   %s\n", what, "-", note);
}

int eval_run(const EvalOpts *o) {
    double t0 = now_seconds();
    int want_ood_split = !strcmp(o->split, "ood");
    if (strcmp(o->split, "test") && strcmp(o->split, "val") && !want_ood_split)
        return v3_error("--split %s: expected test, val or ood", o->split);
    EvalRun R;
    if (eval_run_open(&R, o->run_dir, o->checkpoint, o->data_dir)) { eval_run_close(&R); return -1; }
    Model *m = R.m;
    int K = m->vq.K;
    v3_log("v3 eval: %s (step %llu, epoch %u, validation loss %.5f)\n", R.ckpt, (unsigned long long)R.meta.step,
           R.meta.epoch, R.meta.val_loss);
    int use_gpu = 0;
    if (strcmp(o->device, "cpu")) {
        char desc[256];
        int ng = cuda_probe(desc, sizeof desc);
        if (!strcmp(o->device, "cuda") && ng <= 0) {
            eval_run_close(&R);
            return v3_error("--device cuda: no usable CUDA GPU (%s)", desc);
        }
        use_gpu = ng > 0;
    }
    char edir[1100], adir[1200], obuf[600];
    if (o->out_dir) snprintf(edir, sizeof edir, "%s", o->out_dir);
    else if (!strcmp(o->split, "test")) snprintf(edir, sizeof edir, "%s/eval", o->run_dir);
    else snprintf(edir, sizeof edir, "%s/eval-%s", o->run_dir, o->split); /* test results stay where they are */
    snprintf(adir, sizeof adir, "%s/audio", edir);
    const char *ood_dir = find_ood(o, R.data_dir, obuf, sizeof obuf);
    if (want_ood_split && !ood_dir) {
        eval_run_close(&R);
        return v3_error("--split ood: no OOD dataset (looked for %s; pass --ood-data DIR)", obuf);
    }
    DataSource id_ds, tr_ds, ood_test, shots;
    memset(&id_ds, 0, sizeof id_ds);
    memset(&tr_ds, 0, sizeof tr_ds);
    memset(&ood_test, 0, sizeof ood_test);
    Encoded E, Eid, Etr, Eood;
    memset(&E, 0, sizeof E);
    memset(&Eid, 0, sizeof Eid);
    memset(&Etr, 0, sizeof Etr);
    memset(&Eood, 0, sizeof Eood);
    Codebook cb, cb_id;
    memset(&cb, 0, sizeof cb);
    memset(&cb_id, 0, sizeof cb_id);
    char *jbuf = NULL, *fbuf = NULL, *abuf = NULL;
    size_t jn = 0, fn = 0, an = 0;
    FILE *J = NULL, *files = NULL, *audio = NULL;
    int rc = -1, ffirst = 1, afirst = 1, n_frag = m->cfg.n_fragments;
    if (mkdir_1(edir)) goto out;
    /* the in-distribution split (test or val; test when evaluating OOD) */
    if (datasource_open(R.data_dir, want_ood_split ? "test" : o->split, n_frag, &id_ds)) goto out;
    if (ood_dir && datasource_open(ood_dir, "test", n_frag, &ood_test)) goto out;
    if (ood_dir && !ood_test.ood) { v3_error("%s: not an OOD dataset (it has no 1_shot/5_shot/10_shot splits)", ood_dir); goto out; }
    if (eval_encode(&R, &id_ds, 0, !want_ood_split, &Eid)) goto out;
    const DataSource *main_ds = want_ood_split ? &ood_test : &id_ds;
    int C = (int)id_ds.n_content, S = (int)main_ds->n_style;
    codebook_measure(&cb_id, &Eid, K, C, (int)id_ds.n_style);
    if (want_ood_split) {
        if (eval_encode(&R, &ood_test, 0, 1, &Eood)) goto out;
        E = Eood;
        codebook_measure(&cb, &E, K, C, (int)ood_test.n_style);
    } else {
        E = Eid;
        cb = cb_id;
    }
    /* retrieval: continuous and quantised content, and style, each by both labels */
    struct { const char *name; const float *emb; int d; const int32_t *lab; } Q[6] = {
        {"content_by_content", E.zc, E.dc, E.content}, {"content_by_style", E.zc, E.dc, E.style},
        {"quantised_by_content", E.q, E.dc, E.content}, {"quantised_by_style", E.q, E.dc, E.style},
        {"style_by_style", E.zs, E.ds, E.style}, {"style_by_content", E.zs, E.ds, E.content}};
    PrResult pr[6];
    for (int i = 0; i < 6; i++) {
        progress_update(1, "retrieval %s (%d fragments)", Q[i].name, E.N);
        if (retrieval_pr(Q[i].emb, E.N, Q[i].d, Q[i].lab, o->pr_variant, &pr[i])) goto out;
    }
    progress_break();
    /* linear probes, fitted on the train split */
    Probes pb;
    memset(&pb, 0, sizeof pb);
    if (o->probe_samples >= 0 && !want_ood_split) {
        if (datasource_open(R.data_dir, "train", n_frag, &tr_ds) || eval_encode(&R, &tr_ds, o->probe_samples, 0, &Etr))
            goto out;
        progress_update(1, "linear probes on %d train fragments", Etr.N);
        if (run_probes(&Etr, &E, C, S, &pb)) goto out;
        progress_break();
    }
    if (!(files = open_memstream(&fbuf, &fn)) || !(audio = open_memstream(&abuf, &an))) {
        v3_error("out of memory");
        goto out;
    }
    /* figures and audio (before few-shot adaptation changes the weights) */
    const char *fig_note = NULL;
    if (o->figures && !plot_available())
        fig_note = "not drawn: this build has no cairo (install the Debian package libcairo2-dev and rebuild)";
    int draw = o->figures && plot_available();
    if (draw && (eval_fig_confusion(edir, main_ds, cb.M, K, C, files, &ffirst) ||
                 (o->tsne_points > 0 &&
                  eval_fig_tsne(edir, main_ds, &E, m->vq.embed, K, o->tsne_points, R.seed, files, &ffirst)) ||
                 eval_fig_curves(o->run_dir, edir, files, &ffirst)))
        goto out;
    int want_audio = o->audio && !strcmp(main_ds->kind, "insnotes");
    if (want_audio && mkdir_1(adir)) goto out;
    if ((draw || want_audio) && E.x &&
        eval_codebook_sheet(&R, main_ds, &E, edir, o->sheet_styles, draw, want_audio, o->gl_iters, use_gpu, files,
                            &ffirst, audio, &afirst))
        goto out;
    /* OOD: zero-shot with the in-distribution atom maps, then few-shot adaptation */
    OodAcc zs_acc = {NAN, NAN, NAN}, fs_acc[3];
    int fs_steps[3] = {0, 0, 0}, fs_done[3] = {0, 0, 0};
    double fs_loss[3] = {0, 0, 0};
    static const char *const SHOTS[3] = {"1_shot", "5_shot", "10_shot"};
    if (ood_dir) {
        if (!want_ood_split && eval_encode(&R, &ood_test, 0, 0, &Eood)) goto out;
        zs_acc = ood_acc(&Eood, &cb_id);
        for (int k = 0; k < 3 && o->few_shot; k++) {
            memset(&shots, 0, sizeof shots);
            if (datasource_open(ood_dir, SHOTS[k], n_frag, &shots)) goto out;
            progress_update(1, "few-shot adaptation on %s (%llu samples)", SHOTS[k], (unsigned long long)shots.n_samples);
            int frc = eval_few_shot_adapt(&R, &shots, 1e-4, 0.01, 1, &fs_steps[k], &fs_loss[k]);
            datasource_close(&shots);
            if (frc) goto out;
            Encoded Ek;
            if (eval_encode(&R, &ood_test, 0, 0, &Ek)) goto out;
            fs_acc[k] = ood_acc(&Ek, &cb_id);
            fs_done[k] = 1;
            encoded_free(&Ek);
        }
        progress_break();
        if (o->few_shot && eval_run_reload(&R)) goto out;
    }
    fclose(files);
    files = NULL;
    fclose(audio);
    audio = NULL;

    /* the verdict (issue 18's criteria) */
    VerdictIn vin = {.K = K, .C = C, .one_to_one = cb.one_to_one,
                     .purity = cb.purity_authors, .style_from_style = pb.done ? pb.s_from_zs : NAN,
                     .content_from_style = pb.done ? pb.c_from_zs : NAN, .chance_style = pb.chance_s,
                     .chance_content = pb.chance_c, .pr_style_by_style = pr[4].auc, .pr_style_by_content = pr[5].auc,
                     .pr_content_by_content = pr[0].auc, .pr_content_by_style = pr[1].auc};
    label_kinds(main_ds, &vin.content, &vin.style);
    VerdictRow vrows[VERDICT_ROWS];
    eval_verdict(&vin, vrows);

    /* results.json */
    if (!(J = open_memstream(&jbuf, &jn))) { v3_error("out of memory"); goto out; }
    fprintf(J, "{\n  \"run\": ");
    json_str(J, o->run_dir);
    fprintf(J, ",\n  \"checkpoint\": ");
    json_str(J, R.ckpt);
    fprintf(J, ",\n  \"step\": %llu, \"epoch\": %u,\n  \"split\": \"%s\", \"dataset\": ", (unsigned long long)R.meta.step,
            R.meta.epoch, o->split);
    json_str(J, main_ds->desc);
    fprintf(J, ",\n  \"fragments\": %d, \"atoms\": %d, \"content_classes\": %d, \"style_classes\": %d,\n", E.N, K, C, S);
    fprintf(J, "  \"retrieval_variant\": \"%s\",\n  \"retrieval\": {",
            o->pr_variant == PR_UPSTREAM ? "upstream (query excluded)" : "paper-era (query included)");
    for (int i = 0; i < 6; i++) json_pr(J, Q[i].name, &pr[i], i == 0);
    fprintf(J, "\n  },\n  \"codebook\": {\"purity_authors\": ");
    json_num(J, cb.purity_authors);
    fprintf(J, ", \"purity_weighted\": ");
    json_num(J, cb.purity_weighted);
    fprintf(J, ", \"one_to_one_accuracy\": ");
    json_num(J, cb.one_to_one);
    fprintf(J, ", \"one_to_one_within_style\": ");
    json_num(J, cb.one_to_one_style);
    fprintf(J, ", \"one_to_one_per_style\": [");
    for (int st = 0; st < cb.S; st++) { fprintf(J, "%s", st ? ", " : ""); json_num(J, cb.per_style[st]); }
    fprintf(J, "]");
    fprintf(J, ", \"atoms_used\": %d,\n    \"atom_class_hungarian\": ", cb.used);
    json_ints(J, cb.atom_hung, K);
    fprintf(J, ", \"atom_class_majority\": ");
    json_ints(J, cb.atom_major, K);
    fprintf(J, ",\n    \"confusion\": [");
    for (int a = 0; a < K; a++) {
        fprintf(J, "%s[", a ? ", " : "");
        for (int c = 0; c < C; c++) fprintf(J, "%s%lld", c ? ", " : "", (long long)cb.M[(size_t)a * C + c]);
        fputc(']', J);
    }
    fprintf(J, "]},\n  \"linear_probe\": ");
    if (pb.done) {
        fprintf(J, "{\"train_fragments\": %d, \"content_from_content\": %.6g, \"style_from_style\": %.6g, "
                   "\"style_from_content\": %.6g, \"style_from_quantised\": %.6g, \"content_from_style\": %.6g, "
                   "\"chance_content\": %.6g, \"chance_style\": %.6g}", pb.n_train, pb.c_from_zc, pb.s_from_zs,
                pb.s_from_zc, pb.s_from_q, pb.c_from_zs,
                pb.chance_c, pb.chance_s);
    } else {
        fprintf(J, "null");
    }
    fprintf(J, ",\n  \"ood\": ");
    if (ood_dir) {
        fprintf(J, "{\"dir\": ");
        json_str(J, ood_dir);
        fprintf(J, ", \"test_fragments\": %d, \"zero_shot\": ", Eood.N);
        json_ood(J, &zs_acc);
        fprintf(J, ",\n    \"few_shot\": {");
        int fsf = 1;
        for (int k = 0; k < 3; k++) {
            if (!fs_done[k]) continue;
            fprintf(J, "%s\"%s\": {\"steps\": %d, \"last_loss\": %.6g, \"accuracy\": ", fsf ? "" : ", ", SHOTS[k],
                    fs_steps[k], fs_loss[k]);
            json_ood(J, &fs_acc[k]);
            fputc('}', J);
            fsf = 0;
        }
        fprintf(J, "}}");
    } else {
        fprintf(J, "null");
    }
    fprintf(J, ",\n  \"verdict\": ");
    eval_verdict_json(J, vrows);
    fprintf(J, ",\n  \"figures\": ");
    if (fig_note) json_str(J, fig_note);
    else fprintf(J, "[%.*s]", (int)fn, fbuf ? fbuf : "");
    fprintf(J, ",\n  \"audio\": [%.*s],\n  \"seconds\": %.1f\n}\n", (int)an, abuf ? abuf : "", now_seconds() - t0);
    fclose(J);
    J = NULL;
    char rpath[1200];
    snprintf(rpath, sizeof rpath, "%s/results.json", edir);
    MemText mt = {jbuf, jn};
    if (write_file_atomic(rpath, write_text, &mt)) goto out;

    /* the table (stdout, also with --quiet; not in the test runner, v3_verbose < 0) */
    if (v3_verbose < 0) { rc = 0; goto out; }
    printf("v3 eval: %s, %s split, %d fragments, K = %d atoms, %d content / %d style classes\n", R.ckpt, o->split,
           E.N, K, C, S);
    char pc[64];
    snprintf(pc, sizeof pc, "1 = every used atom one class");
    print_row("codebook purity (authors: mean over used atoms)", cb.purity_authors, pc);
    print_row("codebook purity (weighted by fragments)", cb.purity_weighted, "");
    print_row("one-to-one accuracy (Hungarian atoms -> classes)", cb.one_to_one, "1 = a bijection");
    print_row("one-to-one within each style (a map per style)", cb.one_to_one_style,
              "if well above one-to-one: an atom order per style");
    print_row("PR-AUC content emb. by content label", pr[0].auc, "high is good");
    print_row("PR-AUC content emb. by style label", pr[1].auc, "low is good");
    print_row("PR-AUC style emb. by style label", pr[4].auc, "high is good");
    print_row("PR-AUC style emb. by content label", pr[5].auc, "low is good");
    if (pb.done) {
        char hc[64], lc[64], hs[64], ls[64];
        snprintf(hc, sizeof hc, "high is good (majority class %.3f)", pb.chance_c);
        snprintf(lc, sizeof lc, "low is good (majority class %.3f)", pb.chance_c);
        snprintf(hs, sizeof hs, "high is good (majority class %.3f)", pb.chance_s);
        snprintf(ls, sizeof ls, "low is good (majority class %.3f)", pb.chance_s);
        print_row("probe: content from content emb.", pb.c_from_zc, hc);
        print_row("probe: style from style emb.", pb.s_from_zs, hs);
        print_row("probe: style from content emb.", pb.s_from_zc, ls);
        print_row("probe: style from quantised content", pb.s_from_q, ls);
        print_row("probe: content from style emb.", pb.c_from_zs, lc);
    }
    if (ood_dir) {
        char zc[64];
        snprintf(zc, sizeof zc, "chance %.3f", 1.0 / C);
        print_row("zero-shot OOD accuracy (authors' rule)", zs_acc.authors, zc);
        for (int k = 0; k < 3; k++)
            if (fs_done[k]) {
                char w[64];
                snprintf(w, sizeof w, "%s OOD accuracy (authors' rule)", SHOTS[k]);
                print_row(w, fs_acc[k].authors, zc);
            }
    }
    eval_verdict_print(stdout, vrows, o->figures && !fig_note ? edir : NULL);
    printf("results: %s%s\n", rpath, fig_note ? "  (figures not drawn: no cairo in this build)" : "");
    rc = 0;
out:
    progress_break();
    if (J) fclose(J);
    if (files) fclose(files);
    if (audio) fclose(audio);
    free(jbuf);
    free(fbuf);
    free(abuf);
    if (want_ood_split) codebook_free(&cb);
    codebook_free(&cb_id);
    encoded_free(&Eid);
    encoded_free(&Etr);
    encoded_free(&Eood);
    if (id_ds.close) datasource_close(&id_ds);
    if (tr_ds.close) datasource_close(&tr_ds);
    if (ood_test.close) datasource_close(&ood_test);
    eval_run_close(&R);
    return rc;
}
