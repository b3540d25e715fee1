# The gRPC load balancer of the scale-out setup (docker/compose.scale.yml): Debian's nginx, which
# proxies HTTP/2 (grpc_pass) and spreads calls over the replicas of the `server` service.

# Any Debian bookworm image; scripts/docker-base.sh builds this one.
ARG BASE_IMAGE=rnnmt-debian:bookworm

FROM ${BASE_IMAGE} AS lb
# nginx follows bookworm's security updates (the base image build is the pin), so its version is not
# pinned here: a pinned Debian point release disappears from the mirror with the next update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/*
COPY docker/nginx.conf /etc/rnnmt/nginx.conf
COPY docker/lb-entrypoint.sh /usr/local/bin/rnnmt-lb
ENV RNNMT_UPSTREAM=server:50051
USER 33:33
EXPOSE 50051
ENTRYPOINT ["rnnmt-lb"]
