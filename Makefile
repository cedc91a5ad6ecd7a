# v3 build. `make` builds ./v3 and the test runner; `make test` runs the CPU tests (the README's test command);
# `make demo` the README main job; `make test`/`make demo` run tools/setup.sh first; `make asan`, `make fuzz`: sanitizer and fuzz checks (CI);
# `make test-gpu` runs the CUDA-vs-CPU checks (prints SKIP and exits 0 without a GPU); `make bench` builds benchmarks;
# `make bench-cpu` times our CPU step beside PyTorch's (installs PyTorch into .venv-torch/; never part of the tests).
# CUDA sources compile whenever nvcc is on PATH (no GPU needed): explicit sm_80 and sm_90 code plus compute_90 PTX.

CC      ?= gcc
# Parallel by default, one job per core (a -j on the command line wins; sub-makes share the top one's jobs); one short line per object (V=1: full lines).
ifeq ($(MAKELEVEL),0)
  MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif
ifeq ($(V),1)
  Q :=
  SAY := @true
else
  Q := @
  SAY := @printf '  %-5s %s\n'
endif
NVCC    ?= $(shell command -v nvcc 2>/dev/null)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
OPT     ?= -O2
CFLAGS  ?= $(OPT) -march=x86-64-v2 -g
# OpenBLAS: the OpenMP build (libopenblas-openmp-dev), so its GEMM threads are our OpenMP pool instead of a second
# pool fighting it for the cores (NOTES.md, "Fast CPU backend": 1.3x a step at widths 16-256, bit-identical).
BLAS_VARIANT ?= openblas-openmp
BLAS_LIBDIR := /usr/lib/x86_64-linux-gnu/$(BLAS_VARIANT)
CFLAGS  += -std=c11 -Ibench -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -fopenmp -Iinclude -I/usr/include/x86_64-linux-gnu/$(BLAS_VARIANT)
LDLIBS  := -lyaml -L$(BLAS_LIBDIR) -Wl,-rpath,$(BLAS_LIBDIR) -lopenblas -lm -lpthread -fopenmp
# STATIC_DEPS=1 links libyaml, OpenBLAS and libgomp statically, for a binary that runs on a machine without them
# (the GPU machines have CUDA but no libyaml/OpenBLAS).
# FFTW (single precision, the CPU STFT) and libpng (PhoneNums pages) are needed to train on the real datasets.
LDLIBS  := -lfftw3f -lpng $(LDLIBS)
ifeq ($(STATIC_DEPS),1)
  LDLIBS := -L$(BLAS_LIBDIR) -Wl,-Bstatic -lfftw3f -lpng16 -lz -lyaml -lopenblas -lgomp -Wl,-Bdynamic -lm -lpthread -ldl
endif

# oneDNN (libdnnl-dev): the cpu backend's convolutions (host/cpu/conv_dnnl.c). Optional like the packages below:
# without it (and in STATIC_DEPS=1 builds: Debian ships no static libdnnl) the cpu backend convolves with the
# reference im2col + GEMM and says so (`v3 info`, platform.txt). DNNL=0 builds without it on purpose.
DNNL ?= $(if $(wildcard /usr/include/oneapi/dnnl/dnnl.h),1,0)
ifeq ($(STATIC_DEPS),1)
  DNNL := 0
endif
ifeq ($(DNNL),1)
  CFLAGS += -DV3_HAVE_DNNL=1
  LDLIBS += -ldnnl
endif

# Dataset generation only (v3 data insnotes / phonenums / export-wav): FluidSynth, FreeType, libsndfile.
# Each is optional: without it the build succeeds and `v3 data` names the Debian package to install.
# STATIC_DEPS=1 (the portable binary for GPU machines, which lack them) leaves all three out.
PKG_CONFIG ?= pkg-config
ifneq ($(STATIC_DEPS),1)
  GEN_PKGS := $(foreach p,fluidsynth freetype2 sndfile,$(shell $(PKG_CONFIG) --exists $(p) 2>/dev/null && echo $(p)))
endif
ifneq ($(filter fluidsynth,$(GEN_PKGS)),)
  CFLAGS += -DV3_HAVE_FLUIDSYNTH=1
endif
ifneq ($(filter freetype2,$(GEN_PKGS)),)
  CFLAGS += -DV3_HAVE_FREETYPE=1
endif
ifneq ($(filter sndfile,$(GEN_PKGS)),)
  CFLAGS += -DV3_HAVE_SNDFILE=1
endif
ifneq ($(GEN_PKGS),)
  CFLAGS += $(shell $(PKG_CONFIG) --cflags-only-I $(GEN_PKGS))
  LDLIBS += $(shell $(PKG_CONFIG) --libs $(GEN_PKGS))
endif

# Figures (include/plot.h: heat maps, t-SNE scatter plots, training curves, image grids): cairo, optional the
# same way (without it the plot functions name the Debian package libcairo2-dev); left out of STATIC_DEPS=1.
ifneq ($(STATIC_DEPS),1)
  PLOT_PKGS := $(shell $(PKG_CONFIG) --exists cairo 2>/dev/null && echo cairo)
endif
ifneq ($(PLOT_PKGS),)
  CFLAGS += -DV3_HAVE_CAIRO=1 $(shell $(PKG_CONFIG) --cflags-only-I cairo)
  LDLIBS += $(shell $(PKG_CONFIG) --libs cairo)
endif

NVCCFLAGS ?= -O3 -std=c++17 -Iinclude \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90

LIB_C   := $(filter-out host/cli/main.c,$(wildcard host/*.c host/*/*.c)) $(wildcard datasets/*.c)
CU_SRC  := $(wildcard kernels/*.cu)
TEST_C  := $(wildcard tests/test_*.c)
GPU_TEST_C := $(wildcard tests/gpu/*.c)
# Benchmark programs: every bench/bench_*.c except the shared bench_util.c is one program bench/<name>.
BENCH_C := $(filter-out bench/bench_util.c,$(wildcard bench/bench_*.c))
BENCH_BIN := $(patsubst %.c,%,$(BENCH_C))

ifneq ($(NVCC),)
  HAVE_CUDA := 1
  CU_OBJ  := $(patsubst %.cu,build/%.o,$(CU_SRC))
  CFLAGS  += -DV3_HAVE_CUDA=1 -I$(CUDA_HOME)/include
  # Static cudart: the binary runs on a GPU machine whatever its toolkit layout (driver only needed).
  LDLIBS  += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
else
  HAVE_CUDA := 0
  CU_OBJ  :=
  LIB_C   += kernels/cuda_stub.c
endif

# Objects depend on the compiler flags they were built with: a build with other flags (NVCC= for a CPU-only
# build, OPT=..., STATIC_DEPS=1) recompiles instead of linking stale objects with the wrong defines.
FLAGS_STAMP := build/.flags
FLAGS_NOW := $(CC) $(CFLAGS) | $(NVCC) $(NVCCFLAGS)
$(shell mkdir -p build; [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = '$(FLAGS_NOW)' ] || echo '$(FLAGS_NOW)' > $(FLAGS_STAMP))

LIB_OBJ  := $(patsubst %.c,build/%.o,$(LIB_C)) $(CU_OBJ)
TEST_OBJ := $(patsubst %.c,build/%.o,$(TEST_C))

all: banner v3 tests/run_tests tools/replay

banner:
	@if [ "$(HAVE_CUDA)" = 1 ]; then echo "v3 build: nvcc found at $(NVCC): CUDA kernels for sm_80, sm_90 + compute_90 PTX"; \
	 else echo "v3 build: nvcc not found: CPU-only build (./v3 reports that CUDA is unavailable)"; fi
	@echo "v3 build: dataset generation libraries found: $(if $(GEN_PKGS),$(GEN_PKGS),none) (of fluidsynth freetype2 sndfile); figures (cairo): $(if $(PLOT_PKGS),yes,no: install libcairo2-dev)"

build/%.o: %.c $(wildcard include/*.h) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(SAY) CC $<
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

build/%.o: %.cu $(wildcard include/*.h) $(wildcard kernels/*.h) $(wildcard kernels/*.cuh) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(SAY) NVCC $<
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

build/libv3.a: $(LIB_OBJ)
	@rm -f $@
	$(SAY) AR $@
	$(Q)ar rcs $@ $^

v3: build/host/cli/main.o build/libv3.a
	$(SAY) LINK $@
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# The golden tests share their comparison code (a header next to the golden files).
build/tests/test_golden.o build/tests/gpu/test_gpu_golden.o: tests/golden/golden_check.h

# The op-by-op cases of every backend against ref, shared by both runners (and benchmarks).
BO_OBJ := build/tests/backend_cases.o
build/tests/backend_cases.o build/tests/test_backend_ops.o build/tests/gpu/test_gpu_backend_ops.o: tests/backend_cases.h

tests/run_tests: $(TEST_OBJ) $(BO_OBJ) build/libv3.a
	$(SAY) LINK $@
	$(Q)$(CC) $(CFLAGS) $(TEST_OBJ) $(BO_OBJ) build/libv3.a -o $@ $(LDLIBS)

tests/run_gpu_tests: $(patsubst %.c,build/%.o,$(GPU_TEST_C)) build/tests/test_util.o build/tests/test_main.o $(BO_OBJ) build/libv3.a
	$(SAY) LINK $@
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# `make test` and `make demo` first run tools/setup.sh (Debian packages; for the tests also .venv with the PyPI
# readers two tests check our files with), then a sub-make, which detects the libraries just installed.
VENV_PY := $(CURDIR)/.venv/bin/python
test:
	@tools/setup.sh --venv
	@$(MAKE) --no-print-directory test-run
test-run: v3 tests/run_tests tools/replay
	V3_TB_PYTHON=$(VENV_PY) V3_ST_PYTHON=$(VENV_PY) ./tests/run_tests

# The README's main command: a real run on the CPU: generate the full-size PhoneNums set and its OOD set (FreeType,
# seconds each), train configs/phonenums-demo.yaml (width 64, K = 10, 2000 steps, about 11 min on 2 cores), then
# `v3 eval` of the final weights (metrics table, verdict, figures in runs/demo/eval/). --device cpu: the CUDA path
# has not yet been run on a GPU. DEMO_STEPS=N stops training earlier (a quick look; RESULTS.md's numbers are for
# the full run).
# OpenBLAS picks its SGEMM kernels by CPU model, and different kernels round differently, so a run is
# bit-reproducible only on the same kernel set (NOTES.md, "Reproducibility"). The demo pins the Haswell kernels
# (any x86-64 CPU with AVX2) and oneDNN's AVX2 convolutions (ONEDNN_MAX_CPU_ISA) so the README's output is what such
# machines print (oneDNN also blocks by cache size and thread count: NOTES.md, "Fast CPU backend"); DEMO_BLAS= leaves
# the choice to the libraries.
DEMO_STEPS ?=
DEMO_BLAS ?= $(if $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo y),Haswell)
DEMO_ENV = $(if $(DEMO_BLAS),OPENBLAS_CORETYPE=$(DEMO_BLAS) ONEDNN_MAX_CPU_ISA=AVX2)
demo:
	@tools/setup.sh
	@$(MAKE) --no-print-directory demo-run
demo-run: v3
	@[ -f data/phonenums/index.tsv ] || ./v3 data phonenums --out data/phonenums
	@[ -f data/phonenums-ood/index.tsv ] || ./v3 data phonenums --ood --out data/phonenums-ood
	rm -rf runs/demo
	$(DEMO_ENV) ./v3 train --config configs/phonenums-demo.yaml --out runs/demo --device cpu $(if $(DEMO_STEPS),--steps $(DEMO_STEPS))
	$(DEMO_ENV) ./v3 eval --run runs/demo --checkpoint runs/demo/checkpoints/latest.v3ck

# `make asan`: the test suite with AddressSanitizer and UBSan (gcc, CPU-only: CUDA's static runtime does not mix
# with ASan), built in a copy of the tree (build/asan/tree: the files git tracks or would track) so its objects
# and its ./v3 never mix with the normal build. Any ASan or UBSan report fails the run.
ASAN_OPT := -O2 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
asan:
	@tools/setup.sh --venv
	@mkdir -p build/asan/tree
	@find build/asan/tree -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
	@git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C build/asan/tree
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) --no-print-directory -C build/asan/tree test-run NVCC= OPT="$(ASAN_OPT)" VENV_PY=$(VENV_PY)

# tools/replay: our training step on a batch stream recorded from the authors' code (tools/authors_run.py).
tools/replay: build/tools/replay.o build/libv3.a
	$(SAY) LINK $@
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

test-gpu: tests/run_gpu_tests
	./tests/run_gpu_tests

bench: v3 $(BENCH_BIN)

bench/bench_%: build/bench/bench_%.o build/bench/bench_util.o build/libv3.a
	$(SAY) LINK $@
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# `make bench-cpu`: our CPU training step beside PyTorch's on the same model (issue 17), one table
# (tools/bench_cpu_table.py: s/step both sides, ratio PyTorch/v3, v3 GFLOP/s and its fraction of the SGEMM
# ceiling, v3 peak RSS) and JSON files in build/bench-cpu/ (<case>-v3.json, <case>-torch.json, summary.json).
# PyTorch runs tools/torch_reference.py's modules (bench/torch_step.py) from .venv-torch/, which tools/setup.sh
# --torch makes first (a download of several GB); TORCH_PY=/path/to/python uses that interpreter instead and
# skips the set-up. Never part of `make test` or CI. Timed steps: BENCH_CPU_STEPS (width 16),
# BENCH_CPU_STEPS_MID (width 64), BENCH_CPU_STEPS_BIG (the authors' widths); each side also runs warm-up steps.
# A case is NAME,CONFIG,SET,STEPS (SET: one KEY=VALUE or empty); BENCH_CPU_CASES can be given to run fewer.
TORCH_PY ?= .venv-torch/bin/python
BENCH_CPU_THREADS ?= 2
BENCH_CPU_STEPS ?= 20
BENCH_CPU_STEPS_MID ?= 10
BENCH_CPU_STEPS_BIG ?= 3
BENCH_CPU_DIR := build/bench-cpu
BENCH_CPU_CASES ?= phonenums-cpu-w16,configs/phonenums-cpu.yaml,,$(BENCH_CPU_STEPS) \
  phonenums-cpu-w64,configs/phonenums-cpu.yaml,model_config.n_channels=64,$(BENCH_CPU_STEPS_MID) \
  phonenums-w256,configs/phonenums.yaml,,$(BENCH_CPU_STEPS_BIG) \
  insnotes,configs/insnotes.yaml,,$(BENCH_CPU_STEPS_BIG)
bench-cpu:
	$(if $(filter file default,$(origin TORCH_PY)),@tools/setup.sh --torch,@tools/setup.sh)
	@$(MAKE) --no-print-directory bench-cpu-run
bench-cpu-run: v3
	@mkdir -p $(BENCH_CPU_DIR); failed=""; names=""; \
	for c in $(BENCH_CPU_CASES); do \
	  IFS=,; set -- $$c; unset IFS; name=$$1; cfg=$$2; setarg=$${3:+--set $$3}; n=$$4; names="$$names $$name"; \
	  rm -f $(BENCH_CPU_DIR)/$$name-v3.json $(BENCH_CPU_DIR)/$$name-torch.json; \
	  echo "bench-cpu: $$name: ./v3 bench step --config $$cfg $$setarg --device cpu --steps $$n --threads $(BENCH_CPU_THREADS)"; \
	  ./v3 bench step --config $$cfg $$setarg --device cpu --steps $$n --threads $(BENCH_CPU_THREADS) \
	    --json $(BENCH_CPU_DIR)/$$name-v3.json || failed="$$failed $$name(v3)"; \
	  echo "bench-cpu: $$name: $(TORCH_PY) bench/torch_step.py --config $$cfg $$setarg --steps $$n --threads $(BENCH_CPU_THREADS)"; \
	  $(TORCH_PY) bench/torch_step.py --config $$cfg $$setarg --steps $$n --threads $(BENCH_CPU_THREADS) \
	    --json $(BENCH_CPU_DIR)/$$name-torch.json || failed="$$failed $$name(pytorch)"; \
	done; \
	python3 tools/bench_cpu_table.py $(BENCH_CPU_DIR) $$names; \
	if [ -n "$$failed" ]; then echo "bench-cpu: failed:$$failed" >&2; exit 1; fi

# bench_ops times the op-by-op cases of tests/backend_cases.c (the ones test_backend_ops checks).
bench/bench_ops: build/bench/bench_ops.o build/bench/bench_util.o $(BO_OBJ) build/libv3.a
	$(SAY) LINK $@
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
build/bench/bench_ops.o: tests/backend_cases.h

clean:
	rm -rf build v3 tests/run_tests tests/run_gpu_tests tools/replay $(BENCH_BIN)

print-config:
	@echo "CC=$(CC) NVCC=$(NVCC) CUDA_HOME=$(CUDA_HOME) HAVE_CUDA=$(HAVE_CUDA)"
	@echo "GEN_PKGS=$(GEN_PKGS) PLOT_PKGS=$(PLOT_PKGS)"
	@echo "CFLAGS=$(CFLAGS)"
	@echo "LDLIBS=$(LDLIBS)"

.PHONY: all banner test test-run test-gpu demo demo-run asan bench bench-cpu bench-cpu-run clean print-config fuzz fuzz-run

# ---- fuzzing (issue 15): `make fuzz [FUZZ_SECONDS=N]` --------------------------------------------------------
# Builds the libFuzzer harnesses tests/fuzz/fuzz_<name>.c (one per parser: config files and --set, checkpoints,
# safetensors, .v3ds, InsNotes bank and index, PhoneNums index and pages) with ASan + UBSan into build/fuzz/, then
# runs each for FUZZ_SECONDS seconds, one at a time, on a copy of its seed corpus tests/fuzz/corpus/<name>/ (the
# committed corpus is never written). Crash inputs go to build/fuzz/artifacts/, logs to build/fuzz/<name>.log;
# any crash, leak or UBSan report fails the target. Needs, besides the build dependencies above, the Debian
# packages clang and libclang-rt-dev, which tools/setup.sh --clang installs (libFuzzer and the sanitizer runtimes). CPU-only (kernels/cuda_stub.c);
# OpenMP is left out (clang's needs libomp-dev), so the parallel loops run on one thread; libgomp is linked for
# the OpenMP build of OpenBLAS.
CLANG        ?= clang
FUZZ_SECONDS ?= 30
FUZZ_DIR     := build/fuzz
FUZZ_NAMES   := $(sort $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_LIB_C   := $(filter-out kernels/cuda_stub.c,$(LIB_C)) kernels/cuda_stub.c
FUZZ_CFLAGS  := $(filter-out -fopenmp -DV3_HAVE_CUDA=1 -I$(CUDA_HOME)/include,$(CFLAGS)) -Wno-source-uses-openmp \
                -fno-sanitize-recover=all
FUZZ_LDLIBS  := $(filter-out -fopenmp -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++,$(LDLIBS)) -lz -ldl -lgomp
FUZZ_LIB     := $(FUZZ_DIR)/libv3.a
# The index harnesses stub the loaders that other harnesses fuzz (pages, note bank); see their sources.
FUZZ_LDFLAGS_phonenums_index := -Wl,--wrap=png_read_rgb
FUZZ_LDFLAGS_insnotes_index  := -Wl,--wrap=insnotes_bank_load

$(FUZZ_DIR)/obj/%.o: %.c $(wildcard include/*.h)
	@mkdir -p $(dir $@)
	$(SAY) CLANG $<
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

$(FUZZ_LIB): $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(FUZZ_LIB_C))
	@rm -f $@
	$(SAY) AR $@
	$(Q)ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(FUZZ_LIB)
	$(SAY) LINK $@
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $< $(FUZZ_LIB) -o $@ $(FUZZ_LDFLAGS_$*) $(FUZZ_LDLIBS)

fuzz:
	@tools/setup.sh --clang
	@$(MAKE) --no-print-directory fuzz-run
fuzz-run: $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_NAMES))
	@rm -rf $(FUZZ_DIR)/corpus-run $(FUZZ_DIR)/artifacts; mkdir -p $(FUZZ_DIR)/artifacts; total=0; failed=""; \
	for n in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/corpus-run/$$n; cp -R tests/fuzz/corpus/$$n/. $(FUZZ_DIR)/corpus-run/$$n/; \
	  dict=""; [ -f tests/fuzz/$$n.dict ] && dict="-dict=tests/fuzz/$$n.dict"; \
	  $(FUZZ_DIR)/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -timeout=30 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$n- \
	    $$dict $(FUZZ_DIR)/corpus-run/$$n > $(FUZZ_DIR)/$$n.log 2>&1; rc=$$?; \
	  runs=$$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' $(FUZZ_DIR)/$$n.log | tail -n 1); \
	  if [ $$rc -eq 0 ] && [ -n "$$runs" ]; then \
	    printf 'fuzz %-18s %10s executions in %s s: ok\n' $$n $$runs $(FUZZ_SECONDS); total=$$((total + runs)); \
	  else \
	    printf 'fuzz %-18s FAILED (exit %s), see %s/%s.log and %s/artifacts/:\n' $$n $$rc $(FUZZ_DIR) $$n $(FUZZ_DIR); \
	    grep -m 3 -E 'ERROR|SUMMARY|runtime error' $(FUZZ_DIR)/$$n.log; failed="$$failed $$n"; \
	  fi; \
	done; \
	echo "fuzz total: $$total executions ($(words $(FUZZ_NAMES)) fuzzers x $(FUZZ_SECONDS) s)"; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed"; exit 1; fi
