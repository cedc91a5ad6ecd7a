#!/usr/bin/env bash
# All the set-up `make demo`, `make test`, `make fuzz` and CI need, in one place; idempotent and quiet (it prints
# only what it installs). Debian 12 / Ubuntu. Usage: tools/setup.sh [--venv] [--torch] [--clang]
#   (no option)  the Debian packages below (build, datasets, figures): what `make demo` needs
#   --venv       also .venv/ with tensorboard, safetensors and numpy from PyPI: the two tests that check our
#                TensorBoard and safetensors files with those packages' own readers (`make test`)
#   --torch      also .venv-torch/ with torch, numpy and pyyaml from PyPI (a large download, several GB): only for
#                `make bench-cpu` (bench/torch_step.py); never needed by `make test` or CI
#   --clang      also clang and its libFuzzer runtime (`make fuzz`)
# Without root it prints the exact apt-get line to run and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build and training: compiler, OpenBLAS, oneDNN (the cpu backend's convolutions), libyaml, FFTW (CPU STFT), libpng
# (PhoneNums pages).
# Datasets: FluidSynth with the small TimGM6mb General-MIDI soundfont, libsndfile, FreeType with Comic Neue.
# Figures: cairo and a sans-serif font for labels. The venv for the tests: python3-venv.
pkgs=(build-essential pkg-config libopenblas-openmp-dev libdnnl-dev libyaml-dev libfftw3-dev libpng-dev
      libfluidsynth-dev timgm6mb-soundfont libsndfile1-dev libfreetype-dev fonts-comic-neue
      libcairo2-dev fonts-dejavu-core python3 python3-venv)
venv=0
torch=0
for a in "$@"; do
  case "$a" in
    --venv) venv=1 ;;
    --torch) torch=1 ;;
    --clang) pkgs+=(clang libclang-rt-dev) ;;
    *) echo "tools/setup.sh: unknown option '$a' (expected --venv, --torch or --clang)" >&2; exit 2 ;;
  esac
done

if command -v dpkg >/dev/null 2>&1; then
  need=()
  for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    line="apt-get install -y --no-install-recommends ${need[*]}"
    if [ "$(id -u)" != 0 ]; then
      echo "setup: missing Debian packages; run as root:  apt-get update && $line" >&2
      exit 1
    fi
    mkdir -p build
    echo "setup: installing ${#need[@]} Debian packages: ${need[*]} (log: build/setup-apt.log)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive $line -qq; } >build/setup-apt.log 2>&1; then
      tail -n 20 build/setup-apt.log >&2
      echo "setup: '$line' failed (full log: build/setup-apt.log)" >&2
      exit 1
    fi
  fi
else
  echo "setup: no dpkg here (not Debian/Ubuntu): install the equivalents of: ${pkgs[*]}" >&2
fi

# make_venv DIR LOG IMPORTS WHAT PACKAGE...: DIR/ made with python3 -m venv and PACKAGE... from PyPI, once. The stamp
# records a venv that imported IMPORTS once; checking imports every time costs seconds.
make_venv() {
  local dir=$1 log=$2 imports=$3 what=$4
  shift 4
  if [ -f "$dir/.v3-setup-ok" ] && [ -x "$dir/bin/python" ]; then return 0; fi
  echo "setup: creating $dir with $what (log: $log)"
  mkdir -p build
  if ! { python3 -m venv "$dir" &&
         "$dir/bin/pip" install -q --disable-pip-version-check "$@" &&
         "$dir/bin/python" -c "import $imports"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "setup: could not make $dir (PyPI unreachable?); full log: $log" >&2
    exit 1
  fi
  touch "$dir/.v3-setup-ok"
}

if [ "$venv" = 1 ]; then
  make_venv .venv build/setup-venv.log "tensorboard, safetensors.numpy, numpy" \
    "tensorboard, safetensors and numpy from PyPI (for two tests)" tensorboard safetensors numpy
fi
if [ "$torch" = 1 ]; then
  make_venv .venv-torch build/setup-torch.log "torch, numpy, yaml" \
    "torch, numpy and pyyaml from PyPI (for make bench-cpu; a download of several GB)" torch numpy pyyaml
fi
