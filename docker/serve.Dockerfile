# The serving image: `rnnmt serve` on onnxruntime, no torch (rnnmt[serve]). Also the client side:
# `rnnmt translate` and `rnnmt batch` run from it.
#
# Build with scripts/docker-build.sh (it builds the base image and stages build/docker/ first), or:
#   docker build -f docker/serve.Dockerfile -t rnnmt-serve:dev .
# Run:  docker run -p 50051:50051 -v "$PWD/models:/models:ro" rnnmt-serve:dev
# Settings are the RNNMT_* variables of `rnnmt serve --help` (RNNMT_MODEL_DIR, RNNMT_WORKERS, ...).
# `rnnmt serve` listens on loopback by default; this image sets RNNMT_HOST and RNNMT_METRICS_HOST to
# 0.0.0.0, the container's own interfaces, which only the ports you publish (-p) expose. The metrics
# have no authentication: publish 9100 to the scraper only (e.g. -p 127.0.0.1:9100:9100).

# Any Debian bookworm image with python3 and python3-venv; scripts/docker-base.sh builds this one.
ARG BASE_IMAGE=rnnmt-debian:bookworm

# Stage 1, the dependencies: a venv at /opt/rnnmt with the serve extra's packages, read from
# pyproject.toml and pinned by docker/constraints.txt. This layer is rebuilt only when those files
# change.
FROM ${BASE_IMAGE} AS deps
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_CERT=/tmp/build/ca-certificates.crt \
    PIP_CONSTRAINT=/tmp/build/constraints.txt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=180
COPY build/docker/ca-certificates.crt docker/constraints.txt /tmp/build/
COPY pyproject.toml /src/
RUN python3 -m venv /opt/rnnmt \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > /tmp/build/requirements.txt \
 && /opt/rnnmt/bin/pip install -q -r /tmp/build/requirements.txt \
 && /opt/rnnmt/bin/pip uninstall -q -y pip setuptools \
 && find /opt/rnnmt/lib/python3*/site-packages -depth -type d -name tests -exec rm -rf {} +

# Stage 2, rnnmt itself, installed into that venv by a separate pip (the venv keeps none); its files
# are gathered in /staging, so a source change rebuilds only a small layer of the final image.
FROM deps AS build
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

FROM ${BASE_IMAGE} AS serve
# A fixed uid/gid, the same in every rnnmt image, so the images share volumes.
RUN groupadd --system --gid 10001 rnnmt \
 && useradd --system --uid 10001 --gid rnnmt --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rnnmt \
 && mkdir /models \
 && chown rnnmt:rnnmt /models
COPY --from=deps /opt/rnnmt /opt/rnnmt
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
