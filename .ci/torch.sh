#!/usr/bin/env bash
# CI, second step: the PyTorch extra. Tests of fastanchor.torch and of its YOLOv5 and torchvision
# adapters against the real frameworks (marker `torch`), in a virtual environment of their own:
# CPU builds of torch/torchvision and yolov5 add about 1 GB to install, and the framework tests
# train real detectors on the CPU for a few minutes, so they stay out of the main step, where they
# skip cleanly (`pytest.importorskip`).
#
#   .ci/torch.sh            # from a clone; PYTHON=python3.11 to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=$(mktemp -d)/venv
"$PY" -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --upgrade pip

echo "::group::install torch, torchvision, yolov5 and fastanchor with the test and torch extras"
# The pinned versions are those the tests were written against. yolov5 7.0 imports pkg_resources,
# which setuptools 81 removed.
pip install "torch==2.14.1" "torchvision==0.29.1" "yolov5==7.0.14" "setuptools<81"
pip install ".[test,torch]"
python -c "import torch, torchvision, yolov5; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "::endgroup::"

echo "::group::the torch-marked tests"
python -m pytest -m torch -ra
echo "::endgroup::"
