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

.PHONY: demo demo-show bench test lint sanity collection-check unit integration molecule docker venv collection clean

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

test: lint sanity collection-check unit integration molecule  ## everything CI runs

lint: venv
	yamllint --strict .
	# A copy installed by an earlier tool run would shadow this working tree.
	rm -rf $(HOME)/.ansible/collections/ansible_collections/pilito/priority_queue
	ansible-lint --offline --profile production

sanity: venv  ## ansible-test sanity in a temporary ansible_collections tree (no Docker, no Galaxy)
	VENV=$(VENV) scripts/ansible_test.sh sanity

unit: venv
	pytest tests/unit

integration: venv docker  ## TESTS=tests/integration/test_x.py: one file
	pytest --durations=10 $(or $(TESTS),tests/integration)

molecule: venv docker  ## each scenario (SCENARIO=default: one); on failure, the verifiers' failures are printed last
	rm -f build/molecule_failures.txt
	molecule test $(if $(SCENARIO),--scenario-name $(SCENARIO),--all) || { echo "== molecule failed; the verifiers' failures:"; \
	  cut -c1-1500 build/molecule_failures.txt 2>/dev/null || echo "(none recorded: a step before verify failed)"; \
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
