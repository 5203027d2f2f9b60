# osteoscreen as a MONAI Application Package (MAP), built without the packager.
#
# The layout, manifests and variables are those `monai-deploy package` (holoscan-cli 4.2.0)
# writes, so the image runs wherever a MAP runs (MONAI Deploy Workflow Manager, Argo, docker):
#   /opt/holoscan/app        apps/map (__main__.py, requirements.txt): `python3 /opt/holoscan/app`
#   /opt/holoscan/models     the four model bundles (HOLOSCAN_MODEL_PATH)
#   /etc/holoscan/app.json   application manifest (deploy/app.json)
#   /etc/holoscan/pkg.json   package manifest (deploy/pkg.json; resources from app.yaml)
#   /var/holoscan/app.yaml   the application configuration (HOLOSCAN_CONFIG_PATH)
#   /var/holoscan/input, /var/holoscan/output   where the study is mounted and results go
# Differences from the packager's image: a Debian base without CUDA by default, a virtual
# environment in /opt/venv instead of pip --user, and an entry point that raises the stack
# limit and then runs app.json's command (deploy/entrypoint.sh) instead of /var/holoscan/tools.
#
# Build (see README "Package as a MAP"; `make map` does this where no registry is reachable):
#   CPU:  docker build -t osteoscreen-map:0.1.0 .
#   GPU:  docker build --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04 \
#           --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 -t osteoscreen-map:0.1.0-cuda .
# Run:    docker run --rm -v STUDY:/var/holoscan/input:ro -v OUT:/var/holoscan/output osteoscreen-map:0.1.0

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
# python3 with venv: the local debootstrap base has it; debian/ubuntu/CUDA images get it here.
RUN if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# ---------------------------------------------------------------------------------------------
FROM base AS builder
# Where torch comes from. The CPU index by default (PyPI's torch is a multi-GB CUDA build);
# an empty value means "the torch wheel in EXTRA_DIR" (make map, where that index is unreachable);
# torch's own dependencies come from PyPI either way.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# Optional extra inputs: *.whl files for --find-links, and ca.crt, a CA bundle pip should trust
# (hosts behind a TLS-inspecting proxy). deploy/extra is empty but for its README.
ARG EXTRA_DIR=deploy/extra
COPY ${EXTRA_DIR}/ /tmp/extra/
# README.md is pyproject's readme; a stub keeps README edits from rebuilding the environment.
COPY pyproject.toml constraints.txt /tmp/src/
COPY src /tmp/src/src
RUN set -eu; \
    echo "# osteoscreen" >/tmp/src/README.md; \
    if [ -f /tmp/extra/ca.crt ]; then export PIP_CERT=/tmp/extra/ca.crt; fi; \
    export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1; \
    python3 -m venv /opt/venv; \
    if [ -n "${TORCH_INDEX_URL}" ]; then \
        /opt/venv/bin/pip install --quiet --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
            "torch==${TORCH_VERSION}"; \
    else \
        /opt/venv/bin/pip install --quiet /tmp/extra/torch-"${TORCH_VERSION}"*.whl; \
    fi; \
    /opt/venv/bin/pip install --quiet --find-links /tmp/extra -c /tmp/src/constraints.txt "/tmp/src[deploy]"; \
    cudart=$(echo /opt/venv/lib/python3*/site-packages/nvidia/cu13/lib); \
    test -e "${cudart}/libcudart.so.13"; \
    ln -s "${cudart}" /opt/venv/cuda-lib; \
    find /opt/venv -name __pycache__ -prune -exec rm -rf {} +; \
    /opt/venv/bin/python -c "import osteoscreen, monai.deploy.core, torch; print('torch', torch.__version__)"

# ---------------------------------------------------------------------------------------------
# The application, manifests and models, assembled here so that the release stage copies them
# in one step (with the vfs storage driver every step of a large image costs a full copy).
FROM base AS files
ARG MODELS_DIR=models
COPY ${MODELS_DIR}/ /out/opt/holoscan/models/
COPY apps/map/ /out/opt/holoscan/app/
COPY deploy/app.json deploy/pkg.json /out/etc/holoscan/
COPY app.yaml /out/var/holoscan/app.yaml
COPY README.md /out/opt/holoscan/docs/README.md
COPY deploy/entrypoint.sh /out/opt/holoscan/bin/entrypoint
# Fail the build, not the first study, when a bundle is missing.
RUN for m in vbnet_coarse vbnet_fine densenet_classifier densenet_regressor; do \
        test -f /out/opt/holoscan/models/$m/models/model.ts \
            || { echo "model bundle $m missing from ${MODELS_DIR}" >&2; exit 1; }; \
    done \
    && find /out -name __pycache__ -prune -exec rm -rf {} + \
    && chmod -R a+rX /out && chmod 0755 /out/opt/holoscan/bin/entrypoint

# ---------------------------------------------------------------------------------------------
FROM base AS release
ARG UNAME=holoscan
ARG UID=1000
ARG GID=1000

LABEL org.opencontainers.image.title="osteoscreen" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Opportunistic osteoporosis screening from routine CT (MONAI Application Package)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.monai.deploy.app-sdk="4.0.0" \
      org.nvidia.holoscan="4.6.0"

ENV HOLOSCAN_APPLICATION=/opt/holoscan/app \
    HOLOSCAN_INPUT_PATH=/var/holoscan/input \
    HOLOSCAN_OUTPUT_PATH=/var/holoscan/output \
    HOLOSCAN_WORKDIR=/var/holoscan \
    HOLOSCAN_MODEL_PATH=/opt/holoscan/models \
    HOLOSCAN_CONFIG_PATH=/var/holoscan/app.yaml \
    HOLOSCAN_APP_MANIFEST_PATH=/etc/holoscan/app.json \
    HOLOSCAN_PKG_MANIFEST_PATH=/etc/holoscan/pkg.json \
    HOLOSCAN_DOCS_PATH=/opt/holoscan/docs \
    HOLOSCAN_LOGS_PATH=/var/holoscan/logs \
    HOLOSCAN_TIMEOUT=0 \
    HOLOSCAN_VERSION=4.6.0 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/opt/venv/cuda-lib \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd -f -g ${GID} ${UNAME} \
    && useradd -m -d /home/${UNAME} -s /bin/bash -g ${GID} -u ${UID} ${UNAME} \
    && mkdir -p /etc/holoscan /opt/holoscan/app /opt/holoscan/models /opt/holoscan/docs \
        /var/holoscan/input /var/holoscan/output /var/holoscan/logs \
    && chown ${UNAME}:${UNAME} /var/holoscan/input /var/holoscan/output /var/holoscan/logs

# Metadata before the big copies: with vfs each later step would copy the whole image again.
WORKDIR /var/holoscan
USER ${UNAME}
ENTRYPOINT ["/opt/holoscan/bin/entrypoint"]

COPY --from=builder /opt/venv /opt/venv
# /opt/holoscan/{app,models,bin,docs}, /etc/holoscan/{app,pkg}.json, /var/holoscan/app.yaml
COPY --from=files /out/ /
