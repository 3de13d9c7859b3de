# Container images and generated chart files.
#   make images                          build the torch base, then the four images (docker or podman)
#   make images DOCKER=podman            the same with podman (or buildah's `buildah bud`: DOCKER="buildah")
#   make push-images REGISTRY=ghcr.io/me TAG=0.1.0
#   make wheelhouse                      download every pinned wheel into wheelhouse/ (for air-gapped builds)
#   make images WHEELHOUSE=wheelhouse    build with no index at all, from those wheels
#   make images PIP_CONF=pip.conf PIP_CA=corp-ca.pem PIP_CONSTRAINTS=extra.txt
#                                        pip settings as build secrets (never stored in a layer)
#   make chart-schema                    regenerate charts/dynamics/values.schema.json
#   make check-chart-schema              fail if it is stale (what the tests check)

REGISTRY ?= ghcr.io/dynamics-dev
TAG ?= 0.1.0
DOCKER ?= docker
PLATFORM ?= linux/amd64
PYTHON ?= .venv/bin/python
# The Python image every image starts from (through the torch base for embedder and trainer): a mirror of it
# in a private registry works the same.
BASE_IMAGE ?= python:3.11.11-slim-bookworm
TORCH_BASE ?= $(REGISTRY)/dynamics-torch-base:$(TAG)
# Optional build inputs (see images/pip.sh): a pip.conf (index-url, extra-index-url, trusted-host, credentials),
# a CA bundle, extra constraints, a wheelhouse directory; and any other flags for the builder.
PIP_CONF ?=
PIP_CA ?=
PIP_CONSTRAINTS ?=
WHEELHOUSE ?=
BUILD_FLAGS ?=
# pip download's target for the wheelhouse: the images' platform and Python. Every manylinux tag that the base's
# glibc (2.36 in bookworm) runs, as pip itself would accept there: pip download takes only the tags it is given,
# and wheels carry just one (the CUDA 12.8+/13 libraries are manylinux_2_27 only, older packages manylinux1/2010).
GLIBC_MINORS ?= 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36
WHEEL_PLATFORMS ?= $(foreach m,$(GLIBC_MINORS),manylinux_2_$(m)_x86_64) manylinux2014_x86_64 manylinux2010_x86_64 \
	manylinux1_x86_64 linux_x86_64
IMAGES := embedder clusterer trainer controller

BUILD_ARGS = --platform $(PLATFORM) --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TORCH_BASE=$(TORCH_BASE) \
	$(if $(PIP_CONF),--secret id=pipconf$(comma)src=$(PIP_CONF)) \
	$(if $(PIP_CA),--secret id=pip-ca$(comma)src=$(PIP_CA)) \
	$(if $(PIP_CONSTRAINTS),--secret id=pip-constraints$(comma)src=$(PIP_CONSTRAINTS)) \
	$(if $(WHEELHOUSE),--build-context wheelhouse=$(abspath $(WHEELHOUSE))) $(BUILD_FLAGS)
comma := ,

.PHONY: images push-images image-torch-base push-image-torch-base $(addprefix image-,$(IMAGES)) \
	$(addprefix push-image-,$(IMAGES)) wheelhouse chart-schema check-chart-schema

images: $(addprefix image-,$(IMAGES))

# Each image builds from the repository root (the context), with its own Dockerfile. The embedder and trainer
# build FROM the torch base, so it is built first and a registry stores its torch/CUDA layers once.
image-torch-base:
	$(DOCKER) build $(BUILD_ARGS) -f images/torch-base/Dockerfile -t $(TORCH_BASE) .

image-embedder image-trainer: image-torch-base

$(addprefix image-,$(IMAGES)): image-%:
	$(DOCKER) build $(BUILD_ARGS) -f images/$*/Dockerfile -t $(REGISTRY)/dynamics-$*:$(TAG) .

push-images: push-image-torch-base $(addprefix push-image-,$(IMAGES))

push-image-torch-base: image-torch-base
	$(DOCKER) push $(TORCH_BASE)

$(addprefix push-image-,$(IMAGES)): push-image-%: image-%
	$(DOCKER) push $(REGISTRY)/dynamics-$*:$(TAG)

# Every wheel the images install, for their platform and Python, from the lock file (plus the clusterer's
# faiss-gpu and the build backend the package itself needs): copy wheelhouse/ into the air-gapped network.
wheelhouse:
	$(PYTHON) -m pip download --dest wheelhouse --only-binary=:all: --python-version 3.11 --implementation cp \
		$(addprefix --platform ,$(WHEEL_PLATFORMS)) -c requirements/lock.txt \
		-r requirements/lock.txt -r images/clusterer/requirements-gpu.txt "setuptools>=77" wheel

chart-schema:
	$(PYTHON) -m dynamics.spec.schema --update

check-chart-schema:
	$(PYTHON) -m dynamics.spec.schema
