#!/bin/sh
# Builds tools/gemm_libs.c against each BLAS library Debian offers (libopenblas-pthread-dev, libopenblas-openmp-dev,
# libblis-openmp-dev, libdnnl-dev; install them first) and runs it at 1 and 2 threads (NOTES.md, issue 17).
set -e
L=/usr/lib/x86_64-linux-gnu
O=build/gemm_libs
mkdir -p $O
CC="${CC:-gcc} -O2 -fopenmp tools/gemm_libs.c"
$CC -I/usr/include/x86_64-linux-gnu/openblas-pthread -DOPENBLAS_THREADS -o $O/openblas-pthread \
    -L$L/openblas-pthread -Wl,-rpath,$L/openblas-pthread -lopenblas
$CC -I/usr/include/x86_64-linux-gnu/openblas-openmp -DOPENBLAS_THREADS -o $O/openblas-openmp \
    -L$L/openblas-openmp -Wl,-rpath,$L/openblas-openmp -lopenblas
$CC -I/usr/include/x86_64-linux-gnu/blis-openmp -o $O/blis-openmp -L$L/blis-openmp -Wl,-rpath,$L/blis-openmp -lblis
$CC -DUSE_DNNL -o $O/onednn -ldnnl
for lib in openblas-pthread openblas-openmp blis-openmp onednn; do
  for t in 1 2; do
    echo "== $lib, $t thread(s)"
    OMP_NUM_THREADS=$t $O/$lib $t
  done
done
