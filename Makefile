# osteoscreen: the two commands a user needs are `make demo` and `make test`; each installs
# what it needs into .venv first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out
# holoscan (pulled in by the MONAI Deploy SDK) wants a big stack; osteoscreen preloads its
# CUDA runtime library from the nvidia-cuda-runtime wheel.
RUN := ulimit -s 32768 2>/dev/null || true;

.PHONY: install demo test lint typecheck unit models bench example system-deps lock clean map map-test \
	label-venv label-deps label-test label-server label-lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[deploy,dev]'
	touch $(STAMP)

install: $(STAMP)

## Validators the DICOM tests use (dciodvfy, dsrdump), and Orthanc + Chromium for the MONAI
## Label tests; the tests skip, saying why, where they are absent.
system-deps: label-deps
	@if ! command -v dciodvfy >/dev/null || ! command -v dsrdump >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dcmtk dicom3tools >/dev/null; \
	  else echo "note: install dcmtk and dicom3tools for the DICOM validation tests"; fi; fi

## MONAI Label (apps/monailabel): its own environment (monailabel 0.8.5 wants torch 2.14.1 and
## torchvision; the main one has torch 2.13 CPU), Orthanc with DICOMweb, Debian's Chromium.
LABEL_VENV := .venv-label
LABEL_STAMP := $(LABEL_VENV)/.installed
LABEL_PIP := $(LABEL_VENV)/bin/pip install --quiet --disable-pip-version-check -c apps/monailabel/constraints.txt

$(LABEL_STAMP): apps/monailabel/requirements.txt apps/monailabel/constraints.txt pyproject.toml
	test -x $(LABEL_VENV)/bin/python || $(PY) -m venv $(LABEL_VENV)
	$(LABEL_PIP) -r apps/monailabel/requirements.txt
	$(LABEL_PIP) --no-deps monailabel==0.8.5 pydicom-seg==0.4.1
	$(LABEL_PIP) -e .
	touch $@

label-venv: $(LABEL_STAMP)

label-deps:
	@if [ ! -x /usr/sbin/Orthanc ] || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ ! -x /usr/lib/chromium/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq orthanc orthanc-dicomweb chromium >/dev/null; \
	  else echo "note: install orthanc, orthanc-dicomweb and chromium for the MONAI Label tests"; fi; fi

## The MONAI Label server tests: real Orthanc, real server, headless Chromium (about 3 minutes).
label-test: $(LABEL_STAMP)
	$(LABEL_VENV)/bin/python -m pytest -q tests/label

## Orthanc + MONAI Label + OHIF on http://127.0.0.1:8000/ohif/ with the demo study and any DICOM
## folders in STUDIES="dir1 dir2"; LOCAL=DIR serves a NIfTI folder instead. Ctrl-C stops all.
label-server: $(LABEL_STAMP) label-deps
	PYTHONPATH=apps/monailabel $(LABEL_VENV)/bin/python -m osteolabel.serve \
	  $(if $(LOCAL),--local $(LOCAL),) $(if $(STUDIES),--studies $(STUDIES),)

label-lock:
	$(LABEL_VENV)/bin/pip freeze --exclude-editable > apps/monailabel/constraints.txt

## Generate a synthetic CT study as DICOM and screen it.
demo: $(STAMP)
	$(RUN) $(BIN)/osteoscreen example --out $(OUT)/demo_study
	$(RUN) $(BIN)/osteoscreen run --input $(OUT)/demo_study/dicom --output $(OUT)/demo
	@echo "truth of the synthetic study: $(OUT)/demo_study/truth.json"

lint: $(STAMP)
	$(BIN)/ruff check src tests apps
	$(BIN)/ruff format --check src tests apps

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q --ignore=tests/label

test: $(STAMP) lint typecheck unit label-test

## Retrain every shipped model from a regenerated cohort (long: see README).
models: $(STAMP)
	$(RUN) $(BIN)/python -m osteoscreen.training.make_models --work build/models --models models --fresh

bench: $(STAMP)
	$(RUN) $(BIN)/python -m osteoscreen.bench --work build/bench

lock:
	$(BIN)/pip freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(OUT) build .pytest_cache .mypy_cache .ruff_cache

## The MONAI Application Package (README "Package as a MAP"). `make map` builds the image with a
## local Docker engine (installing docker.io, starting a private dockerd and making a Debian base
## image by debootstrap where needed); `make map-test` runs it on a generated demo study.
## Both stop what they started. MAP_MODELS=DIR packages another models folder.
MAP_IMAGE ?= osteoscreen-map:0.1.0
MAP_MODELS ?= models
MAP_ENV = MAP_IMAGE=$(MAP_IMAGE) MAP_MODELS=$(MAP_MODELS) MAP_VENV=$(VENV)


map:
	$(MAP_ENV) deploy/map.sh build

map-test: $(STAMP)
	$(MAP_ENV) deploy/map.sh test
