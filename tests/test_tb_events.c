/* TensorBoard event files: framing and checksums read back record by record, protobuf fields decoded by a
 * minimal reader written from the format description (not from the writer's code paths). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "phonenums.h"
#include "tb_events.h"
#include "testing.h"

static uint64_t get_varint(const uint8_t **p, const uint8_t *end) {
    uint64_t v = 0;
    for (int s = 0; *p < end && s < 64; s += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) break;
    }
    return v;
}

/* Find field `field` of wire type 2 in a message; returns its payload and length (first occurrence). */
static const uint8_t *find_bytes(const uint8_t *m, size_t n, int field, size_t *len) {
    const uint8_t *p = m, *end = m + n;
    while (p < end) {
        uint64_t key = get_varint(&p, end);
        int f = (int)(key >> 3), wt = (int)(key & 7);
        if (wt == 0) get_varint(&p, end);
        else if (wt == 1) p += 8;
        else if (wt == 5) p += 4;
        else if (wt == 2) {
            size_t l = (size_t)get_varint(&p, end);
            if (f == field) { *len = l; return p; }
            p += l;
        } else return NULL;
    }
    return NULL;
}

static int64_t find_varint(const uint8_t *m, size_t n, int field) {
    const uint8_t *p = m, *end = m + n;
    while (p < end) {
        uint64_t key = get_varint(&p, end);
        int f = (int)(key >> 3), wt = (int)(key & 7);
        if (wt == 0) { uint64_t v = get_varint(&p, end); if (f == field) return (int64_t)v; }
        else if (wt == 1) p += 8;
        else if (wt == 5) p += 4;
        else if (wt == 2) p += get_varint(&p, end);
        else return -1;
    }
    return 0;
}

TEST(tb_crc32c_and_mask_known_values) {
    CHECK(crc32c(0, "123456789", 9) == 0xE3069283u, "crc32c('123456789') = %08x", crc32c(0, "123456789", 9));
    uint32_t c = 0xE3069283u, want = ((c >> 15) | (c << 17)) + 0xa282ead8u;
    CHECK(tb_masked_crc("123456789", 9) == want, "masked crc %08x, want %08x", tb_masked_crc("123456789", 9), want);
    return 0;
}

TEST(tb_events_read_back_scalars_and_image) {
    char *dir = test_tmpdir("tb");
    TbWriter *w = tb_open(dir);
    CHECK(w, "tb_open: %s", v3_last_error());
    CHECK(strstr(tb_path(w), "/events.out.tfevents."), "file name %s", tb_path(w));
    for (int s = 1; s <= 3; s++) CHECK(!tb_scalar(w, "loss/total", s, 0.5f * s), "scalar");
    uint8_t img[4 * 3 * 3];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)(i * 20);
    CHECK(!tb_image_rgb(w, "recon/sample0", 7, img, 4, 3), "image: %s", v3_last_error());
    char path[1300];
    snprintf(path, sizeof path, "%s", tb_path(w));
    tb_close(w);

    unsigned char *d;
    size_t n;
    CHECK(!test_read_all(path, &d, &n), "read %s", path);
    size_t off = 0;
    int records = 0, scalars = 0, images = 0, version = 0;
    while (off < n) {
        CHECK(off + 12 <= n, "truncated record header at %zu", off);
        uint64_t len = 0;
        for (int i = 0; i < 8; i++) len |= (uint64_t)d[off + i] << (8 * i);
        uint32_t lc = d[off + 8] | d[off + 9] << 8 | d[off + 10] << 16 | (uint32_t)d[off + 11] << 24;
        CHECK(lc == tb_masked_crc(d + off, 8), "record %d: length CRC", records);
        const uint8_t *ev = d + off + 12;
        CHECK(off + 16 + len <= n, "record %d overruns the file", records);
        const uint8_t *t = ev + len;
        uint32_t dc = t[0] | t[1] << 8 | t[2] << 16 | (uint32_t)t[3] << 24;
        CHECK(dc == tb_masked_crc(ev, len), "record %d: data CRC", records);
        CHECK(ev[0] == 0x09, "record %d: wall_time first", records);
        size_t l;
        const uint8_t *fv = find_bytes(ev, len, 3, &l);
        if (fv) version += l == 13 && !memcmp(fv, "brain.Event:2", 13);
        const uint8_t *sum = find_bytes(ev, len, 5, &l);
        if (sum) {
            int64_t step = find_varint(ev, len, 2);
            size_t vl, tl;
            const uint8_t *val = find_bytes(sum, l, 1, &vl);
            const uint8_t *tag = val ? find_bytes(val, vl, 1, &tl) : NULL;
            CHECK(tag, "record %d: summary without a tagged value", records);
            if (tl == 10 && !memcmp(tag, "loss/total", 10)) {
                const uint8_t *q = tag + tl; /* simple_value follows the tag: key 0x15 + 4 bytes */
                CHECK(q[0] == 0x15, "simple_value key");
                float f;
                memcpy(&f, q + 1, 4);
                CHECK(f == 0.5f * (float)step, "step %lld value %g", (long long)step, f);
                scalars++;
            } else {
                size_t il, pl;
                const uint8_t *im = find_bytes(val, vl, 4, &il);
                CHECK(im && step == 7, "image record");
                CHECK(find_varint(im, il, 1) == 3 && find_varint(im, il, 2) == 4 && find_varint(im, il, 3) == 3,
                      "image height/width/colorspace");
                const uint8_t *png = find_bytes(im, il, 4, &pl);
                char pp[1400];
                snprintf(pp, sizeof pp, "%s/img.png", dir);
                CHECK(png && !test_write_all(pp, png, pl), "png bytes");
                uint8_t *pix;
                int pw, ph;
                CHECK(!png_read_rgb(pp, 4, 3, &pix, &pw, &ph), "decode: %s", v3_last_error());
                CHECK(!memcmp(pix, img, sizeof img), "image pixels differ");
                free(pix);
                images++;
            }
        }
        records++;
        off += 16 + len;
    }
    free(d);
    CHECK(version == 1 && scalars == 3 && images == 1 && records == 5, "version %d scalars %d images %d records %d",
          version, scalars, images, records);
    test_rm_tree(dir);
    return 0;
}

/* TensorBoard itself reads the files (CI installs it into a venv and sets V3_TB_PYTHON; skipped elsewhere). */
TEST(tb_events_read_by_tensorboard) {
    const char *py = getenv("V3_TB_PYTHON");
    if (!py || !*py) SKIP("V3_TB_PYTHON not set (`make test` sets it to the venv tools/setup.sh --venv makes)");
    char *dir = test_tmpdir("tbpy");
    TbWriter *w = tb_open(dir);
    CHECK(w, "tb_open: %s", v3_last_error());
    CHECK(!tb_scalar(w, "train/loss", 1, 2.5f) && !tb_scalar(w, "train/loss", 2, 1.5f), "scalars");
    uint8_t img[5 * 4 * 3] = {0};
    CHECK(!tb_image_rgb(w, "recon/sample0", 2, img, 5, 4), "image");
    tb_close(w);
    char cmd[1400], out[4096];
    snprintf(cmd, sizeof cmd, "%s tools/tb_read.py %s 2>/dev/null", py, dir);
    FILE *p = popen(cmd, "r");
    CHECK(p, "popen");
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    CHECK(st == 0, "%s exited with %d: %s", cmd, st, out);
    CHECK(strstr(out, "scalar train/loss 2 1 2.5\n"), "TensorBoard saw: %s", out);
    CHECK(strstr(out, "image recon/sample0 1 2 5 4\n"), "TensorBoard saw: %s", out);
    test_rm_tree(dir);
    return 0;
}
