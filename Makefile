# chom-storage: the two commands are `make lab` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
PYTEST := $(BIN)/pytest

.PHONY: help setup lab lab-up lab-down lab-demo test lint rules unit integration molecule e2e e2e-scale build bench-placement bench-migration bench-retention

help:
	@echo "make lab        set up this machine, start the lab, run playbooks/site.yml and the demo"
	@echo "make lab-down   remove the lab's containers, loop devices and database"
	@echo "make test       lint, unit, integration, Molecule and end-to-end tests"
	@echo "make lab-up     start or converge the lab hosts and database only"
	@echo "make lab-demo   run the demo again on the running lab"
	@echo "make lint|rules|unit|integration|molecule|e2e   one stage of make test"
	@echo "make build      build the collection tarball into .lab/build/"
	@echo "make bench-placement   placement speed, balance and movement against uhashring"
	@echo "make bench-migration   verified migration throughput against a plain boto3 copy, peak memory"
	@echo "make bench-retention   retention planning of 1,000,000 items against listing 100,000 keys"

setup:
	@lab/setup-host.sh

lab: lab-up
	ansible-playbook playbooks/site.yml
	@lab/lab.sh prometheus
	@lab/lab.sh offsite
	ansible-playbook playbooks/capacity.yml
	$(BIN)/python lab/demo.py

lab-up: setup
	@lab/lab.sh up

lab-down:
	@lab/lab.sh down

lab-demo:
	$(BIN)/python lab/demo.py

test: setup lint rules unit integration molecule e2e e2e-scale

lint: setup
	$(BIN)/ruff check plugins roles/replication/files/chom-replicate roles/snapshot/files/chom-snapshot tests lab benchmarks molecule
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production --offline

rules: setup
	promtool check rules roles/monitoring/files/chom-storage.rules.yml
	promtool test rules tests/promtool/chom-storage.test.yml

unit: setup
	$(PYTEST) tests/unit

integration: setup
	$(PYTEST) tests/integration

molecule: setup
	tests/molecule.sh

e2e: lab-up
	ansible-playbook playbooks/site.yml
	@lab/lab.sh prometheus
	@lab/lab.sh offsite
	ansible-playbook playbooks/capacity.yml
	$(PYTEST) tests/e2e

# Scale-out runbooks on a lab with four storage hosts (a running 2-host lab gets hosts 3 and 4).
e2e-scale: setup
	@HOSTS=$(or $(HOSTS),4) lab/lab.sh up
	ansible-playbook playbooks/site.yml
	@lab/lab.sh prometheus
	ansible-playbook playbooks/capacity.yml
	$(PYTEST) tests/e2e_scale

build: setup
	$(BIN)/ansible-galaxy collection build --force --output-path $(CURDIR)/.lab/build .

bench-placement: setup
	$(BIN)/python benchmarks/placement.py

bench-migration: setup
	$(BIN)/python benchmarks/migration.py

bench-retention: setup
	$(BIN)/python benchmarks/retention.py
