# The training image: CPU PyTorch (rnnmt[train]) and Debian's SWORD Bibles, for `rnnmt data`, `train`,
# `evaluate` and `export`. Its default command, rnnmt-train-pipeline (docker/train-pipeline.sh), builds
# the Bible corpus, trains with configs/bible-es-en.yaml and exports the model package into /models.
#
# Build with scripts/docker-build.sh: it puts the CPU torch wheel in the image TORCH_WHEEL_IMAGE
# (built once, from this machine's copy). torch 2.13.0 on PyPI is the CUDA build, about 0.5 GB plus
# several GB of CUDA libraries; the CPU build is about 190 MB and only on PyTorch's own index.

# Any Debian bookworm image with python3 and python3-venv; scripts/docker-base.sh builds this one.
ARG BASE_IMAGE=rnnmt-debian:bookworm
# An image holding /wheels/torch-2.13.0+cpu-*.whl (scripts/docker-build.sh makes it).
ARG TORCH_WHEEL_IMAGE=rnnmt-torch-wheel:2.13.0-cpu

FROM ${TORCH_WHEEL_IMAGE} AS torch-wheel

# Stage 1, the dependencies: a venv at /opt/rnnmt with the train extra's packages, read from
# pyproject.toml and pinned by docker/constraints.txt; torch==2.13.0+cpu comes from the staged wheel
# (find-links). This layer is rebuilt only when those files change.
FROM ${BASE_IMAGE} AS deps
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_CERT=/tmp/build/ca-certificates.crt \
    PIP_CONSTRAINT=/tmp/build/constraints.txt \
    PIP_FIND_LINKS=/tmp/build/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=180
COPY build/docker/ca-certificates.crt docker/constraints.txt /tmp/build/
COPY --from=torch-wheel /wheels/ /tmp/build/wheels/
COPY pyproject.toml /src/
RUN python3 -m venv /opt/rnnmt \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > /tmp/build/requirements.txt \
 && /opt/rnnmt/bin/pip install -q -r /tmp/build/requirements.txt \
 && /opt/rnnmt/bin/python -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__" \
 && /opt/rnnmt/bin/pip uninstall -q -y pip \
 && find /opt/rnnmt/lib/python3*/site-packages -depth -type d -name tests -not -path '*/torch/*' -exec rm -rf {} +

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
COPY --from=deps /opt/rnnmt /opt/rnnmt
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
