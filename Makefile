# The front door.  Every target is a thin call of the `quorum` command: the
# logic lives in tools/quorum/, where tests can reach it.
#
#   make                 set up .venv/ and build the whole tree
#   make test            the test suite (real engine, real GnuPG)
#   make out/NAME.tgz    build one package (and what it needs) as an OCI archive
#   make JOBS=2          build up to two packages at once

PYTHON   ?= python3
VENV     := .venv
Q        := $(VENV)/bin/quorum
JOBS     ?= 2
STAMP    := $(VENV)/.installed

.PHONY: all build fetch graph report reproduce sign verify audit test test-deps unit bench clean distclean help

all: build

# The venv is rebuilt whenever pyproject.toml changes: the stamp records the
# pyproject it was made from.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

build: $(STAMP)
	$(Q) build -j $(JOBS)

fetch: $(STAMP)
	$(Q) fetch

# The build order as text, and the same picture as the report's (out/graph.svg).
graph: $(STAMP)
	$(Q) graph
	$(Q) report --graph-only

# The static dashboard: out/report/index.html (docs/report.md).
report: $(STAMP)
	$(Q) report

reproduce: $(STAMP)
	$(Q) reproduce -j $(JOBS) $(if $(filter clean,$(MAKECMDGOALS)),--all)

sign: $(STAMP)
	$(Q) sign

# The trust root comes from outside the repository: make verify ROOT=sha256:…
# (or pin it once with 'quorum trust pin'); see docs/trust.md.
verify: $(STAMP)
	$(Q) verify $(if $(ROOT),--root $(ROOT))

audit: $(STAMP)
	$(Q) audit

out/%.tgz: $(STAMP) FORCE
	$(Q) build -j $(JOBS) --archive $*

FORCE:

# test-deps first: it also installs python3-venv, which the venv needs.
test: test-deps $(STAMP)
	$(VENV)/bin/python -m pytest -ra $(PYTEST_ARGS)

test-deps:
	tools/setup-test-deps

unit: $(STAMP)
	$(VENV)/bin/python -m pytest -ra -m 'not engine' $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m quorum.bench $(BENCH_ARGS)

# `make clean reproduce` rebuilds everything from the seeds (see reproduce).
clean:
	@if [ "$(filter reproduce,$(MAKECMDGOALS))" = "" ]; then rm -rf out; fi

distclean:
	rm -rf out $(VENV)

help:
	@sed -n '2,9p' Makefile
