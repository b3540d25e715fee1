# The serving image with model packages baked in, for deployments that ship the model inside the image
# instead of mounting it. The build context is the model repository (one package folder per model):
#
#   docker build -f docker/serve-with-models.Dockerfile -t rnnmt-serve-models:dev models/
ARG SERVE_IMAGE=rnnmt-serve:dev
FROM ${SERVE_IMAGE}
COPY . /models/
