#!/usr/bin/env bash
# Every GPU figure issue 7 asks for, in three steps of under 10 minutes each on one H100/H200:
#   bash benchmarks/gpu_figures.sh tests     # the suite's CUDA-capable tests, on the GPU
#   bash benchmarks/gpu_figures.sh speed     # Tiny-ImageNet and CIFAR-10 LIPS: full-size rounds
#                                            # (projected run time, TFLOP/s, peak memory), fp32
#                                            # and bf16, and the ratio against the reference-style
#                                            # loop at 20 clients (the loop is slow)
#   bash benchmarks/gpu_figures.sh scale     # the largest ResNet8 client count in one chunk
# Logs go to $OUT (the device tool's folder) or ./gpu-figures. PYTHON picks the interpreter.
set -uo pipefail
step=${1:?usage: gpu_figures.sh tests|speed|scale}
out=${OUT:-gpu-figures}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
bench() { "$py" benchmarks/bench.py "$@"; }
case "$step" in
tests)
    "$py" -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/tests.log"
    ;;
speed)
    for preset in tinyimagenet_lips cifar10_lips; do
        for autocast in none bf16; do
            bench "presets/$preset.yaml" --rounds 3 --repeats 3 --no-reference \
                --set "engine.autocast=$autocast" --json 2>&1 | tee "$out/$preset-$autocast.log"
        done
        bench "presets/$preset.yaml" --rounds 1 --repeats 3 --clients 20 --json 2>&1 \
            | tee "$out/$preset-ratio.log"
    done
    ;;
scale)
    "$py" benchmarks/max_clients.py presets/cifar100_fedbn.yaml --start 250 --limit 8000 \
        --json 2>&1 | tee "$out/max-clients-resnet8.log"
    ;;
*)
    echo "unknown step: $step (tests, speed or scale)" >&2
    exit 2
    ;;
esac
