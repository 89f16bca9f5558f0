# The README's two commands are `make demo` and `make test`; each installs and starts what it
# needs (Python tools in .venv, a Docker engine with Compose v2, the demo's images).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PYTHON ?= python3
DEMO_DIR ?= /srv/pilito-demo
export DEMO_DIR
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Playbooks and molecule find this collection as pilito.priority_queue through this path.
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/build/collections
COLLECTION_LINK := build/collections/ansible_collections/pilito/priority_queue

.PHONY: demo demo-show bench test lint changelog sanity collection-check unit integration molecule images docker venv collection clean

demo: venv docker  ## the demo host: the chat wait behind the runbook's backlog, the deploy, the wait again
	scripts/demo.sh up
	@echo "== before: one queue, one worker pool"
	scripts/demo.sh show
	@echo "== deploy: ansible-playbook -i inventories/local playbooks/deploy.yml"
	ansible-playbook -i inventories/local playbooks/deploy.yml
	@echo "== after: the same backlog, AI work on its own queue and pool"
	scripts/demo.sh show

demo-show:  ## queue the backlog again and time one chat reply on the running demo
	scripts/demo.sh show

bench: venv docker  ## the runbook's claims measured, three topologies side by side (QUICK=1: about 3 minutes)
	python benchmarks/bench.py $(if $(QUICK),--quick)

# Two suites side by side: the checks and the integration tests (their servers are small) beside
# the Molecule scenarios, one after the other, multihost first (its first minutes build hosts, not
# measure). Scenarios side by side overloaded the 2 cores (load 13 to 25): a healthcheck, a ping
# or a latency measure then said what the load did, not what the code does. Each suite's log:
# build/logs/; each one's time at the end.
test: venv docker images  ## everything CI runs
	scripts/side_by_side.sh \
	  checks+integration='$(MAKE) --no-print-directory lint sanity collection-check unit integration' \
	  molecule='$(MAKE) --no-print-directory molecule SCENARIO="multihost default renamed plain"'

images: docker  ## the demo's and the test hosts' images, built once where missing
	scripts/demo_images.sh >/dev/null
	scripts/host_image.sh >/dev/null

lint: venv
	yamllint --strict .
	# A copy installed by an earlier tool run would shadow this working tree.
	rm -rf $(HOME)/.ansible/collections/ansible_collections/pilito/priority_queue
	ansible-lint --offline --profile production
	python scripts/check_argument_specs.py
	# The changelog fragments (a malformed one fails here), and CHANGELOG.md made from them.
	antsibull-changelog lint
	antsibull-changelog lint-changelog-yaml --strict changelogs/changelog.yaml
	scripts/changelog.sh --check

changelog: venv  ## CHANGELOG.md from changelogs/: the releases, and the unreleased fragments as a preview
	scripts/changelog.sh

sanity: venv  ## ansible-test sanity in a temporary ansible_collections tree (no Docker, no Galaxy)
	VENV=$(VENV) scripts/ansible_test.sh sanity

unit: venv
	pytest tests/unit

integration: venv docker  ## TESTS=tests/integration/test_x.py: one file
	pytest --durations=10 $(or $(TESTS),tests/integration)

MOLECULE_FAILURES = $(if $(SCENARIO),$(SCENARIO:%=build/molecule_failures/%.txt),build/molecule_failures/*.txt)
molecule: venv docker  ## each scenario (SCENARIO=default, or SCENARIO="default renamed"); on failure, the verifiers' failures are printed last
	rm -f $(MOLECULE_FAILURES)
	molecule test $(if $(SCENARIO),$(SCENARIO:%=--scenario-name %),--all) || { echo "== molecule failed; the verifiers' failures:"; \
	  found=$$(cat $(MOLECULE_FAILURES) 2>/dev/null || true); \
	  if [ -n "$$found" ]; then printf '%s\n' "$$found" | cut -c1-1500; else echo "(none recorded: a step before verify failed)"; fi; \
	  exit 1; }

docker:
	scripts/install_docker.sh

venv: $(VENV)/.installed $(COLLECTION_LINK)

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

collection: venv  ## build the collection tarball into build/
	rm -f build/pilito-priority_queue-*.tar.gz
	ansible-galaxy collection build --force --output-path build/

collection-check: collection  ## the tarball and a git requirements.yml install; no test bed inside
	scripts/collection_check.sh

clean:  ## remove the demo stack, its volumes and folder, and build output
	scripts/demo.sh down
	rm -rf build
