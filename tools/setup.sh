#!/usr/bin/env bash
# All the set-up `make demo`, `make test`, `make fuzz` and CI need, in one place; idempotent and quiet (it prints
# only what it installs). Debian 12 / Ubuntu. Usage: tools/setup.sh [--venv] [--clang]
#   (no option)  the Debian packages below (build, datasets, figures): what `make demo` needs
#   --venv       also .venv/ with tensorboard, safetensors and numpy from PyPI: the two tests that check our
#                TensorBoard and safetensors files with those packages' own readers (`make test`)
#   --clang      also clang and its libFuzzer runtime (`make fuzz`)
# Without root it prints the exact apt-get line to run and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build and training: compiler, OpenBLAS, libyaml, FFTW (CPU STFT), libpng (PhoneNums pages).
# Datasets: FluidSynth with the small TimGM6mb General-MIDI soundfont, libsndfile, FreeType with Comic Neue.
# Figures: cairo and a sans-serif font for labels. The venv for the tests: python3-venv.
pkgs=(build-essential pkg-config libopenblas-dev libyaml-dev libfftw3-dev libpng-dev
      libfluidsynth-dev timgm6mb-soundfont libsndfile1-dev libfreetype-dev fonts-comic-neue
      libcairo2-dev fonts-dejavu-core python3 python3-venv)
venv=0
for a in "$@"; do
  case "$a" in
    --venv) venv=1 ;;
    --clang) pkgs+=(clang libclang-rt-dev) ;;
    *) echo "tools/setup.sh: unknown option '$a' (expected --venv or --clang)" >&2; exit 2 ;;
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

if [ "$venv" = 1 ]; then
  # The stamp records a venv that imported all three packages once; checking imports every time costs seconds.
  stamp=.venv/.v3-setup-ok
  if [ ! -f "$stamp" ] || [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with tensorboard, safetensors and numpy from PyPI (for two tests)"
    mkdir -p build
    if ! { python3 -m venv .venv &&
           .venv/bin/pip install -q --disable-pip-version-check tensorboard safetensors numpy &&
           .venv/bin/python -c "import tensorboard, safetensors.numpy, numpy"; } >build/setup-venv.log 2>&1; then
      tail -n 20 build/setup-venv.log >&2
      echo "setup: could not make .venv (PyPI unreachable?); full log: build/setup-venv.log" >&2
      exit 1
    fi
    touch "$stamp"
  fi
fi
