# cmsdl images, two targets from one build (Ubuntu 24.04's python3 in both):
#   training (the default): CUDA runtime, torch/Lightning and the train, k8s and remote extras
#     docker build -t registry.example.org/cms/cmsdl:0.1.0 .
#     docker run --gpus all registry.example.org/cms/cmsdl:0.1.0 train experiment=workflow_actions trainer=gpu
#   inference: no CUDA, no torch (the base install and the parquet extra): predict, serve, hits2png, the simulators
#     docker build --target inference -t registry.example.org/cms/cmsdl-inference:0.1.0 .
#     docker run -p 8083:8083 -v $PWD/models:/models registry.example.org/cms/cmsdl-inference:0.1.0 \
#       serve models=/models host=0.0.0.0 port=8083
# Kubernetes pods (cmsdl k8s, k8s/) run `torchrun ... -m cmsdl.cli train ...` in the training image as user 1000.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG INFERENCE_IMAGE=ubuntu:24.04

# Dependencies in their own stages: rebuilt only when pyproject.toml changes, not on every code change.
FROM ${INFERENCE_IMAGE} AS base-dependencies
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/cmsdl \
    PATH=/opt/cmsdl/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/cmsdl
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

FROM base-dependencies AS training-dependencies
# an extra package index, e.g. https://download.pytorch.org/whl/cu126 for torch built against another CUDA
ARG TORCH_INDEX_URL=""
ARG TRAINING_EXTRAS=train,k8s,remote
RUN python -c "import sys, tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print('\n'.join(d for e in sys.argv[1].split(',') for d in extras[e]))" \
        "$TRAINING_EXTRAS" > /tmp/requirements-training.txt \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url $TORCH_INDEX_URL} -r /tmp/requirements-training.txt

FROM base-dependencies AS inference-dependencies
# parquet: `cmsdl predict format=parquet`; no torch
ARG INFERENCE_EXTRAS=parquet
RUN python -c "import sys, tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print('\n'.join(d for e in sys.argv[1].split(',') for d in extras[e]))" \
        "$INFERENCE_EXTRAS" > /tmp/requirements-inference.txt \
    && pip install -r /tmp/requirements-inference.txt

# The package itself, built once (configs and the Hydra launcher plugin ship inside it).
FROM base-dependencies AS wheel
COPY README.md ./
COPY cmsdl ./cmsdl
COPY configs ./configs
COPY hydra_plugins ./hydra_plugins
RUN pip wheel --no-deps -w /wheels .

FROM ${INFERENCE_IMAGE} AS inference
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/cmsdl \
    PATH=/opt/cmsdl/bin:$PATH
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=inference-dependencies /opt/cmsdl /opt/cmsdl
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/cmsdl-*.whl && rm -rf /wheels
# Non-root: uid 1000 as in the pods' securityContext (Ubuntu's own `ubuntu` user is removed to free the uid).
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin cmsdl
USER 1000:1000
WORKDIR /home/cmsdl
EXPOSE 8083
ENTRYPOINT ["cmsdl"]
CMD ["--help"]

FROM ${CUDA_IMAGE} AS training
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/cmsdl \
    PATH=/opt/cmsdl/bin:$PATH
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=training-dependencies /opt/cmsdl /opt/cmsdl
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/cmsdl-*.whl && rm -rf /wheels
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin cmsdl
USER 1000:1000
WORKDIR /home/cmsdl
ENTRYPOINT ["cmsdl"]
CMD ["--help"]
