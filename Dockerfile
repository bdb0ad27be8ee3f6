# cmsdl training image: CUDA runtime, cmsdl and its dependencies, a non-root user, `cmsdl` as entrypoint.
#   docker build -t registry.example.org/cms/cmsdl:0.1.0 .
#   docker run --gpus all registry.example.org/cms/cmsdl:0.1.0 train experiment=workflow_actions trainer=gpu
# Kubernetes pods (cmsdl k8s, k8s/) run `torchrun ... -m cmsdl.cli train ...` in it as user 1000.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# an extra package index, e.g. https://download.pytorch.org/whl/cu126 for torch built against another CUDA
ARG TORCH_INDEX_URL=""
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/cmsdl \
    PATH=/opt/cmsdl/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/cmsdl

WORKDIR /src

# Dependencies in their own layer: rebuilt only when pyproject.toml changes, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url $TORCH_INDEX_URL} -r /tmp/requirements.txt

# The package itself (configs and the Hydra launcher plugin ship inside it); dependencies are already there.
COPY README.md ./
COPY cmsdl ./cmsdl
COPY configs ./configs
COPY hydra_plugins ./hydra_plugins
RUN pip install --no-deps . && rm -rf /src

# Non-root: uid 1000 as in the pods' securityContext (Ubuntu's own `ubuntu` user is removed to free the uid).
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin cmsdl
USER 1000:1000
WORKDIR /home/cmsdl
ENTRYPOINT ["cmsdl"]
CMD ["--help"]
