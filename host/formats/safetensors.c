/* safetensors reader and writer (include/safetensors.h). The header is parsed by a small strict JSON parser (objects,
 * arrays, strings with every escape, integers: all a safetensors header holds) into a tree, then checked tensor by
 * tensor; every error is one line naming the file, the tensor and what was expected. The reader and writer live in
 * one file so the two can be copied together (tools that need only this format). */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data are little-endian; this file copies them as host-order bytes"
#endif

#define ST_HEADER_MAX 100000000ull /* the format's own limit (the reference implementation rejects more) */
#define JSON_MAX_DEPTH 16

static const struct { const char *name; size_t size; } g_dtypes[] = {
    [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4}, [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof g_dtypes / sizeof g_dtypes[0]))
#define DTYPE_LIST "F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL"

const char *st_dtype_name(StDtype d) { return (unsigned)d < (unsigned)N_DTYPES ? g_dtypes[d].name : "?"; }
size_t st_dtype_size(StDtype d) { return (unsigned)d < (unsigned)N_DTYPES ? g_dtypes[d].size : 0; }

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* "[2, 3]" into buf (shapes in messages). */
static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* ---------------------------------------------------------------- JSON */
typedef enum { J_OBJ, J_ARR, J_STR, J_INT } JType;
typedef struct JVal {
    JType type;
    size_t pos;           /* byte offset in the file, for messages */
    char *str;            /* J_STR (UTF-8, no NUL inside) */
    int64_t i;            /* J_INT */
    int n;                /* J_OBJ / J_ARR: members */
    char **keys;          /* J_OBJ */
    struct JVal *items;   /* J_OBJ values / J_ARR elements */
} JVal;

typedef struct {
    const char *s;
    size_t n, p, base;    /* text, length, cursor, file offset of s[0] */
    const char *path;
} JP;

static void jfree(JVal *v) {
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        jfree(&v->items[i]);
    }
    free(v->keys);
    free(v->items);
    memset(v, 0, sizeof *v);
}

static int jerr(const JP *j, const char *expected) {
    return v3_error("%s: safetensors header: bad JSON at byte %zu: expected %s", j->path, j->base + j->p, expected);
}

static void jws(JP *j) {
    while (j->p < j->n && (j->s[j->p] == ' ' || j->s[j->p] == '\t' || j->s[j->p] == '\n' || j->s[j->p] == '\r'))
        j->p++;
}

static int hex4(JP *j, unsigned *out) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++, j->p++) {
        if (j->p >= j->n) return jerr(j, "4 hex digits after \\u");
        char c = j->s[j->p];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return jerr(j, "4 hex digits after \\u");
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

static void put_utf8(char *o, size_t *k, unsigned c) {
    if (c < 0x80) o[(*k)++] = (char)c;
    else if (c < 0x800) { o[(*k)++] = (char)(0xC0 | c >> 6); o[(*k)++] = (char)(0x80 | (c & 0x3F)); }
    else if (c < 0x10000) {
        o[(*k)++] = (char)(0xE0 | c >> 12); o[(*k)++] = (char)(0x80 | (c >> 6 & 0x3F)); o[(*k)++] = (char)(0x80 | (c & 0x3F));
    } else {
        o[(*k)++] = (char)(0xF0 | c >> 18); o[(*k)++] = (char)(0x80 | (c >> 12 & 0x3F));
        o[(*k)++] = (char)(0x80 | (c >> 6 & 0x3F)); o[(*k)++] = (char)(0x80 | (c & 0x3F));
    }
}

/* A string at the cursor (which is on '"'); the decoded text is never longer than the escaped one. */
static int jstring(JP *j, char **out) {
    j->p++;
    size_t start = j->p, k = 0;
    while (j->p < j->n && j->s[j->p] != '"') j->p += j->s[j->p] == '\\' ? 2 : 1;
    if (j->p >= j->n) { j->p = j->n; return jerr(j, "a closing '\"'"); }
    char *o = xmalloc(j->p - start + 1);
    size_t end = j->p;
    j->p = start;
    while (j->p < end) {
        unsigned char c = (unsigned char)j->s[j->p];
        if (c < 0x20) { free(o); return jerr(j, "no raw control character in a string (escape it)"); }
        if (c != '\\') { o[k++] = (char)c; j->p++; continue; }
        char e = j->s[++j->p];
        j->p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) { o[k++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]; continue; }
        if (e != 'u') { j->p--; free(o); return jerr(j, "an escape \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX"); }
        unsigned u;
        if (hex4(j, &u)) { free(o); return -1; }
        if (u >= 0xDC00 && u <= 0xDFFF) { free(o); return jerr(j, "a high surrogate before a low one"); }
        if (u >= 0xD800 && u <= 0xDBFF) { /* a pair: \uD8xx\uDCxx */
            unsigned lo;
            if (j->p + 2 > end || j->s[j->p] != '\\' || j->s[j->p + 1] != 'u') {
                free(o);
                return jerr(j, "\\u followed by a low surrogate after a high surrogate");
            }
            j->p += 2;
            if (hex4(j, &lo)) { free(o); return -1; }
            if (lo < 0xDC00 || lo > 0xDFFF) { free(o); return jerr(j, "a low surrogate (\\uDC00-\\uDFFF)"); }
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (u == 0) { free(o); return jerr(j, "no \\u0000 (names are C strings)"); }
        put_utf8(o, &k, u);
    }
    o[k] = 0;
    j->p = end + 1;
    *out = o;
    return 0;
}

/* An integer (no fraction or exponent: a header holds none), with overflow detection. */
static int jint(JP *j, int64_t *out) {
    int neg = j->s[j->p] == '-';
    if (neg) j->p++;
    if (j->p >= j->n || j->s[j->p] < '0' || j->s[j->p] > '9') return jerr(j, "a digit");
    if (j->s[j->p] == '0' && j->p + 1 < j->n && j->s[j->p + 1] >= '0' && j->s[j->p + 1] <= '9')
        return jerr(j, "no leading zero in an integer");
    uint64_t v = 0;
    while (j->p < j->n && j->s[j->p] >= '0' && j->s[j->p] <= '9') {
        unsigned d = (unsigned)(j->s[j->p] - '0');
        if (v > (UINT64_C(9223372036854775807) - d) / 10) return jerr(j, "an integer within 64 bits");
        v = v * 10 + d;
        j->p++;
    }
    if (j->p < j->n && (j->s[j->p] == '.' || j->s[j->p] == 'e' || j->s[j->p] == 'E'))
        return jerr(j, "an integer (no fraction or exponent)");
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static int jvalue(JP *j, JVal *v, int depth);

/* Object or array members up to the closing bracket. */
static int jmembers(JP *j, JVal *v, int depth, int obj) {
    char close = obj ? '}' : ']';
    j->p++;
    jws(j);
    if (j->p < j->n && j->s[j->p] == close) { j->p++; return 0; }
    for (;;) {
        v->items = xrealloc(v->items, sizeof(JVal) * (size_t)(v->n + 1));
        memset(&v->items[v->n], 0, sizeof(JVal));
        if (obj) {
            v->keys = xrealloc(v->keys, sizeof(char *) * (size_t)(v->n + 1));
            v->keys[v->n] = NULL;
        }
        v->n++;
        if (obj) {
            jws(j);
            if (j->p >= j->n || j->s[j->p] != '"') return jerr(j, "a '\"' starting a key");
            if (jstring(j, &v->keys[v->n - 1])) return -1;
            jws(j);
            if (j->p >= j->n || j->s[j->p] != ':') return jerr(j, "':' after a key");
            j->p++;
        }
        jws(j);
        if (jvalue(j, &v->items[v->n - 1], depth + 1)) return -1;
        jws(j);
        if (j->p < j->n && j->s[j->p] == ',') { j->p++; continue; }
        if (j->p < j->n && j->s[j->p] == close) { j->p++; return 0; }
        return jerr(j, obj ? "',' or '}'" : "',' or ']'");
    }
}

static int jvalue(JP *j, JVal *v, int depth) {
    if (depth > JSON_MAX_DEPTH) return jerr(j, "nesting of at most 16 levels");
    if (j->p >= j->n) return jerr(j, "a value");
    v->pos = j->base + j->p;
    char c = j->s[j->p];
    if (c == '{') { v->type = J_OBJ; return jmembers(j, v, depth, 1); }
    if (c == '[') { v->type = J_ARR; return jmembers(j, v, depth, 0); }
    if (c == '"') { v->type = J_STR; return jstring(j, &v->str); }
    if (c == '-' || (c >= '0' && c <= '9')) { v->type = J_INT; return jint(j, &v->i); }
    return jerr(j, "an object, array, string or integer (the values of a safetensors header)");
}

/* Well-formed UTF-8 (what the format requires of the header): no overlongs, surrogates or code points > 0x10FFFF. */
static size_t utf8_bad(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + (size_t)len > n) return i;
        unsigned cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const unsigned minv[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < minv[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += (size_t)len;
    }
    return (size_t)-1;
}

/* ---------------------------------------------------------------- reader */
static void st_clear(StFile *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    for (int i = 0; i < f->n_meta; i++) { free(f->meta_key[i]); free(f->meta_val[i]); }
    free(f->t);
    free(f->meta_key);
    free(f->meta_val);
    free(f->file);
    free(f->path);
    memset(f, 0, sizeof *f);
}

void st_free(StFile *f) {
    if (f) st_clear(f);
}

static int parse_meta(StFile *f, const JVal *v) {
    if (v->type != J_OBJ)
        return v3_error("%s: __metadata__ at byte %zu is not an object; expected {\"key\": \"value\", ...}", f->path, v->pos);
    f->meta_key = xcalloc((size_t)v->n + 1, sizeof(char *));
    f->meta_val = xcalloc((size_t)v->n + 1, sizeof(char *));
    for (int i = 0; i < v->n; i++) {
        for (int k = 0; k < i; k++)
            if (!strcmp(v->keys[k], v->keys[i]))
                return v3_error("%s: __metadata__ key '%s' appears twice; expected unique keys", f->path, v->keys[i]);
        if (v->items[i].type != J_STR)
            return v3_error("%s: __metadata__ value of '%s' is not a string; expected a string", f->path, v->keys[i]);
        f->meta_key[f->n_meta] = strdup(v->keys[i]);
        f->meta_val[f->n_meta] = strdup(v->items[i].str);
        if (!f->meta_key[f->n_meta] || !f->meta_val[f->n_meta]) V3_FATAL("out of memory");
        f->n_meta++;
    }
    return 0;
}

/* One tensor entry: its three fields, shape x dtype size == end - begin, end within the data. */
static int parse_tensor(StFile *f, const char *name, const JVal *v, StTensor *t) {
    const char *form = "expected {\"dtype\": \"F32\", \"shape\": [...], \"data_offsets\": [begin, end]}";
    if (v->type != J_OBJ) return v3_error("%s: tensor '%s' is not an object; %s", f->path, name, form);
    const JVal *dt = NULL, *sh = NULL, *off = NULL;
    for (int i = 0; i < v->n; i++) {
        const JVal **slot = !strcmp(v->keys[i], "dtype") ? &dt : !strcmp(v->keys[i], "shape") ? &sh
                          : !strcmp(v->keys[i], "data_offsets") ? &off : NULL;
        if (!slot) return v3_error("%s: tensor '%s' has an unknown field '%s'; %s", f->path, name, v->keys[i], form);
        if (*slot) return v3_error("%s: tensor '%s' has field '%s' twice; %s", f->path, name, v->keys[i], form);
        *slot = &v->items[i];
    }
    if (!dt) return v3_error("%s: tensor '%s' is missing \"dtype\"; %s", f->path, name, form);
    if (!sh) return v3_error("%s: tensor '%s' is missing \"shape\"; %s", f->path, name, form);
    if (!off) return v3_error("%s: tensor '%s' is missing \"data_offsets\"; %s", f->path, name, form);
    int d = -1;
    for (int k = 0; dt->type == J_STR && k < N_DTYPES; k++)
        if (!strcmp(dt->str, g_dtypes[k].name)) d = k;
    if (d < 0)
        return v3_error("%s: tensor '%s' has dtype %s%s%s; expected one of " DTYPE_LIST, f->path, name,
                        dt->type == J_STR ? "\"" : "", dt->type == J_STR ? dt->str : "(not a string)",
                        dt->type == J_STR ? "\"" : "");
    t->dtype = (StDtype)d;
    if (sh->type != J_ARR) return v3_error("%s: tensor '%s' shape is not an array; expected [d0, d1, ...]", f->path, name);
    if (sh->n > ST_MAX_DIMS)
        return v3_error("%s: tensor '%s' has %d dims; expected at most %d", f->path, name, sh->n, ST_MAX_DIMS);
    t->ndim = sh->n;
    int64_t numel = 1;
    for (int i = 0; i < sh->n; i++) {
        if (sh->items[i].type != J_INT)
            return v3_error("%s: tensor '%s' shape[%d] is not an integer; expected a non-negative integer", f->path,
                            name, i);
        if (sh->items[i].i < 0)
            return v3_error("%s: tensor '%s' shape[%d] is %lld; expected a non-negative integer", f->path, name, i,
                            (long long)sh->items[i].i);
        t->shape[i] = sh->items[i].i;
        if (t->shape[i] && numel > INT64_MAX / 8 / t->shape[i])
            return v3_error("%s: tensor '%s' shape is too large; expected at most 2^60 bytes", f->path, name);
        numel *= t->shape[i];
    }
    if (off->type != J_ARR || off->n != 2 || off->items[0].type != J_INT || off->items[1].type != J_INT ||
        off->items[0].i < 0 || off->items[1].i < off->items[0].i)
        return v3_error("%s: tensor '%s' data_offsets is not [begin, end]; expected two integers 0 <= begin <= end",
                        f->path, name);
    t->begin = (size_t)off->items[0].i;
    t->end = (size_t)off->items[1].i;
    uint64_t want = (uint64_t)numel * g_dtypes[d].size;
    char sb[160];
    if (t->end - t->begin != want)
        return v3_error("%s: tensor '%s' data_offsets [%zu, %zu] hold %zu bytes; expected %llu (shape %s x %zu bytes "
                        "of %s)", f->path, name, t->begin, t->end, t->end - t->begin, (unsigned long long)want,
                        shape_str(t->ndim, t->shape, sb, sizeof sb), g_dtypes[d].size, g_dtypes[d].name);
    if (t->end > f->data_len)
        return v3_error("%s: tensor '%s' data_offsets [%zu, %zu] run past the %zu-byte data buffer; expected end <= %zu",
                        f->path, name, t->begin, t->end, f->data_len, f->data_len);
    return 0;
}

static const StFile *g_sort_file; /* qsort has no context argument */
static int by_name(const void *a, const void *b) {
    return strcmp(g_sort_file->t[*(const int *)a].name, g_sort_file->t[*(const int *)b].name);
}
static int by_offset(const void *a, const void *b) {
    const StTensor *x = &g_sort_file->t[*(const int *)a], *y = &g_sort_file->t[*(const int *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Unique names, and the tensors tile the data buffer exactly: no overlap, no gap, nothing left over. */
static int check_layout(StFile *f) {
    int *ix = xmalloc(sizeof(int) * (size_t)(f->n + 1)), rc = 0;
    for (int i = 0; i < f->n; i++) ix[i] = i;
    g_sort_file = f;
    qsort(ix, (size_t)f->n, sizeof(int), by_name);
    for (int i = 1; i < f->n && !rc; i++)
        if (!strcmp(f->t[ix[i]].name, f->t[ix[i - 1]].name))
            rc = v3_error("%s: tensor '%s' appears twice in the header; expected unique names", f->path, f->t[ix[i]].name);
    qsort(ix, (size_t)f->n, sizeof(int), by_offset);
    size_t pos = 0;
    for (int i = 0; i < f->n && !rc; i++) {
        const StTensor *t = &f->t[ix[i]];
        if (t->begin < pos)
            rc = v3_error("%s: tensor '%s' data_offsets [%zu, %zu] overlap tensor '%s' [%zu, %zu]; expected begin >= %zu",
                          f->path, t->name, t->begin, t->end, f->t[ix[i - 1]].name, f->t[ix[i - 1]].begin,
                          f->t[ix[i - 1]].end, pos);
        else if (t->begin > pos)
            rc = v3_error("%s: tensor '%s' starts at data byte %zu, leaving bytes [%zu, %zu) uncovered; expected begin "
                          "= %zu (the tensors must cover the data buffer)", f->path, t->name, t->begin, pos, t->begin, pos);
        pos = t->end;
    }
    if (!rc && pos != f->data_len)
        rc = v3_error("%s: data bytes [%zu, %zu) belong to no tensor; expected the tensors to end at the end of the "
                      "file (data buffer of %zu bytes)", f->path, pos, f->data_len, f->data_len);
    free(ix);
    return rc;
}

static int parse_header(StFile *f, const char *text, size_t n) {
    JP j = {text, n, 0, 8, f->path};
    size_t bad = utf8_bad((const unsigned char *)text, n);
    if (bad != (size_t)-1) return v3_error("%s: safetensors header: invalid UTF-8 at byte %zu; expected UTF-8 JSON", f->path, 8 + bad);
    if (!n || text[0] != '{') return jerr(&j, "'{' (the header is a JSON object)");
    JVal root;
    memset(&root, 0, sizeof root);
    int rc = jvalue(&j, &root, 0);
    if (!rc) {
        while (j.p < n && (text[j.p] == ' ' || text[j.p] == '\t' || text[j.p] == '\n' || text[j.p] == '\r')) j.p++;
        if (j.p < n) rc = jerr(&j, "only space padding after the header object");
    }
    f->t = xcalloc((size_t)root.n + 1, sizeof(StTensor));
    for (int i = 0; i < root.n && !rc; i++) {
        if (!strcmp(root.keys[i], "__metadata__")) {
            rc = f->meta_key ? v3_error("%s: __metadata__ appears twice; expected it once", f->path)
                             : parse_meta(f, &root.items[i]);
            continue;
        }
        StTensor *t = &f->t[f->n];
        if (!(t->name = strdup(root.keys[i]))) V3_FATAL("out of memory");
        f->n++;
        rc = parse_tensor(f, t->name, &root.items[i], t);
    }
    jfree(&root);
    return rc ? rc : check_layout(f);
}

int st_read(const char *path, StFile *f) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) V3_FATAL("out of memory");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        v3_error("%s: cannot open safetensors file: %s", path, strerror(errno));
        st_clear(f);
        return -1;
    }
    long size = -1;
    if (fseek(fp, 0, SEEK_END) == 0) size = ftell(fp);
    if (size < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        v3_error("%s: cannot size safetensors file: %s", path, strerror(errno));
        fclose(fp);
        st_clear(f);
        return -1;
    }
    f->file = xmalloc((size_t)size + 1);
    size_t got = fread(f->file, 1, (size_t)size, fp);
    fclose(fp);
    int rc = 0;
    uint64_t hl = 0;
    if (got != (size_t)size)
        rc = v3_error("%s: read %zu of %ld bytes; expected the whole file", path, got, size);
    else if (size < 8)
        rc = v3_error("%s: %ld bytes; expected at least 8 (the u64 header length of a safetensors file)", path, size);
    if (!rc) {
        for (int i = 7; i >= 0; i--) hl = hl << 8 | f->file[i];
        if (hl > ST_HEADER_MAX)
            rc = v3_error("%s: safetensors header length %llu is absurd; expected at most %llu", path,
                          (unsigned long long)hl, ST_HEADER_MAX);
        else if (hl > (uint64_t)size - 8)
            rc = v3_error("%s: safetensors header length %llu runs past the end of the file; expected at most %llu "
                          "(file of %ld bytes)", path, (unsigned long long)hl, (unsigned long long)size - 8, size);
    }
    if (!rc) {
        f->data = f->file + 8 + hl;
        f->data_len = (size_t)size - 8 - (size_t)hl;
        rc = parse_header(f, (const char *)f->file + 8, (size_t)hl);
    }
    if (rc) st_clear(f);
    return rc;
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_key[i], key)) return f->meta_val[i];
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1F, m = h & 0x3FF, b;
    if (e == 0 && m == 0) b = s;
    else if (e == 0) { /* subnormal: normalise the mantissa */
        e = 113;
        while (!(m & 0x400)) { m <<= 1; e--; }
        b = s | e << 23 | (m & 0x3FF) << 13;
    } else if (e == 31) b = s | 0x7F800000u | m << 13;
    else b = s | (e + 112) << 23 | m << 13;
    float x;
    memcpy(&x, &b, 4);
    return x;
}

/* Element i of a tensor's data as float (data may be unaligned: copied byte-wise). */
static float elem_f32(StDtype d, const unsigned char *p) {
    float f;
    double x;
    uint16_t h;
    uint32_t b;
    int64_t i64;
    int32_t i32;
    int16_t i16;
    switch (d) {
    case ST_F32: memcpy(&f, p, 4); return f;
    case ST_F64: memcpy(&x, p, 8); return (float)x;
    case ST_F16: memcpy(&h, p, 2); return half_to_float(h);
    case ST_BF16: memcpy(&h, p, 2); b = (uint32_t)h << 16; memcpy(&f, &b, 4); return f; /* the top half of a float */
    case ST_I64: memcpy(&i64, p, 8); return (float)i64;
    case ST_I32: memcpy(&i32, p, 4); return (float)i32;
    case ST_I16: memcpy(&i16, p, 2); return (float)i16;
    case ST_I8: return (float)(int8_t)p[0];
    case ST_U8: return (float)p[0];
    case ST_BOOL: return p[0] ? 1.0f : 0.0f;
    }
    return 0;
}

int st_get_f32(const StFile *f, const char *name, int ndim, const int64_t *shape, float *out) {
    const StTensor *t = st_find(f, name);
    char want[160], got[160];
    shape_str(ndim, shape, want, sizeof want);
    if (!t) return v3_error("%s: tensor '%s' is missing; expected shape %s", f->path, name, want);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same)
        return v3_error("%s: tensor '%s' has shape %s; expected %s", f->path, name,
                        shape_str(t->ndim, t->shape, got, sizeof got), want);
    size_t n = (size_t)st_numel(t), sz = st_dtype_size(t->dtype);
    const unsigned char *p = f->data + t->begin;
    if (t->dtype == ST_F32) memcpy(out, p, n * 4);
    else
        for (size_t i = 0; i < n; i++) out[i] = elem_f32(t->dtype, p + i * sz);
    return 0;
}

/* ---------------------------------------------------------------- writer */
typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    unsigned char *data;
    size_t nbytes;
} StEntry;

struct StWriter {
    StEntry *e;
    int n;
    char **mk, **mv;
    int nm;
};

StWriter *st_writer_new(void) { return xcalloc(1, sizeof(StWriter)); }

void st_writer_free(StWriter *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) { free(w->e[i].name); free(w->e[i].data); }
    for (int i = 0; i < w->nm; i++) { free(w->mk[i]); free(w->mv[i]); }
    free(w->e);
    free(w->mk);
    free(w->mv);
    free(w);
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) V3_FATAL("out of memory");
    return d;
}

int st_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data) {
    if ((unsigned)dtype >= (unsigned)N_DTYPES)
        return v3_error("st_add: tensor '%s': dtype %d; expected one of " DTYPE_LIST, name, (int)dtype);
    if (!*name || !strcmp(name, "__metadata__"))
        return v3_error("st_add: tensor name '%s' is reserved or empty; expected another name", name);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return v3_error("st_add: tensor '%s': %d dims; expected 0 to %d", name, ndim, ST_MAX_DIMS);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].name, name)) return v3_error("st_add: tensor '%s' added twice; expected unique names", name);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return v3_error("st_add: tensor '%s': shape[%d] = %lld; expected >= 0", name, i, (long long)shape[i]);
        numel *= (size_t)shape[i];
    }
    w->e = xrealloc(w->e, sizeof(StEntry) * (size_t)(w->n + 1));
    StEntry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->nbytes = numel * g_dtypes[dtype].size;
    e->data = xmalloc(e->nbytes ? e->nbytes : 1);
    if (e->nbytes) memcpy(e->data, data, e->nbytes);
    return 0;
}

int st_add_meta(StWriter *w, const char *key, const char *value) {
    for (int i = 0; i < w->nm; i++)
        if (!strcmp(w->mk[i], key)) return v3_error("st_add_meta: key '%s' added twice; expected unique keys", key);
    w->mk = xrealloc(w->mk, sizeof(char *) * (size_t)(w->nm + 1));
    w->mv = xrealloc(w->mv, sizeof(char *) * (size_t)(w->nm + 1));
    w->mk[w->nm] = xstrdup(key);
    w->mv[w->nm++] = xstrdup(value);
    return 0;
}

typedef struct { char *s; size_t n, cap; } Buf;

static void buf_put(Buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* A JSON string: quotes, backslashes and control characters escaped; other bytes (UTF-8) as they are. */
static void buf_json(Buf *b, const char *s) {
    buf_str(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; buf_put(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); buf_str(b, esc); }
        else buf_put(b, (const char *)&c, 1);
    }
    buf_str(b, "\"");
}

/* The header text, padded with spaces to a multiple of 8 bytes (so the data start 8-aligned, as the format's
 * reference writer does). */
static void build_header(const StWriter *w, Buf *b) {
    char num[64];
    buf_str(b, "{");
    if (w->nm) {
        buf_str(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nm; i++) {
            if (i) buf_str(b, ",");
            buf_json(b, w->mk[i]);
            buf_str(b, ":");
            buf_json(b, w->mv[i]);
        }
        buf_str(b, "}");
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const StEntry *e = &w->e[i];
        if (i || w->nm) buf_str(b, ",");
        buf_json(b, e->name);
        buf_str(b, ":{\"dtype\":\"");
        buf_str(b, g_dtypes[e->dtype].name);
        buf_str(b, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)e->shape[k]);
            buf_str(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + e->nbytes);
        buf_str(b, num);
        off += e->nbytes;
    }
    buf_str(b, "}");
    while (b->n % 8) buf_str(b, " ");
}

typedef struct { const StWriter *w; const Buf *h; } WriteCtx;

static int write_st(FILE *fp, void *ctx) {
    const WriteCtx *c = ctx;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)c->h->n >> (8 * i));
    if (fwrite(len, 1, 8, fp) != 8 || fwrite(c->h->s, 1, c->h->n, fp) != c->h->n) return -1;
    for (int i = 0; i < c->w->n; i++)
        if (c->w->e[i].nbytes && fwrite(c->w->e[i].data, 1, c->w->e[i].nbytes, fp) != c->w->e[i].nbytes) return -1;
    return 0;
}

int st_writer_save(StWriter *w, const char *path) {
    Buf h = {0};
    build_header(w, &h);
    WriteCtx c = {w, &h};
    int rc = write_file_atomic(path, write_st, &c);
    free(h.s);
    return rc;
}
