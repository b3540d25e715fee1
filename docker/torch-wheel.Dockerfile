# An image that only holds the CPU torch wheel, for the train target of docker/rnnmt.Dockerfile to copy
# from: built once by scripts/docker-build.sh from the wheel it staged (the build context is that
# wheel's folder), so the 190 MB wheel is not sent to the builder with every build.
FROM scratch
COPY torch-*.whl /wheels/
