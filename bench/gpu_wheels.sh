#!/usr/bin/env bash
# Wheels that bench/gpu_scorer_8b.py needs on the GPU machine beyond its image (which has torch,
# numpy, pillow, opencv, pyyaml, httpx, anyio and an older transformers): the pinned transformers
# and its hub client, and `transformers serve`'s fastapi / uvicorn / openai. Versions are read from
# the Python 3.12 lock file (that machine runs Python 3.12). Saved to .whl/ (git-ignored).
#
#   bash bench/gpu_wheels.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements/lock-py312.txt
NAMES="transformers tokenizers huggingface_hub hf-xet httpx2 httpcore2 truststore safetensors typer fastapi starlette uvicorn openai pydantic pydantic_core
annotated-types annotated-doc opentelemetry-api typing-inspection jiter sniffio h11 click"
specs=()
for name in $NAMES; do
  pin=$(grep -i -E "^${name//[-_]/[-_]}==" "$LOCK" | head -1 || true)
  [ -n "$pin" ] || { echo "no pin for $name in $LOCK" >&2; exit 1; }
  specs+=("${pin%%;*}")
done
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${specs[@]}"
ls .whl
