# Container images and generated chart files.
#   make images                          build the four images (needs Docker with BuildKit)
#   make push-images REGISTRY=ghcr.io/me TAG=0.1.0
#   make chart-schema                    regenerate charts/dynamics/values.schema.json
#   make check-chart-schema              fail if it is stale (what the tests check)

REGISTRY ?= ghcr.io/dynamics-dev
TAG ?= 0.1.0
DOCKER ?= docker
PLATFORM ?= linux/amd64
PYTHON ?= .venv/bin/python
IMAGES := embedder clusterer trainer controller

.PHONY: images push-images $(addprefix image-,$(IMAGES)) $(addprefix push-image-,$(IMAGES)) chart-schema check-chart-schema

images: $(addprefix image-,$(IMAGES))

# Each image builds from the repository root (the context), with its own Dockerfile.
$(addprefix image-,$(IMAGES)): image-%:
	$(DOCKER) build --platform $(PLATFORM) -f images/$*/Dockerfile -t $(REGISTRY)/dynamics-$*:$(TAG) .

push-images: $(addprefix push-image-,$(IMAGES))

$(addprefix push-image-,$(IMAGES)): push-image-%: image-%
	$(DOCKER) push $(REGISTRY)/dynamics-$*:$(TAG)

chart-schema:
	$(PYTHON) -m dynamics.spec.schema --update

check-chart-schema:
	$(PYTHON) -m dynamics.spec.schema
