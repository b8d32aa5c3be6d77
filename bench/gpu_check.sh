#!/usr/bin/env bash
# GPU check (under 5 minutes): install, then the ceiling and the service bench on the GPU; prints
# the table and writes bench/out/gpu_report.json. Run from anywhere: bench/gpu_check.sh [SAMPLES]
# On a machine without network access, put wheels for the missing packages in .whl/ first.
set -euo pipefail
cd "$(dirname "$0")/.."
samples="${1:-tests/fixtures/xrays}"
python=python3
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/pneumoscan-site .whl/*.whl
    export PYTHONPATH="/tmp/pneumoscan-site:$PWD"
elif [ -x .venv/bin/python ] || make install >/dev/null; then
    python=.venv/bin/python
fi
if ! "$python" -c "import tensorflow as tf; assert tf.config.list_physical_devices('GPU')" 2>/dev/null; then
    export KERAS_BACKEND=jax   # no GPU TensorFlow here: run the same model through Keras on JAX
fi
export PNEUMOSCAN_USE_GPU=true    # one model process asks BentoML for the GPU; HTTP workers batch in front of it
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # several processes may share the card under JAX
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$python" -m bench.gpu --samples "$samples"
