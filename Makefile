# The two commands: `make` (generate everything into build/) and `make check`
# (the tests and the man-page lint).  Both set up what they need on a fresh
# Debian machine: a venv with the project, and Debian packages via apt-get.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
CLI     := $(VENV)/bin/uffd-uabi
BUILD   ?= build
DEBS    := mandoc groff man-db manpages-dev gcc libc6-dev linux-libc-dev util-linux mount \
           qemu-system-x86 kmod busybox-static
STAMP   := $(VENV)/.installed

.PHONY: all man html conformance check matrix bench fuzz clean setup debs

all: man conformance html

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

debs:
	@tools/ensure-debs $(DEBS)

setup: $(STAMP) debs

man: setup
	$(CLI) man --out $(BUILD)/man

html: setup
	$(CLI) html --out $(BUILD)/html

conformance: setup
	-$(CLI) conform --json $(BUILD)/conformance/results.json --ktap $(BUILD)/conformance/results.ktap

check: setup
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check spec tools conformance tests conf.py

matrix: setup
	-$(CLI) matrix --debian 6.1,6.12,6.16,7.3 --json $(BUILD)/matrix/matrix.json

# Claim 3 of the seed needs swap: make bench BENCH_ARGS="--with swap"
bench: setup
	$(CLI) bench --json $(BUILD)/bench/bench.json --svg $(BUILD)/bench/bench.svg $(BENCH_ARGS)

fuzz: setup
	$(CLI) fuzz --cases 10000 --seed 0 --json $(BUILD)/fuzz/fuzz.json --repro $(BUILD)/fuzz

clean:
	rm -rf $(BUILD)
