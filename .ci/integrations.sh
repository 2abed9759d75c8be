#!/usr/bin/env bash
# CI step: fastanchor inside the real frameworks. Creates its own virtual environment, installs the
# pinned frameworks, installs fastanchor, and runs the integration tests (tests/test_integrations*.py:
# every test there, the ones marked `integration` included). Fails if a framework does not import,
# so that no integration test can pass by being skipped.
#
#   .ci/integrations.sh            # PYTHON=python3.11 to choose the interpreter
#
# Pinned: torch 2.14.1 + torchvision 0.29.1 (CPU is enough), yolov5 7.0.14 (with setuptools < 81:
# it imports pkg_resources), mmengine 0.10.7, and the pure-Python wheels of mmdet 3.3.0 and
# mmyolo 0.6.0 without their dependencies: the tests read their configs and tool sources through
# mmengine; importing mmdet's models needs mmcv's compiled ops, which are not installed here.
# opencv-python < 5 for its darknet reader, and tensorflow-object-detection-api 0.1.1 for the TF
# Object Detection API's protos.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WORK=$(mktemp -d)
VENV=$WORK/venv
"$PY" -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
start=$(date +%s)

echo "::group::install the frameworks"
pip install -q "torch==2.14.1" "torchvision==0.29.1"
pip install -q "yolov5==7.0.14" "setuptools<81" "mmengine==0.10.7" "opencv-python<5"  # OpenCV 5 has no darknet reader
pip install -q --no-deps "mmdet==3.3.0" "mmyolo==0.6.0"
# the TF Object Detection API's generated protos, to parse the written pipeline configs (no TensorFlow)
pip install -q protobuf
pip install -q --no-deps "tensorflow-object-detection-api==0.1.1"
echo "::endgroup::"

echo "::group::install fastanchor with its test and integration extras"
pip install -q ".[test,yolov5,torchvision,mmdet]"
echo "::endgroup::"

echo "::group::the frameworks import"
python - <<'PY'
import warnings
warnings.simplefilter("ignore")
import torch, torchvision, yolov5, mmengine, cv2  # noqa: E401
import importlib.util
assert hasattr(cv2.dnn, "readNetFromDarknet"), cv2.__version__
for name in ("mmdet", "mmyolo"):
    assert importlib.util.find_spec(name) is not None, name
print("torch", torch.__version__, "torchvision", torchvision.__version__, "mmengine", mmengine.__version__)
PY
echo "::endgroup::"

echo "::group::integration tests"
# the sources live in python/, which is not on sys.path: the installed fastanchor is tested
python -c "import fastanchor, sys; assert 'site-packages' in fastanchor.__file__, fastanchor.__file__"
# the 2019 generated protos load only with protobuf's pure-Python implementation
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python python -m pytest -q -rs -p no:cacheprovider tests/test_integrations_*.py
echo "::endgroup::"
echo "integrations: $(( $(date +%s) - start )) s (installs included)"
