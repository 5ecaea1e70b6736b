# The service image: TorchServe + the handler, the model store and config at KServe's layout
# (/mnt/models/config/config.properties, /mnt/models/model-store/{mnist,number}.mar). `make image` builds
# it, `make image-test` runs it; README "Deploy" has the run commands (CPU and `--gpus all`).
# BASE_IMAGE: any Debian bookworm; `make image` passes a local debootstrap one where nothing can be pulled.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Python 3.11 and Java 17 from Debian; ca-certificates keeps any CA the base added under
# /usr/local/share/ca-certificates (a proxy's, for pip during the build); procps for `kill`,
# which TorchServe's frontend runs to stop a worker when scaling down.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv openjdk-17-jre-headless ca-certificates procps \
 && rm -rf /var/lib/apt/lists/*

# torch from PyPI is the CUDA build: the same image serves on CPU and with `--gpus all`.
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements-serve.txt /opt/mnist/
RUN python3 -m venv /opt/venv && pip install -r /opt/mnist/requirements-serve.txt

# Code and configs that serving needs, read-only and owned by root.
WORKDIR /opt/mnist
COPY model/ model/
COPY handler/ handler/
COPY ops/ ops/
# The key file's reader (mnist_digit_client.read_keys) for ops.tsctl: the HEALTHCHECK's key. Only
# the package's source, put on PYTHONPATH below rather than pip-installed: nothing to build, and its
# one dependency (requests) is in requirements-serve.txt already.
COPY client/src/ client/src/
# VERSION: the release (the archive's version); log4j2-console.xml becomes the layout's log4j2.xml:
# every log on stdout, JSON lines with `-e LOG_FORMAT=json` (docs/deploy.md).
COPY config.properties model-config.yaml log4j2-console.xml VERSION LICENSE NOTICE ./
RUN python -m ops.model_layout --flavor image --out /mnt/models --mount /mnt/models \
 && useradd --uid 1000 --home-dir /srv serve && chown serve:serve /srv

# The release (the VERSION file; ops/image.py passes it and tags the image with it and `latest`).
ARG VERSION=dev
LABEL org.opencontainers.image.title="mnist-serve" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# TorchServe writes key_file.json, logs/ and its effective config in its working folder.
USER 1000
WORKDIR /srv
ENV PYTHONPATH=/opt/mnist:/opt/mnist/client/src TEMP=/tmp
# REST inference, management, metrics; gRPC inference (also the Open Inference Protocol's), management.
EXPOSE 8080 8081 8082 7070 7071
# /ping with the inference key when token authorization is on (the key file is read inside).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-m", "ops.tsctl", "--key-file", "/srv/key_file.json", "ping"]
CMD ["python", "-m", "ops.entrypoint"]
