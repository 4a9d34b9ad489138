# chom-storage: the two commands are `make lab` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
PYTEST := $(BIN)/pytest

.PHONY: help setup lab lab-up lab-down lab-demo test lint rules unit integration molecule e2e build bench-placement

help:
	@echo "make lab        set up this machine, start the lab, run playbooks/site.yml and the demo"
	@echo "make lab-down   remove the lab's containers, loop devices and database"
	@echo "make test       lint, unit, integration, Molecule and end-to-end tests"
	@echo "make lab-up     start or converge the lab hosts and database only"
	@echo "make lab-demo   run the demo again on the running lab"
	@echo "make lint|rules|unit|integration|molecule|e2e   one stage of make test"
	@echo "make build      build the collection tarball into .lab/build/"
	@echo "make bench-placement   placement speed, balance and movement against uhashring"

setup:
	@lab/setup-host.sh

lab: lab-up
	ansible-playbook playbooks/site.yml
	@lab/lab.sh prometheus
	ansible-playbook playbooks/capacity.yml
	$(BIN)/python lab/demo.py

lab-up: setup
	@lab/lab.sh up

lab-down:
	@lab/lab.sh down

lab-demo:
	$(BIN)/python lab/demo.py

test: setup lint rules unit integration molecule e2e

lint: setup
	$(BIN)/ruff check plugins roles/replication/files/chom-replicate tests lab benchmarks
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
	ansible-playbook playbooks/capacity.yml
	$(PYTEST) tests/e2e

build: setup
	$(BIN)/ansible-galaxy collection build --force --output-path $(CURDIR)/.lab/build .

bench-placement: setup
	$(BIN)/python benchmarks/placement.py
