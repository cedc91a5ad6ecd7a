"""Check a safetensors file with the `safetensors` package itself (used by the test suite; CI installs it).

usage: st_check.py FILE.safetensors EXPECT.json
EXPECT.json: {"metadata": {"key": "value", ...} or null,
              "tensors": [[name, dtype, [shape...], sum, sum_of_abs], ...]}
Loads FILE with safetensors.numpy.load_file and its metadata with safe_open, and requires exactly the expected
tensor names, each with the expected dtype, shape and element sum (within rounding), and exactly the expected
metadata. Prints "OK N tensors" and exits 0, or prints the first difference and exits 1."""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def main():
    path, expect_path = sys.argv[1], sys.argv[2]
    with open(expect_path) as f:
        expect = json.load(f)
    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    want = {t[0]: t for t in expect["tensors"]}
    if set(tensors) != set(want):
        print(f"names differ: only in the file {sorted(set(tensors) - set(want))[:5]}, "
              f"only expected {sorted(set(want) - set(tensors))[:5]}")
        return 1
    for name, (_, dtype, shape, total, total_abs) in want.items():
        a = tensors[name]
        if a.dtype != DTYPES[dtype] or list(a.shape) != shape:
            print(f"{name}: {a.dtype} {list(a.shape)}, expected {dtype} {shape}")
            return 1
        s = float(np.sum(a.astype(np.float64)))
        if abs(s - total) > 1e-9 * max(total_abs, 1.0):
            print(f"{name}: element sum {s!r}, expected {total!r}")
            return 1
    if (meta or None) != (expect["metadata"] or None):
        print(f"metadata {meta}, expected {expect['metadata']}")
        return 1
    print(f"OK {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
