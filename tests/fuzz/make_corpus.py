#!/usr/bin/env python3
"""Regenerate the seed corpora tests/fuzz/corpus/<name>/ (run from the repository root after `make`).

Valid seeds come from ./v3 itself (synthetic data, a 3-step training run of the fuzz model, its exported
state_dict, mini PhoneNums and InsNotes sets); near-valid ones are crafted here with the standard library
(truncations, a bad field with the checksums made right, other dtypes, other PNG colour types).
InsNotes needs FluidSynth and a soundfont: pass --soundfont FILE when FluidR3_GM.sf2 is not installed.
Usage: tests/fuzz/make_corpus.py [--soundfont FILE]"""
import glob, os, shutil, struct, subprocess, sys, tempfile, zlib

OUT = "tests/fuzz/corpus"
# The model of tests/fuzz/fuzz_util.h (fz_model): keep the two lists the same.
MODEL_SETS = ["model_config.arch=tiny", "model_config.n_channels=8", "model_config.n_fragments=2",
              "model_config.fragment_len=16", "model_config.n_feature=16", "model_config.d_emb_c=4",
              "model_config.d_emb_s=4", "model_config.n_atoms=4", "batch_size=4",
              "model_config.threshold_ema_dead_code=0", "model_config.vq_ema_decay=0.98"]


def v3(*args, cwd=None):
    subprocess.run([os.path.abspath("v3"), *args], check=True, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def put(name, fname, data):
    os.makedirs(f"{OUT}/{name}", exist_ok=True)
    with open(f"{OUT}/{name}/{fname}", "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# CRC-32C (Castagnoli), as host/common.c computes it.
_T = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _T.append(_c)


def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c = _T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def fix_crcs(b, hcrc, pcrc, payload):
    """Header CRC of [0, hcrc) at hcrc and payload CRC of [payload, end) at pcrc, as fuzz_util.h fz_fix_crcs."""
    b = bytearray(b)
    b[pcrc:pcrc + 4] = struct.pack("<I", crc32c(b[payload:]))
    b[hcrc:hcrc + 4] = struct.pack("<I", crc32c(b[:hcrc]))
    return bytes(b)


def png(w, h, ctype=2, depth=8, interlace=0, extra=b""):
    ch = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""  # rows of 0x80 bytes, each after filter byte 0; Adam7: the seven passes' sub-images in turn
    for x0, y0, dx, dy in passes if interlace else [(0, 0, 1, 1)]:
        pw, ph = (w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy
        if pw > 0 and ph > 0:
            raw += (b"\0" + bytes([0x80]) * ((pw * ch * depth + 7) // 8)) * ph
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
    if ctype == 3:
        body += chunk(b"PLTE", bytes(range(12)))
    return b"\x89PNG\r\n\x1a\n" + body + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def main():
    sf = sys.argv[sys.argv.index("--soundfont") + 1] if "--soundfont" in sys.argv else None
    w = tempfile.mkdtemp(prefix="v3corpus-")
    try:
        for d in glob.glob(f"{OUT}/*"):
            shutil.rmtree(d)

        # ---- config (YAML files) and config_set (--set lines)
        for p in sorted(glob.glob("configs/*.yaml")):
            put("config", os.path.basename(p), read(p))
        put("config", "unknown_key.yaml", "name: x\nmodel_config:\n  arch: tiny\n  n_chanels: 8\n")
        put("config", "wrong_type.yaml", "batch_size: 1.5\noptimizer_config:\n  lr: fast\n")
        put("config", "quoted.yaml", 'name: "tab\\there \\u00e9"\nbatch_size: "4"\nrandom_seed: ~\n')
        put("config", "two_docs.yaml", "name: a\n---\nname: b\n")
        put("config", "alias.yaml", "loss_config: &a\n  relativity: 2\nmodel_config: *a\n")
        put("config", "flow.yaml", "{name: x, model_config: {arch: tiny, n_channels: 8}, random_seed: }\n")
        put("config", "list.yaml", "- 1\n- [2, 3]\n")
        put("config", "bad_syntax.yaml", "name: x\n\tbatch_size: 3\nmodel_config: {arch: [\n")
        put("config", "empty_sections.yaml", "loss_config:\nmodel_config: ~\nsupersample: yes\n")
        # once lost on config_save + config_load: a folded line break, escapes for control characters
        put("config", "multiline_string.yaml", 'name: "two\n\n  lines \\x01\\t\\u2028"\ndata_dir: "a\n  b"\n')
        put("config_set", "model.txt", "\n".join(MODEL_SETS) + "\n")
        put("config_set", "one.txt", "optimizer_config.lr=5e-4")
        put("config_set", "strings.txt", "name=\"quoted\"\ndevice='cpu'\ndata_dir=/tmp/x\nrandom_seed=\n")
        put("config_set", "kinds.txt", "loss_config.supersample_content=yes\nepochs=1_000\nrandom_seed=None\n"
            "optimizer_config.scheduler=cosine_annealing\noptimizer_config.lr_anneal_epochs=10")
        put("config_set", "not_utf8.txt", b"name=caf\xc3\xa9\ndata_dir=/data/caf\xe9\ndevice=\x01\x7f\xc2\x85")
        put("config_set", "bad.txt", "model_config=3\n=1\nbatch_size=0\nloss_config.weights.recon_loss=nan\nx.y=1")

        # ---- the fuzz model: checkpoint and state_dict from a 3-step run on synthetic data
        v3("data", "synth", "--out", f"{w}/s16", "--train", "8", "--val", "2", "--test", "2", "--frags", "2",
           "--contents", "2", "--styles", "2", "--size", "16")
        sets = [a for s in MODEL_SETS for a in ("--set", s)]
        v3("train", "--config", "configs/tiny.yaml", *sets, "--data", f"{w}/s16", "--out", f"{w}/run", "--steps",
           "3", "--device", "cpu", "--quiet")
        ck = read(f"{w}/run/checkpoints/latest.v3ck")
        put("checkpoint", "tiny8_step3.v3ck", ck)
        put("checkpoint", "truncated.v3ck", ck[:1000])
        put("checkpoint", "header_only.v3ck", ck[:128])
        other = bytearray(ck[:128])
        other[40:44] = struct.pack("<I", 8)  # n_atoms 8: another model
        put("checkpoint", "other_model_header.v3ck", fix_crcs(other, 120, 116, 128))
        put("checkpoint", "version2.v3ck", fix_crcs(ck[:8] + struct.pack("<I", 2) + ck[12:128], 120, 116, 128))
        v3("export", "--run", "run", "--out", "w.safetensors", cwd=w)  # relative: the same metadata every time
        put("safetensors", "tiny8.safetensors", read(f"{w}/w.safetensors"))

        def st(header, data):
            h = header.encode()
            h += b" " * (-len(h) % 8)
            return struct.pack("<Q", len(h)) + h + data
        put("safetensors", "dtypes.safetensors", st(
            '{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},'
            '"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[4,8]},"c":{"dtype":"I64","shape":[],'
            '"data_offsets":[8,16]},"d":{"dtype":"BOOL","shape":[0],"data_offsets":[16,16]},'
            '"e\\u00e9\\ud83d\\ude00":{"dtype":"F64","shape":[1],"data_offsets":[16,24]}}',
            bytes(range(24))))
        put("safetensors", "empty.safetensors", st("{}", b""))
        put("safetensors", "overlap.safetensors", st(
            '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"I8","shape":[4],'
            '"data_offsets":[4,8]}}', bytes(8)))
        put("safetensors", "short.safetensors", struct.pack("<Q", 1000) + b'{"x":')

        # ---- .v3ds
        v3("data", "synth", "--out", f"{w}/s8", "--train", "2", "--val", "2", "--test", "1", "--frags", "2",
           "--contents", "2", "--styles", "2", "--size", "8")
        ds = read(f"{w}/s8/test.v3ds")
        put("v3ds", "test_1x2x3x8x8.v3ds", ds)
        put("v3ds", "header_only.v3ds", ds[:64])
        put("v3ds", "truncated.v3ds", ds[:700])
        nan = bytearray(ds)
        nan[64:68] = struct.pack("<f", float("nan"))
        put("v3ds", "nan.v3ds", fix_crcs(nan, 48, 52, 64))
        lab = bytearray(ds)
        lab[-4:] = struct.pack("<i", 7)  # style label 7 of 2 classes
        put("v3ds", "label_range.v3ds", fix_crcs(lab, 48, 52, 64))

        # ---- InsNotes note bank: the smallest valid one (1 program, 1 layer, 1-s clips of silence) and headers
        hdr = bytearray(64)
        hdr[:8] = b"V3NBANK\0"
        struct.pack_into("<8I", hdr, 8, 1, 16000, 1, 12, 1, 16000, 60, 0)
        payload = struct.pack("<ii", 64, 100) + struct.pack("<f", 1 / 32767) * 12 + bytes(2 * 12 * 16000)
        bank = fix_crcs(bytes(hdr) + payload, 56, 60, 64)
        put("insnotes_bank", "one_program.v3nb", bank)
        put("insnotes_bank", "header_only.v3nb", bank[:64])
        two = bytearray(bank[:64 + 4 + 4 + 48])  # two layers, clipped
        struct.pack_into("<I", two, 24, 2)
        put("insnotes_bank", "two_layers_truncated.v3nb", fix_crcs(two, 56, 60, 64))
        big = bytearray(bank[:64])
        struct.pack_into("<I", big, 16, 200)  # 200 programs
        put("insnotes_bank", "too_many_programs.v3nb", fix_crcs(big, 56, 60, 64))

        # ---- PhoneNums index and pages
        v3("data", "phonenums", "--mini", "--out", f"{w}/pn")
        v3("data", "phonenums", "--mini", "--ood", "--out", f"{w}/pnood")
        idx = read(f"{w}/pn/index.tsv").decode()
        put("phonenums_index", "mini.tsv", idx)
        put("phonenums_index", "mini_ood.tsv", read(f"{w}/pnood/index.tsv"))
        head, lines = [l for l in idx.splitlines() if l.startswith("#")], [l for l in idx.splitlines() if not l.startswith("#")]
        three = [next(l for l in lines if f"\t{s}\t" in l) for s in ("train", "val", "test")]
        small = "\n".join(h.replace("n_pages 80", "n_pages 3") for h in head) + "\n" + "\n".join(three) + "\n"
        put("phonenums_index", "three_pages.tsv", small)
        put("phonenums_index", "three_pages_crlf.tsv", small.replace("\n", "\r\n"))
        put("phonenums_index", "bad_digits.tsv", small.replace(three[2].split("\t")[2], "0123456788", 1))
        put("phonenums_index", "short_count.tsv", small.replace("n_pages 3", "n_pages 4"))
        page = sorted(glob.glob(f"{w}/pn/pages/*.png"))[0]
        put("png", "page.png", read(page))
        put("png", "page_truncated.png", read(page)[:3000])
        put("png", "flat_page.png", png(320, 48))
        put("png", "flat_page_interlaced.png", png(320, 48, interlace=1))
        put("png", "rgb_8x8.png", png(8, 8))
        put("png", "grey_page.png", png(320, 48, ctype=0))
        put("png", "rgb16_4x4.png", png(4, 4, depth=16))
        put("png", "palette_4x4.png", png(4, 4, ctype=3))
        put("png", "rgba_4x4.png", png(4, 4, ctype=6))
        # once made libpng allocate and zero 1.8 GB: a tEXt chunk claiming 0x6d290005 bytes
        put("png", "forged_text_length.png", png(8, 8, extra=struct.pack(">I", 0x6D290005) + b"tEXtab\0cd\1\2\3\4"))
        put("png", "text_chunk.png", png(8, 8, extra=struct.pack(">I", 5) + b"tEXtab\0cd" + struct.pack(">I", zlib.crc32(b"tEXtab\0cd"))))

        # ---- InsNotes index (needs FluidSynth and a soundfont)
        extra = ["--soundfont", sf] if sf else []
        v3("data", "insnotes", "--mini", *extra, "--out", f"{w}/ins")
        v3("data", "insnotes", "--mini", "--ood", *extra, "--out", f"{w}/insood")
        idx = read(f"{w}/ins/index.tsv").decode()
        put("insnotes_index", "mini.tsv", idx)
        put("insnotes_index", "mini_ood.tsv", read(f"{w}/insood/index.tsv"))
        head = [l for l in idx.splitlines() if l.startswith("#")]
        lines = [l for l in idx.splitlines() if not l.startswith("#")]
        per = [next(l for l in lines if l.startswith(f"ins{s:02d}_000")) for s in range(12)]  # each style's first
        per[-1] = per[-1].replace("\ttrain\t", "\ttest\t").replace("\tval\t", "\ttest\t")
        small = "\n".join(h.replace("n_files 48", f"n_files {len(per)}") for h in head) + "\n" + "\n".join(per) + "\n"
        put("insnotes_index", "first_files.tsv", small)
        put("insnotes_index", "bad_program.tsv", small.replace("\t0\t64\t", "\t0\t65\t", 1))
        put("insnotes_index", "bad_seed.tsv", small.replace("\t0x", "\t0X", 1))
        put("insnotes_index", "no_header.tsv", "\n".join(per) + "\n")
    finally:
        shutil.rmtree(w)
    total = sum(os.path.getsize(p) for p in glob.glob(f"{OUT}/*/*"))
    print(f"{OUT}: {len(glob.glob(f'{OUT}/*/*'))} files, {total} bytes")


if __name__ == "__main__":
    main()
