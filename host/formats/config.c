/* Training configuration: the authors' YAML layout (cfg_v3_*.yaml) read with libyaml's document API.
 * One table (KEYS) drives loading, --set overrides, error messages and printing, so a key added there is
 * accepted everywhere. Loading works on a copy of the Config: a failed load or --set leaves the caller's intact. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common.h"

static const double PI = 3.14159265358979323846;

/* ---- the key table ---- */

typedef enum {
    K_SECTION, /* a mapping of further keys */
    K_POSINT,  /* integer >= 1 */
    K_NNINT,   /* integer >= 0 */
    K_SEED,    /* integer >= 0, or empty (unseeded) */
    K_NUM,     /* any finite number */
    K_BOOL,
    K_STR,
    K_ARCH,
    K_IGNORED  /* accepted, drives only the authors' Python code */
} KeyKind;

typedef struct {
    const char *key; /* full dotted key */
    KeyKind kind;
    size_t off, size;
    const char *why; /* K_IGNORED: reason shown in the notice */
} KeyDef;

#define F(k, kind, field) {k, kind, offsetof(Config, field), sizeof(((Config *)0)->field), NULL}
#define S(k) {k, K_SECTION, 0, 0, NULL}
#define IGN(k, why) {k, K_IGNORED, 0, 0, why}

static const KeyDef KEYS[] = {
    IGN("log_dir", "run files go to the --out directory"),
    IGN("wandb", "no Weights & Biases logging; metrics are written to the run directory"),
    IGN("project", "Weights & Biases project name"),
    F("name", K_STR, name),
    IGN("debug", "Python debugging switch"),
    F("random_seed", K_SEED, random_seed),
    F("dataloader", K_STR, dataloader),
    F("data_dir", K_STR, data_dir),
    F("method", K_STR, method),
    F("device", K_STR, device),
    F("precision", K_STR, precision),
    IGN("num_workers", "data loading runs in-process"),
    F("batch_size", K_POSINT, batch_size),
    F("epochs", K_POSINT, epochs),
    F("val_every_n_epochs", K_POSINT, val_every_n_epochs),
    F("log_every_n_steps", K_POSINT, log_every_n_steps),
    F("save_top_k", K_NNINT, save_top_k),
    F("save_every_n_epochs", K_POSINT, save_every_n_epochs),
    F("tb_images_every_n_epochs", K_NNINT, tb_images_every_n_epochs),
    IGN("load_checkpoint", "use v3 train --resume to continue a run"),
    IGN("active_checkpoint", "use v3 train --resume to continue a run"),
    S("loss_config"),
    S("loss_config.weights"),
    F("loss_config.weights.recon_loss", K_NUM, w_recon),
    F("loss_config.weights.content_loss", K_NUM, w_content),
    F("loss_config.weights.style_loss", K_NUM, w_style),
    F("loss_config.weights.sample_loss", K_NUM, w_sample),
    F("loss_config.weights.fragment_loss", K_NUM, w_fragment),
    F("loss_config.weights.commit_loss", K_NUM, w_commit),
    F("loss_config.relativity", K_NUM, relativity),
    S("loss_config.term_relativity"),
    F("loss_config.term_relativity.content_loss", K_NUM, r_content),
    F("loss_config.term_relativity.style_loss", K_NUM, r_style),
    F("loss_config.term_relativity.sample_loss", K_NUM, r_sample),
    F("loss_config.term_relativity.fragment_loss", K_NUM, r_fragment),
    F("loss_config.supersample_content", K_BOOL, supersample_content),
    F("loss_config.per_sample_hinges", K_BOOL, per_sample_hinges),
    F("loss_config.tie_gradient", K_STR, tie_gradient),
    F("loss_config.content_spread", K_STR, content_spread),
    F("loss_config.hinge", K_STR, hinge),
    F("loss_config.style_from_step", K_NNINT, style_from_step),
    IGN("loss_config.widen_style", "an authors' experimental option not implemented here"),
    S("model_config"),
    F("model_config.arch", K_ARCH, arch),
    F("model_config.n_channels", K_POSINT, n_channels),
    F("model_config.n_fragments", K_POSINT, n_fragments),
    F("model_config.fragment_len", K_POSINT, fragment_len),
    F("model_config.n_feature", K_POSINT, n_feature),
    F("model_config.d_emb_c", K_POSINT, d_emb_c),
    F("model_config.d_emb_s", K_POSINT, d_emb_s),
    F("model_config.n_atoms", K_POSINT, n_atoms),
    F("model_config.in_channels", K_NNINT, in_channels),
    F("model_config.threshold_ema_dead_code", K_NUM, threshold_ema_dead_code),
    F("model_config.vq_ema_decay", K_NUM, vq_ema_decay),
    F("model_config.kmeans_iters", K_NNINT, kmeans_iters),
    F("model_config.kmeans_reinit_step", K_NNINT, kmeans_reinit_step),
    F("model_config.revive_from", K_STR, revive_from),
    S("optimizer_config"),
    F("optimizer_config.optimizer", K_STR, optimizer),
    F("optimizer_config.lr", K_NUM, lr),
    F("optimizer_config.beta1", K_NUM, beta1),
    F("optimizer_config.beta2", K_NUM, beta2),
    F("optimizer_config.eps", K_NUM, eps),
    F("optimizer_config.momentum", K_NUM, momentum),
    F("optimizer_config.weight_decay", K_NUM, weight_decay),
    F("optimizer_config.scheduler", K_STR, scheduler),
    F("optimizer_config.lr_anneal_epochs", K_NUM, lr_anneal_epochs),
    F("optimizer_config.lr_anneal_min_factor", K_NUM, lr_anneal_min_factor),
    F("optimizer_config.lr_decay_factor", K_NUM, lr_decay_factor),
    F("optimizer_config.lr_decay_epochs", K_NUM, lr_decay_epochs),
    F("optimizer_config.lr_decay_min_factor", K_NUM, lr_decay_min_factor),
    F("optimizer_config.warmup_epochs", K_NUM, warmup_epochs),
    F("optimizer_config.warmup_factor", K_NUM, warmup_factor),
};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

static const KeyDef *find_key(const char *dotted) {
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(KEYS[i].key, dotted)) return &KEYS[i];
    return NULL;
}

/* The keys directly under `section` ("" = top level), comma-separated, for "unknown key" messages. */
static void list_keys(const char *section, char *buf, size_t n) {
    size_t pl = strlen(section), used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const char *k = KEYS[i].key;
        if (pl && (strncmp(k, section, pl) || k[pl] != '.')) continue;
        const char *leaf = pl ? k + pl + 1 : k;
        if (strchr(leaf, '.')) continue;
        int w = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", leaf);
        if (w < 0 || (size_t)w >= n - used) break;
        used += (size_t)w;
    }
}

static int unknown_key(const char *where, const char *dotted) {
    char section[128] = "", keys[640];
    const char *dot = strrchr(dotted, '.');
    if (dot && (size_t)(dot - dotted) < sizeof section) {
        memcpy(section, dotted, (size_t)(dot - dotted));
        section[dot - dotted] = 0;
        const KeyDef *s = find_key(section);
        if (!s || s->kind != K_SECTION) section[0] = 0; /* unknown section: list the top level */
    }
    list_keys(section, keys, sizeof keys);
    return v3_error("%s: key '%s': unknown key (expected one of the %s keys: %s)", where, dotted,
                    section[0] ? section : "top-level", keys);
}

/* ---- scalar parsing (YAML 1.1 forms as PyYAML reads them, plus 1e-3 floats) ---- */

static int is_null(const char *s) {
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Copy s without YAML digit-group underscores ("10_000"); 0 if it does not fit. */
static int strip_underscores(const char *s, char *out, size_t n) {
    size_t j = 0;
    for (; *s; s++)
        if (*s != '_') {
            if (j + 1 >= n) return 0;
            out[j++] = *s;
        }
    out[j] = 0;
    return 1;
}

/* A decimal integer, optionally signed; rejects 1.5, 1e3, abc. */
static int parse_int(const char *s, long long *out) {
    char buf[64], *end;
    if (!strip_underscores(s, buf, sizeof buf) || !buf[0]) return 0;
    const char *p = buf + (buf[0] == '+' || buf[0] == '-');
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return 0;
    if (!*p) return 0;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return !errno && !*end;
}

/* A finite number: integers and floats such as 0.1, 1.0e-3, 1e-3. */
static int parse_num(const char *s, double *out) {
    char buf[128], *end;
    if (!strip_underscores(s, buf, sizeof buf) || !buf[0]) return 0;
    for (const char *q = buf; *q; q++) /* no hex floats, inf or nan spellings */
        if (!strchr("0123456789+-.eE", *q)) return 0;
    errno = 0;
    *out = strtod(buf, &end);
    return !*end && isfinite(*out);
}

static int parse_bool(const char *s, int *out) {
    static const char *yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcmp(s, yes[i])) return *out = 1, 1;
        if (!strcmp(s, no[i])) return *out = 0, 1;
    }
    return 0;
}

static const char *expectation(const KeyDef *d) {
    switch (d->kind) {
    case K_SECTION: return "a mapping of keys";
    case K_POSINT: return "a positive integer";
    case K_NNINT: return "a non-negative integer";
    case K_SEED: return "a non-negative integer or an empty value";
    case K_NUM: return "a number";
    case K_BOOL: return "a boolean (true/false)";
    case K_STR: return "a string";
    case K_ARCH: return "one of insnotes|phonenums|sprites|svhn|tiny";
    default: return "a scalar value";
    }
}

static int bad_value(const char *where, const KeyDef *d, const char *val, int quoted) {
    if (quoted) return v3_error("%s: key '%s': expected %s, got the quoted string '%s'", where, d->key,
                                expectation(d), val);
    if (!*val) return v3_error("%s: key '%s': expected %s, got an empty value", where, d->key, expectation(d));
    return v3_error("%s: key '%s': expected %s, got '%s'", where, d->key, expectation(d), val);
}

/* Integer kinds: POSINT, NNINT and SEED (which may also be empty). */
static int set_int(Config *c, const KeyDef *d, const char *where, const char *val, int quoted) {
    long long v;
    /* An empty seed means unseeded; "None" too, the Python spelling the authors use for other empty keys. */
    if (d->kind == K_SEED && !quoted && (is_null(val) || !strcmp(val, "None"))) {
        c->has_seed = 0;
        c->random_seed = 0;
        return 0;
    }
    if (quoted || !parse_int(val, &v) || v < (d->kind == K_POSINT) || (d->kind != K_SEED && v > INT_MAX))
        return bad_value(where, d, val, quoted);
    if (d->kind == K_SEED) {
        c->has_seed = 1;
        c->random_seed = (uint64_t)v;
    } else {
        *(int *)((char *)c + d->off) = (int)v;
    }
    return 0;
}

static int set_str(Config *c, const KeyDef *d, const char *where, const char *val, int quoted) {
    if (!quoted && is_null(val)) val = "";
    if (strlen(val) >= d->size)
        return v3_error("%s: key '%s': expected a string of at most %zu characters, got '%.60s...'", where, d->key,
                        d->size - 1, val);
    memcpy((char *)c + d->off, val, strlen(val) + 1);
    return 0;
}

/* Apply one scalar to the field `d` names. `where` is "file:line" or "--set"; `file` names the notice's source. */
static int apply_scalar(Config *c, const KeyDef *d, const char *where, const char *file, const char *val,
                        int quoted) {
    double x;
    int b;
    ArchKind a;
    switch (d->kind) {
    case K_POSINT:
    case K_NNINT:
    case K_SEED: return set_int(c, d, where, val, quoted);
    case K_NUM:
        if (quoted || !parse_num(val, &x)) return bad_value(where, d, val, quoted);
        *(double *)((char *)c + d->off) = x;
        return 0;
    case K_BOOL:
        if (quoted || !parse_bool(val, &b)) return bad_value(where, d, val, quoted);
        *(int *)((char *)c + d->off) = b;
        return 0;
    case K_STR: return set_str(c, d, where, val, quoted);
    case K_ARCH:
        if (arch_from_name(val, &a)) return bad_value(where, d, val, 0);
        c->arch = a;
        return 0;
    case K_IGNORED:
        v3_log("v3: note: %s: key '%s' is accepted and ignored (%s)\n", file, d->key, d->why);
        return 0;
    default: return bad_value(where, d, val, quoted);
    }
}

/* ---- loading a YAML document ---- */

typedef struct {
    Config *c;
    yaml_document_t *doc;
    const char *file;
    int arch_given; /* model_config.arch appeared in this file */
} Loader;

static const char *node_kind(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar";
}

static int load_map(Loader *L, yaml_node_t *map, const char *prefix);

/* One key's value: a section recurses, anything else must be a scalar of the key's type. */
static int load_value(Loader *L, const KeyDef *d, yaml_node_t *v) {
    char where[600];
    snprintf(where, sizeof where, "%s:%lu", L->file, (unsigned long)v->start_mark.line + 1);
    int scalar = v->type == YAML_SCALAR_NODE;
    const char *text = scalar ? (const char *)v->data.scalar.value : "";
    int quoted = scalar && v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    if (d->kind == K_SECTION) {
        if (v->type == YAML_MAPPING_NODE) return load_map(L, v, d->key);
        if (scalar && !quoted && is_null(text)) return 0; /* an empty section */
        if (scalar) return v3_error("%s: key '%s': expected a mapping of keys, got '%s'", where, d->key, text);
        return v3_error("%s: key '%s': expected a mapping of keys, got %s", where, d->key, node_kind(v));
    }
    if (!scalar)
        return v3_error("%s: key '%s': expected %s, got %s", where, d->key, expectation(d), node_kind(v));
    if (d->kind == K_ARCH) L->arch_given = 1;
    return apply_scalar(L->c, d, where, L->file, text, quoted);
}

/* Is the key of pair i already used by an earlier pair of the same mapping? */
static int duplicate_key(yaml_document_t *doc, yaml_node_pair_t *first, yaml_node_pair_t *p, const char *k) {
    for (yaml_node_pair_t *q = first; q < p; q++) {
        yaml_node_t *kn = yaml_document_get_node(doc, q->key);
        if (kn && kn->type == YAML_SCALAR_NODE && !strcmp((const char *)kn->data.scalar.value, k)) return 1;
    }
    return 0;
}

static int load_map(Loader *L, yaml_node_t *map, const char *prefix) {
    yaml_node_pair_t *first = map->data.mapping.pairs.start, *top = map->data.mapping.pairs.top;
    for (yaml_node_pair_t *p = first; p < top; p++) {
        yaml_node_t *kn = yaml_document_get_node(L->doc, p->key), *vn = yaml_document_get_node(L->doc, p->value);
        unsigned long line = (unsigned long)kn->start_mark.line + 1;
        if (kn->type != YAML_SCALAR_NODE)
            return v3_error("%s:%lu: under '%s': expected a plain key name, got %s", L->file, line,
                            prefix[0] ? prefix : "(top level)", node_kind(kn));
        const char *k = (const char *)kn->data.scalar.value;
        char dotted[256], where[600];
        snprintf(dotted, sizeof dotted, "%s%s%s", prefix, prefix[0] ? "." : "", k);
        snprintf(where, sizeof where, "%s:%lu", L->file, line);
        const KeyDef *d = find_key(dotted);
        if (!d) return unknown_key(where, dotted);
        if (duplicate_key(L->doc, first, p, k))
            return v3_error("%s: key '%s': given twice in the same mapping", where, dotted);
        if (load_value(L, d, vn)) return -1;
    }
    return 0;
}

/* The authors' factory picks the model from the dataloader name by substring. */
static int arch_from_dataloader(const char *dl, ArchKind *out) {
    static const char *subs[] = {"phonenums", "insnotes", "svhn", "sprites", "tiny"};
    static const ArchKind kinds[] = {ARCH_PHONENUMS, ARCH_INSNOTES, ARCH_SVHN, ARCH_SPRITES, ARCH_TINY};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (strstr(dl, subs[i])) return *out = kinds[i], 0;
    return -1;
}

static int resolve_arch(Loader *L) {
    if (L->arch_given || !L->c->dataloader[0]) return 0;
    if (!arch_from_dataloader(L->c->dataloader, &L->c->arch)) return 0;
    return v3_error("%s: key 'dataloader': cannot tell the architecture from '%s' (expected a name containing "
                    "insnotes, phonenums, sprites or svhn, as the authors' factory does); set model_config.arch "
                    "to one of insnotes|phonenums|sprites|svhn|tiny",
                    L->file, L->c->dataloader);
}

static int syntax_error(const char *file, const yaml_parser_t *p) {
    const yaml_mark_t *m = p->problem ? &p->problem_mark : &p->context_mark;
    char ctx[160] = "";
    if (p->context)
        snprintf(ctx, sizeof ctx, " (%s started at line %lu)", p->context, (unsigned long)p->context_mark.line + 1);
    return v3_error("%s:%lu:%lu: YAML syntax error: %s%s", file, (unsigned long)m->line + 1,
                    (unsigned long)m->column + 1, p->problem ? p->problem : "malformed document", ctx);
}

/* Walk the root mapping into L->c and resolve the architecture. */
static int load_document(Loader *L) {
    yaml_node_t *root = yaml_document_get_root_node(L->doc);
    if (!root) return 0; /* an empty file: keep what we have */
    if (root->type != YAML_MAPPING_NODE)
        return v3_error("%s:%lu: expected a mapping of keys at the top level, got %s", L->file,
                        (unsigned long)root->start_mark.line + 1, node_kind(root));
    if (load_map(L, root, "")) return -1;
    return resolve_arch(L);
}

/* Only one YAML document per config file. */
static int check_single_document(const char *file, yaml_parser_t *p) {
    yaml_document_t next;
    if (!yaml_parser_load(p, &next)) return syntax_error(file, p);
    yaml_node_t *root = yaml_document_get_root_node(&next);
    unsigned long line = root ? (unsigned long)root->start_mark.line + 1 : 0;
    yaml_document_delete(&next);
    if (root) return v3_error("%s:%lu: expected a single YAML document, found a second one", file, line);
    return 0;
}

int config_load(const char *path, Config *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return v3_error("%s: cannot open config: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return v3_error("%s: cannot initialise the YAML parser", path);
    }
    yaml_parser_set_input_file(&parser, f);
    Config tmp = *c;
    snprintf(tmp.path, sizeof tmp.path, "%s", path);
    int rc;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = syntax_error(path, &parser);
    } else {
        Loader L = {&tmp, &doc, path, 0};
        rc = load_document(&L);
        yaml_document_delete(&doc);
        if (!rc) rc = check_single_document(path, &parser);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    if (!rc) *c = tmp;
    return rc;
}

/* ---- --set overrides ---- */

/* Well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF): all a YAML file, and so the
 * run's config.yaml that config_save writes, can hold. A file's strings are checked by libyaml itself. */
static int utf8_ok(const char *s) {
    for (const unsigned char *u = (const unsigned char *)s; *u;) {
        unsigned c = *u, n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 4;
        if (n == 4) return 0;
        unsigned cp = n ? c & (0x3f >> n) : c;
        for (unsigned k = 1; k <= n; k++) {
            if ((u[k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (u[k] & 0x3f);
        }
        static const unsigned min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        u += n + 1;
    }
    return 1;
}

int config_set(Config *c, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    char key[256];
    if (!eq || eq == assignment || (size_t)(eq - assignment) >= sizeof key)
        return v3_error("--set: expected KEY=VALUE such as optimizer_config.lr=5e-4, got '%s'", assignment);
    memcpy(key, assignment, (size_t)(eq - assignment));
    key[eq - assignment] = 0;
    const KeyDef *d = find_key(key);
    if (!d) return unknown_key("--set", key);
    if (d->kind == K_SECTION)
        return v3_error("--set: key '%s': expected a single value's key such as '%s.<key>', got a section", key, key);
    const char *val = eq + 1;
    char unq[600];
    size_t n = strlen(val);
    /* A string value may carry the quotes it would have in the file: name="x" -> x. */
    if (d->kind == K_STR && n >= 2 && n < sizeof unq && (val[0] == '"' || val[0] == '\'') && val[n - 1] == val[0]) {
        memcpy(unq, val + 1, n - 2);
        unq[n - 2] = 0;
        val = unq;
    }
    if (d->kind == K_STR && !utf8_ok(val))
        return v3_error("--set: key '%s': expected UTF-8 text (what a YAML config holds), got other bytes", key);
    Config tmp = *c;
    if (apply_scalar(&tmp, d, "--set", "--set", val, 0)) return -1;
    *c = tmp;
    return 0;
}

/* ---- defaults, names ---- */

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "v3");
    snprintf(c->method, sizeof c->method, "V3");
    snprintf(c->device, sizeof c->device, "cuda");
    snprintf(c->precision, sizeof c->precision, "float32");
    c->batch_size = 32;
    c->epochs = 10000;
    c->val_every_n_epochs = 1;
    c->log_every_n_steps = 1;
    c->save_top_k = 3;
    c->save_every_n_epochs = 1;
    c->tb_images_every_n_epochs = 1;
    c->w_recon = c->w_content = c->w_style = c->w_sample = c->w_fragment = 1;
    c->w_commit = 0.1;
    c->relativity = 15;
    snprintf(c->tie_gradient, sizeof c->tie_gradient, "pytorch");
    snprintf(c->content_spread, sizeof c->content_spread, "means");
    snprintf(c->revive_from, sizeof c->revive_from, "batch");
    snprintf(c->hinge, sizeof c->hinge, "linear");
    c->arch = ARCH_PHONENUMS;
    c->n_channels = 256;
    c->n_fragments = 10;
    c->fragment_len = 32;
    c->n_feature = 48;
    c->d_emb_c = c->d_emb_s = 512;
    c->n_atoms = 10;
    c->threshold_ema_dead_code = 16;
    c->vq_ema_decay = 0.98;
    c->kmeans_iters = 10;
    snprintf(c->optimizer, sizeof c->optimizer, "AdamW");
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->momentum = 0.9;
    c->weight_decay = 0.1;
    snprintf(c->scheduler, sizeof c->scheduler, "exponential_decay");
    c->lr_anneal_epochs = 100;
    c->lr_anneal_min_factor = 0.01;
    c->lr_decay_factor = 0.98;
    c->lr_decay_epochs = 20;
    c->lr_decay_min_factor = 0.02;
    c->warmup_epochs = 0;
    c->warmup_factor = 0.1;
}

static const char *ARCH_NAMES[ARCH_COUNT] = {"insnotes", "phonenums", "sprites", "svhn", "tiny"};

const char *arch_name(ArchKind a) { return (unsigned)a < ARCH_COUNT ? ARCH_NAMES[a] : "unknown"; }

int arch_from_name(const char *s, ArchKind *out) {
    for (int i = 0; i < ARCH_COUNT; i++)
        if (s && !strcmp(s, ARCH_NAMES[i])) return *out = (ArchKind)i, 0;
    return -1;
}

/* ---- validation ---- */

static int verr(const Config *c, const char *key, const char *msg, double got) {
    return v3_error("%s: key '%s': expected %s, got %.10g", c->path[0] ? c->path : "(defaults)", key, msg, got);
}

static int verr_s(const Config *c, const char *key, const char *msg, const char *got) {
    return v3_error("%s: key '%s': expected %s, got '%s'", c->path[0] ? c->path : "(defaults)", key, msg, got);
}

#define XS_(x) #x
#define XS(x) XS_(x)
#define NEED(cond, key, msg, got) \
    do {                          \
        if (!(cond)) return verr(c, key, msg, (double)(got)); \
    } while (0)

static int validate_strings(const Config *c) {
    if (strcmp(c->method, "V3")) return verr_s(c, "method", "'V3' (the only method implemented)", c->method);
    if (strcmp(c->device, "cuda") && strcmp(c->device, "cpu"))
        return verr_s(c, "device", "'cuda' or 'cpu'", c->device);
    if (strcmp(c->precision, "float32"))
        return verr_s(c, "precision", "'float32' (float16 and bfloat16 are not supported)", c->precision);
    if (strcmp(c->optimizer, "AdamW"))
        return verr_s(c, "optimizer_config.optimizer", "'AdamW' (SGD is not supported)", c->optimizer);
    if (strcmp(c->scheduler, "exponential_decay") && strcmp(c->scheduler, "cosine_annealing"))
        return verr_s(c, "optimizer_config.scheduler", "'exponential_decay' or 'cosine_annealing'", c->scheduler);
    if (strcmp(c->tie_gradient, "pytorch") && strcmp(c->tie_gradient, "zero"))
        return verr_s(c, "loss_config.tie_gradient", "'pytorch' or 'zero'", c->tie_gradient);
    if (strcmp(c->content_spread, "means") && strcmp(c->content_spread, "energy"))
        return verr_s(c, "loss_config.content_spread", "'means' or 'energy'", c->content_spread);
    if (!strcmp(c->content_spread, "energy") && c->supersample_content)
        return verr_s(c, "loss_config.content_spread",
                      "'means' with loss_config.supersample_content (energy is defined per sample, not per supersample)",
                      c->content_spread);
    if (strcmp(c->hinge, "linear") && strcmp(c->hinge, "log"))
        return verr_s(c, "loss_config.hinge", "'linear' or 'log'", c->hinge);
    return 0;
}

static int validate_run(const Config *c) {
    /* The sample-level statistics (variance across the batch) need at least two samples. */
    NEED(c->batch_size >= 2, "batch_size", "an integer >= 2 (sample-level statistics need 2 samples)",
         c->batch_size);
    NEED(c->batch_size <= V3_MAX_BATCH, "batch_size", "at most " XS(V3_MAX_BATCH) " (V3_MAX_BATCH)", c->batch_size);
    NEED(c->epochs >= 1, "epochs", "a positive integer", c->epochs);
    NEED(c->epochs <= V3_MAX_EPOCHS, "epochs", "at most " XS(V3_MAX_EPOCHS) " (V3_MAX_EPOCHS)", c->epochs);
    NEED(c->val_every_n_epochs >= 1, "val_every_n_epochs", "a positive integer", c->val_every_n_epochs);
    NEED(c->log_every_n_steps >= 1, "log_every_n_steps", "a positive integer", c->log_every_n_steps);
    NEED(c->save_every_n_epochs >= 1, "save_every_n_epochs", "a positive integer", c->save_every_n_epochs);
    NEED(c->save_top_k >= 0, "save_top_k", "a non-negative integer", c->save_top_k);
    return 0;
}

static int validate_loss(const Config *c) {
    const char *wk[] = {"recon_loss", "content_loss", "style_loss", "sample_loss", "fragment_loss", "commit_loss"};
    const double wv[] = {c->w_recon, c->w_content, c->w_style, c->w_sample, c->w_fragment, c->w_commit};
    char key[64];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "loss_config.weights.%s", wk[i]);
        NEED(wv[i] >= 0 && isfinite(wv[i]), key, "a finite weight >= 0", wv[i]);
    }
    NEED(c->relativity > 0 && isfinite(c->relativity), "loss_config.relativity", "a number > 0", c->relativity);
    const double rv[] = {c->r_content, c->r_style, c->r_sample, c->r_fragment};
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "loss_config.term_relativity.%s", wk[i + 1]);
        NEED(rv[i] >= 0 && isfinite(rv[i]), key, "a number > 0, or 0 for loss_config.relativity", rv[i]);
    }
    /* the log hinge divides by ln r */
    if (!strcmp(c->hinge, "log")) {
        NEED(c->relativity > 1, "loss_config.relativity", "a number > 1 with loss_config.hinge: log", c->relativity);
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "loss_config.term_relativity.%s", wk[i + 1]);
            NEED(rv[i] == 0 || rv[i] > 1, key, "a number > 1 (or 0) with loss_config.hinge: log", rv[i]);
        }
    }
    return 0;
}

static int validate_model(const Config *c) {
    if ((unsigned)c->arch >= ARCH_COUNT) return verr(c, "model_config.arch", "a known architecture", c->arch);
    /* The encoders narrow n_channels by 16 (insnotes) or 4 (the image architectures) in their first stage. */
    int div = c->arch == ARCH_INSNOTES ? 16 : 4;
    char msg[96];
    snprintf(msg, sizeof msg, "a positive multiple of %d for the %s architecture", div, arch_name(c->arch));
    NEED(c->n_channels >= div && c->n_channels % div == 0, "model_config.n_channels", msg, c->n_channels);
    NEED(c->n_channels <= V3_MAX_WIDTH, "model_config.n_channels", "at most " XS(V3_MAX_WIDTH) " (V3_MAX_WIDTH)",
         c->n_channels);
    NEED(c->n_fragments >= 2, "model_config.n_fragments", "an integer >= 2", c->n_fragments);
    NEED(c->n_fragments <= V3_MAX_FRAGMENTS, "model_config.n_fragments",
         "at most " XS(V3_MAX_FRAGMENTS) " (V3_MAX_FRAGMENTS)", c->n_fragments);
    NEED(c->fragment_len <= V3_MAX_WIDTH, "model_config.fragment_len", "at most " XS(V3_MAX_WIDTH) " (V3_MAX_WIDTH)",
         c->fragment_len);
    NEED(c->n_feature <= V3_MAX_WIDTH, "model_config.n_feature", "at most " XS(V3_MAX_WIDTH) " (V3_MAX_WIDTH)",
         c->n_feature);
    NEED(c->d_emb_c <= V3_MAX_WIDTH, "model_config.d_emb_c", "at most " XS(V3_MAX_WIDTH) " (V3_MAX_WIDTH)",
         c->d_emb_c);
    NEED(c->d_emb_s <= V3_MAX_WIDTH, "model_config.d_emb_s", "at most " XS(V3_MAX_WIDTH) " (V3_MAX_WIDTH)",
         c->d_emb_s);
    NEED(c->n_atoms <= V3_MAX_ATOMS, "model_config.n_atoms", "at most " XS(V3_MAX_ATOMS) " (V3_MAX_ATOMS)",
         c->n_atoms);
    NEED(c->fragment_len >= 1, "model_config.fragment_len", "a positive integer", c->fragment_len);
    NEED(c->n_feature >= 1, "model_config.n_feature", "a positive integer", c->n_feature);
    NEED(c->d_emb_c >= 1, "model_config.d_emb_c", "a positive integer", c->d_emb_c);
    NEED(c->d_emb_s >= 1, "model_config.d_emb_s", "a positive integer", c->d_emb_s);
    NEED(c->n_atoms >= 1, "model_config.n_atoms", "a positive integer", c->n_atoms);
    NEED(c->in_channels >= 0, "model_config.in_channels", "a non-negative integer (0 = from arch)", c->in_channels);
    NEED(c->kmeans_iters >= 0, "model_config.kmeans_iters", "a non-negative integer", c->kmeans_iters);
    NEED(c->threshold_ema_dead_code >= 0, "model_config.threshold_ema_dead_code", "a number >= 0",
         c->threshold_ema_dead_code);
    if (strcmp(c->revive_from, "batch") && strcmp(c->revive_from, "largest"))
        return verr_s(c, "model_config.revive_from", "'batch' or 'largest'", c->revive_from);
    NEED(c->vq_ema_decay >= 0 && c->vq_ema_decay < 1, "model_config.vq_ema_decay", "a number in [0, 1)",
         c->vq_ema_decay);
    return 0;
}

static int validate_optimizer(const Config *c) {
    NEED(c->lr > 0 && isfinite(c->lr), "optimizer_config.lr", "a number > 0", c->lr);
    NEED(c->beta1 >= 0 && c->beta1 < 1, "optimizer_config.beta1", "a number in [0, 1)", c->beta1);
    NEED(c->beta2 >= 0 && c->beta2 < 1, "optimizer_config.beta2", "a number in [0, 1)", c->beta2);
    NEED(c->eps > 0, "optimizer_config.eps", "a number > 0", c->eps);
    NEED(c->weight_decay >= 0, "optimizer_config.weight_decay", "a number >= 0", c->weight_decay);
    NEED(c->warmup_epochs >= 0, "optimizer_config.warmup_epochs", "a number >= 0", c->warmup_epochs);
    NEED(c->warmup_factor > 0, "optimizer_config.warmup_factor", "a number > 0", c->warmup_factor);
    /* Only the active scheduler's settings matter. */
    if (!strcmp(c->scheduler, "cosine_annealing")) {
        NEED(c->lr_anneal_epochs > 0, "optimizer_config.lr_anneal_epochs", "a number > 0", c->lr_anneal_epochs);
        NEED(c->lr_anneal_min_factor >= 0 && c->lr_anneal_min_factor <= 1, "optimizer_config.lr_anneal_min_factor",
             "a number in [0, 1]", c->lr_anneal_min_factor);
    } else {
        NEED(c->lr_decay_epochs > 0, "optimizer_config.lr_decay_epochs", "a number > 0", c->lr_decay_epochs);
        NEED(c->lr_decay_factor > 0, "optimizer_config.lr_decay_factor", "a number > 0", c->lr_decay_factor);
        NEED(c->lr_decay_min_factor >= 0, "optimizer_config.lr_decay_min_factor", "a number >= 0",
             c->lr_decay_min_factor);
    }
    return 0;
}

int config_validate(const Config *c) {
    if (validate_strings(c) || validate_run(c) || validate_loss(c) || validate_model(c) || validate_optimizer(c))
        return -1;
    return 0;
}

/* ---- learning-rate schedule (the authors' LambdaLR formulas) ---- */

double config_lr_factor(const Config *c, int epoch) {
    double e = epoch;
    if (e < c->warmup_epochs) return c->warmup_factor;
    double t = e - c->warmup_epochs;
    if (!strcmp(c->scheduler, "cosine_annealing")) {
        double m = c->lr_anneal_min_factor;
        return m + 0.5 * (1 + cos(PI * t / c->lr_anneal_epochs)) * (1 - m);
    }
    return fmax(c->lr_decay_min_factor, pow(c->lr_decay_factor, t / c->lr_decay_epochs));
}

/* ---- printing ---- */

/* The value of one table entry as text. */
static void format_value(const Config *c, const KeyDef *d, char *buf, size_t n) {
    const char *p = (const char *)c + d->off;
    switch (d->kind) {
    case K_POSINT:
    case K_NNINT: snprintf(buf, n, "%d", *(const int *)p); break;
    case K_SEED:
        if (c->has_seed) snprintf(buf, n, "%llu", (unsigned long long)c->random_seed);
        else snprintf(buf, n, "(empty)");
        break;
    case K_NUM: snprintf(buf, n, "%.10g", *(const double *)p); break;
    case K_BOOL: snprintf(buf, n, "%s", *(const int *)p ? "true" : "false"); break;
    case K_STR: snprintf(buf, n, "%s", p); break;
    case K_ARCH: snprintf(buf, n, "%s", arch_name(c->arch)); break;
    default: buf[0] = 0;
    }
    if (d->kind == K_NNINT && !strcmp(d->key, "model_config.in_channels") && c->in_channels == 0)
        snprintf(buf, n, "0 (from arch: %d)", c->arch == ARCH_INSNOTES ? 1 : 3);
}

/* A markdown cell: '|' would end the cell early. */
static void print_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputc('\\', f);
        fputc(*s, f);
    }
}

void config_print(const Config *c, FILE *f) {
    char buf[600];
    fprintf(f, "| key | value |\n|---|---|\n| (file) | ");
    print_cell(f, c->path[0] ? c->path : "(defaults)");
    fprintf(f, " |\n");
    for (size_t i = 0; i < NKEYS; i++) {
        if (KEYS[i].kind == K_SECTION || KEYS[i].kind == K_IGNORED) continue;
        format_value(c, &KEYS[i], buf, sizeof buf);
        fprintf(f, "| %s | ", KEYS[i].key);
        print_cell(f, buf);
        fprintf(f, " |\n");
    }
}

/* The effective configuration as a YAML file that config_load reads back to the same Config (a run directory's
 * config.yaml, which `v3 eval` and `v3 transfer` rebuild the model from). Sections nest by the dotted key names;
 * strings are double-quoted with escapes; numbers use %.17g so they round-trip exactly. */
static void yaml_string(FILE *f, const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    /* Escaped besides '"' and '\\', as YAML would otherwise fold line breaks into spaces or refuse the file: C0
     * controls (tab, newline, ...), DEL, C1 controls (U+0080-U+009F, NEL among them), U+2028/U+2029, U+FFFE/U+FFFF. */
    for (; *u; u++) {
        if (*u == '"' || *u == '\\') fprintf(f, "\\%c", *u);
        else if (*u < 0x20 || *u == 0x7f) fprintf(f, "\\x%02x", *u);
        else if (u[0] == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f) fprintf(f, "\\x%02x", *++u);
        else if (u[0] == 0xe2 && u[1] == 0x80 && (u[2] == 0xa8 || u[2] == 0xa9)) {
            fprintf(f, "\\u20%02x", u[2] - 0x80);
            u += 2;
        } else if (u[0] == 0xef && u[1] == 0xbf && u[2] >= 0xbe) {
            fprintf(f, "\\uff%02x", u[2] - 0xbf + 0xff);
            u += 2;
        } else {
            fputc(*u, f);
        }
    }
    fputc('"', f);
}

static int write_config_yaml(FILE *f, void *ctx) {
    const Config *c = ctx;
    fprintf(f, "# effective configuration of this run (written by v3; loadable with --config)\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const KeyDef *d = &KEYS[i];
        if (d->kind == K_IGNORED) continue;
        int depth = 0;
        const char *leaf = d->key;
        for (const char *q = d->key; *q; q++)
            if (*q == '.') { depth++; leaf = q + 1; }
        fprintf(f, "%*s%s:", 2 * depth, "", leaf);
        const char *p = (const char *)c + d->off;
        switch (d->kind) {
        case K_SECTION: break;
        case K_POSINT:
        case K_NNINT: fprintf(f, " %d", *(const int *)p); break;
        case K_SEED: if (c->has_seed) fprintf(f, " %llu", (unsigned long long)c->random_seed); break;
        case K_NUM: fprintf(f, " %.17g", *(const double *)p); break;
        case K_BOOL: fprintf(f, " %s", *(const int *)p ? "true" : "false"); break;
        case K_STR: fputc(' ', f); yaml_string(f, p); break;
        case K_ARCH: fprintf(f, " %s", arch_name(c->arch)); break;
        default: break;
        }
        fputc('\n', f);
    }
    return ferror(f) ? -1 : 0;
}

int config_save(const Config *c, const char *path) {
    return write_file_atomic(path, write_config_yaml, (void *)c);
}
