# Two entry points for a fresh Debian machine (Python 3.11, root):
#   make demo  - install what promoter needs and run the main job on embedded defaults
#   make test  - install what the tests need (system packages too) and run every test
PYTHON ?= python3
PIP    := $(PYTHON) -m pip
# postgresql: the PostgreSQL state backend's tests start a real server (initdb + pg_ctl).
APT_PACKAGES := docker-registry skopeo umoci git rsync prometheus postgresql
# gitlab-ci-local runs the CI gate in tests (shell executor; it needs rsync). Later releases
# need Node 22.
GITLAB_CI_LOCAL := gitlab-ci-local@4.56.0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test install install-test install-system install-js lint bench bench-image \
	bench-image-debian13

install:
	$(PIP) install -q -e .

install-system:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "not root or no apt-get: install $(APT_PACKAGES) yourself"; fi
	@command -v kubectl >/dev/null || echo "warning: kubectl not found; kustomize tests will be skipped"

install-js:
	@if [ -f tests/js/package.json ]; then npm --prefix tests/js install --no-audit --no-fund --silent; fi
	@if command -v npm >/dev/null; then \
	  [ "$$(gitlab-ci-local --version 2>/dev/null)" = "$(lastword $(subst @, ,$(GITLAB_CI_LOCAL)))" ] || \
	    npm install -g --no-audit --no-fund --silent $(GITLAB_CI_LOCAL); \
	else echo "no npm: install $(GITLAB_CI_LOCAL) yourself; the CI-gate tests will be skipped"; fi

install-test: install-system install-js
	$(PIP) install -q -e '.[test]'

demo: install-system install
	$(PYTHON) -m promoter demo

# ruff first so pytest's summary is the run's last line; import-linter runs inside pytest.
test: install-test
	$(PYTHON) -m ruff check promoter tests benchmarks
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check promoter tests benchmarks
	$(PYTHON) -m mypy
	lint-imports

bench:
	$(PYTHON) benchmarks/render.py
	$(PYTHON) benchmarks/intake.py
	$(PYTHON) benchmarks/scaling_backtest.py

bench-image:  # needs docker-registry, skopeo and ~3 GiB of temp disk
	$(PYTHON) benchmarks/image.py

# The same against Debian 13's builds of both (Go 1.24), unpacked into .bench-tools/ (nothing
# is installed): shows the clients' difference once the registry's SHA-256 is not the limit.
bench-image-debian13:
	sh benchmarks/debian13_tools.sh .bench-tools/debian13
	$(PYTHON) benchmarks/image.py --case modelcar --runs 3 \
	    --registry-binary .bench-tools/debian13/usr/bin/docker-registry \
	    --skopeo .bench-tools/debian13/skopeo
