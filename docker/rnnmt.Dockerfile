# The rnnmt images, one target each; the stages that build rnnmt are shared:
#
#   --target serve  rnnmt-serve: `rnnmt serve` on onnxruntime, no torch (rnnmt[serve]). Also the client
#                   side: `rnnmt translate` and `rnnmt batch` run from it.
#   --target train  rnnmt-train: CPU PyTorch (rnnmt[train]) and Debian's SWORD Bibles, for `rnnmt data`,
#                   `train`, `evaluate` and `export`. Its default command, rnnmt-train-pipeline
#                   (docker/train-pipeline.sh), builds the Bible corpus, trains with
#                   configs/bible-es-en.yaml and exports the model package into /models.
#
# Build with scripts/docker-build.sh (it builds the base image and stages build/docker/ first; the
# services of docker-compose.yml pick the targets), or:
#   docker build -f docker/rnnmt.Dockerfile --target serve -t rnnmt-serve:dev .
# Run:  docker run -p 50051:50051 -v "$PWD/models:/models:ro" rnnmt-serve:dev
#
# Stages, in an order that lets even the classic builder (which builds every stage before its target)
# build only what the serving image needs: venv and build (shared), deps-serve, serve, then torch-wheel,
# deps-train and train.

# Any Debian bookworm image with python3 and python3-venv; scripts/docker-base.sh builds this one.
ARG BASE_IMAGE=rnnmt-debian:bookworm
# An image holding /wheels/torch-2.13.0+cpu-*.whl (scripts/docker-build.sh makes it). torch 2.13.0 on
# PyPI is the CUDA build, about 0.5 GB plus several GB of CUDA libraries; the CPU build is about 190 MB
# and only on PyTorch's own index. Only the train target reads it.
ARG TORCH_WHEEL_IMAGE=rnnmt-torch-wheel:2.13.0-cpu

# Shared stage 1: pip's settings, an empty venv at /opt/rnnmt, and each extra's requirements (the
# project's dependencies plus the extra's, read from pyproject.toml; docker/constraints.txt pins them)
# in /tmp/build/serve.txt and /tmp/build/train.txt.
FROM ${BASE_IMAGE} AS venv
ENV PIP_CERT=/tmp/build/ca-certificates.crt \
    PIP_CONSTRAINT=/tmp/build/constraints.txt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=180
COPY build/docker/ca-certificates.crt docker/constraints.txt /tmp/build/
COPY pyproject.toml /src/
RUN python3 -m venv /opt/rnnmt \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
[open(f'/tmp/build/{x}.txt', 'w').write('\n'.join(p['dependencies'] + p['optional-dependencies'][x])) \
 for x in ('serve', 'train')]"

# Shared stage 2, rnnmt itself, installed into that venv by a separate pip (the venv keeps none); its
# files are gathered in /staging (the same files for both images: they depend on the sources only), so
# a source change rebuilds one small layer of each image, and this stage once for both.
FROM venv AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY README.md /src/
COPY rnnmt /src/rnnmt
COPY serving /src/serving
COPY tokenizers /src/tokenizers
COPY training /src/training
WORKDIR /
RUN python3 -m venv /tmp/pip \
 && /tmp/pip/bin/pip --python /opt/rnnmt/bin/python install -q --no-deps /src \
 && /opt/rnnmt/bin/rnnmt --version \
 && mkdir /staging \
 && cp -a --parents opt/rnnmt/bin/rnnmt opt/rnnmt/lib/python3.11/site-packages/rnnmt \
      opt/rnnmt/lib/python3.11/site-packages/rnnmt-*.dist-info /staging/

# The serving image's dependencies (rnnmt[serve]). Rebuilt only when pyproject.toml or the constraints
# change.
FROM venv AS deps-serve
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN /opt/rnnmt/bin/pip install -q -r /tmp/build/serve.txt \
 && /opt/rnnmt/bin/pip uninstall -q -y pip setuptools \
 && find /opt/rnnmt/lib/python3*/site-packages -depth -type d -name tests -exec rm -rf {} +

# `rnnmt serve` listens on loopback by default; this image sets RNNMT_HOST and RNNMT_METRICS_HOST to
# 0.0.0.0, the container's own interfaces, which only the ports you publish (-p) expose. The metrics
# have no authentication: publish 9100 to the scraper only (e.g. -p 127.0.0.1:9100:9100). Settings are
# the RNNMT_* variables of `rnnmt serve --help` (RNNMT_MODEL_DIR, RNNMT_WORKERS, ...).
FROM ${BASE_IMAGE} AS serve
# A fixed uid/gid, the same in every rnnmt image, so the images share volumes.
RUN groupadd --system --gid 10001 rnnmt \
 && useradd --system --uid 10001 --gid rnnmt --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rnnmt \
 && mkdir /models \
 && chown rnnmt:rnnmt /models
COPY --from=deps-serve /opt/rnnmt /opt/rnnmt
COPY --from=build /staging/ /
ENV PATH=/opt/rnnmt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    RNNMT_MODEL_DIR=/models \
    RNNMT_HOST=0.0.0.0 \
    RNNMT_PORT=50051 \
    RNNMT_METRICS_HOST=0.0.0.0 \
    RNNMT_METRICS_PORT=9100
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9100
# The server turns NOT_SERVING, refuses new calls and lets calls in flight finish on SIGTERM
# (RNNMT_GRACE_SECONDS); give `docker stop` / Kubernetes a longer grace period than that.
STOPSIGNAL SIGTERM
# The standard gRPC health check (grpc.health.v1) on RNNMT_PORT, plaintext: healthy once the models
# are loaded, unhealthy while draining. (Health stays open with RNNMT_AUTH_TOKEN; with TLS, probe from
# outside instead, e.g. a Kubernetes grpc probe.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/bin/sh", "-c", "rnnmt health --server 127.0.0.1:$RNNMT_PORT --timeout 4 || exit 1"]
# Exec form: rnnmt is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["rnnmt"]
CMD ["serve"]

FROM ${TORCH_WHEEL_IMAGE} AS torch-wheel

# The training image's dependencies (rnnmt[train]); torch==2.13.0+cpu comes from the staged wheel
# (find-links). Rebuilt only when pyproject.toml or the constraints change.
FROM venv AS deps-train
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY --from=torch-wheel /wheels/ /tmp/build/wheels/
RUN /opt/rnnmt/bin/pip install -q --find-links /tmp/build/wheels -r /tmp/build/train.txt \
 && /opt/rnnmt/bin/python -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__" \
 && /opt/rnnmt/bin/pip uninstall -q -y pip \
 && find /opt/rnnmt/lib/python3*/site-packages -depth -type d -name tests -not -path '*/torch/*' -exec rm -rf {} +

FROM ${BASE_IMAGE} AS train
# The SWORD modules `rnnmt data bible` reads (Reina-Valera 1909, World English Bible, KJV): data
# packages, stable for the life of bookworm, so pinned.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      sword-text-sparv=2.60-1 sword-text-web=426.0-1 sword-text-kjv=14.3-1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# A fixed uid/gid, the same in every rnnmt image, so the images share volumes. The folders that the
# compose file mounts volumes on belong to it, so new volumes do too.
RUN groupadd --system --gid 10001 rnnmt \
 && useradd --system --uid 10001 --gid rnnmt --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rnnmt \
 && mkdir -p /work/data /work/runs /models \
 && chown rnnmt:rnnmt /work/data /work/runs /models
COPY --from=deps-train /opt/rnnmt /opt/rnnmt
COPY --from=build /staging/ /
COPY configs /work/configs
COPY docker/train-pipeline.sh /usr/local/bin/rnnmt-train-pipeline
ENV PATH=/opt/rnnmt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    RNNMT_MODEL_DIR=/models
USER 10001:10001
WORKDIR /work
VOLUME ["/work/data", "/work/runs"]
CMD ["rnnmt-train-pipeline"]
