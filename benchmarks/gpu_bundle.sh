#!/usr/bin/env bash
# bash benchmarks/gpu_bundle.sh        (here, where PyPI is reachable; then benchmarks/gpu_session.sh runs there)
#
# Writes .gpu_bundle/ (git-ignored): what a bare GPU machine lacks to run the CUDA tests and benchmarks/gpu.py.
# Its image has python3 3.12 with CUDA torch, transformers, tokenizers, numpy, pandas, pyarrow, matplotlib and
# pytest, but no Ray, MLflow or Optuna, and nothing can be fetched there. So: the cp312 wheels of the packages
# below (the project's pins; each missing from that image, by /work/.library/device/KINDS.md), installed here
# into one folder for Python 3.12, trimmed of what a sweep never imports (Ray's Java jars, RLlib, Serve, LLM and
# dashboard web client; MLflow's web UI), xz-packed: Ray's wheel alone is 79 MB, over the 64 MiB a device call
# carries. And the data the benchmark and tests read: wikitext-2's test split and the GPT-2 tokenizer (~4 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${GPTSWEEP_DATA_DIR:-../shared/data}
BUNDLE=.gpu_bundle
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
PACKAGES=(
  ray==2.60.0 optuna==5.0.0 mlflow==3.17.2 mlflow-skinny==3.17.2 mlflow-tracing==3.17.2
  alembic==1.20.1 annotated-types==0.8.0 blinker==1.9.0 cachetools==7.3.3 cffi==2.1.1 colorlog==6.12.0
  cryptography==50.0.2 databricks-sdk==0.162.0 docker==7.2.0 fastapi==0.165.0 flask==3.1.3 flask-cors==6.0.5
  gitdb==4.0.12 gitpython==3.2.1 google-auth==2.63.0 graphene==3.4.3 graphql-core==3.2.14 graphql-relay==3.2.0
  gunicorn==26.2.0 httpcore2==2.16.2 httpx2==2.16.2 huey==3.5.4 importlib-metadata==9.1.0 itsdangerous==2.2.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 mako==1.4.3 opentelemetry-api==1.45.2
  opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2
  prettytable==3.18.0 pyasn1==0.6.5 pyasn1-modules==0.4.2 pycparser==3.12 pydantic==2.14.4 pydantic-core==2.50.5
  python-dotenv==1.2.4 referencing==0.37.0 rpds-py==2026.9.1 skops==0.16.0 smmap==5.0.3 sqlalchemy==2.1.9
  sqlparse==0.6.1 starlette==1.10.0 tensorboardx==2.6.5 truststore==0.10.5 typing-inspection==0.4.5
  uvicorn==0.54.0 wcwidth==0.9.4
)
"$PY" -m pip install -q --no-deps --no-compile --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --target "$SITE" "${PACKAGES[@]}"
rm -rf "$SITE"/ray/jars "$SITE"/ray/rllib "$SITE"/ray/serve "$SITE"/ray/llm "$SITE"/ray/dashboard/client \
  "$SITE"/mlflow/server/js "$SITE"/bin
find "$SITE" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/data"
tar -C "$SITE" -cf - . | xz -T2 -6 > "$BUNDLE/site.tar.xz"
cp -r "$DATA/wikitext-2" "$DATA/gpt2_tokenizer" "$BUNDLE/data/"
du -sh "$BUNDLE" "$BUNDLE"/*
