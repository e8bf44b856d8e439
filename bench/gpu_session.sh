#!/usr/bin/env bash
# The checks that need a GPU, as one prepared command for a lent device machine (its image has PyTorch with CUDA,
# pytest, numpy, scipy, xarray, h5py, ...; it lacks three pure-Python packages the core needs, carried as wheels):
#
#   make gpu-wheels                                  # here, once: h5netcdf, param, platformdirs into .whl/
#   device run: bash bench/gpu_session.sh            # with carry [".whl"], timeout_s 600
#
# It runs the GPU tests (`pytest -m gpu`: rounding bit-identical and training matching the CPU there) and times the
# resolution_shift claim's full-settings trainings on the GPU (bench/estimate_resolution_shift.py), each under a
# limit of its own so that one hanging leaves the other's output; the logs land in $OUT (or /tmp/gpu-session).
# Record what they say in bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-session}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "no wheels in .whl/: run 'make gpu-wheels' first and carry .whl"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/pytest-gpu.log"
timeout 300 python3 bench/estimate_resolution_shift.py --device cuda 2>&1 | tee "$out/estimate_resolution_shift.log"
