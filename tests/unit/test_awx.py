"""The AWX job templates, the runbooks' argument specs and the execution environment agree.

awx/job_templates.yml lists one job template per runbook (playbook in playbooks/); its survey asks
the options of that runbook in playbooks/vars/argument_specs.yml, with the same required flags,
defaults and choices. Every runbook with options checks them first with validate_argument_spec.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOKS = os.path.join(REPO, "playbooks")
AWX = os.path.join(REPO, "awx")

SURVEY_TYPES = {"str": "text", "int": "integer", "float": "float", "list": "textarea"}
BOOL_CHOICES = ["yes", "no"]
ASK_FLAGS = ("ask_limit_on_launch", "ask_job_type_on_launch", "ask_diff_mode_on_launch", "ask_variables_on_launch")
SECRET_WORDS = re.compile(r"password|secret|token|private|key\b|_key", re.IGNORECASE)


def _load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


SPECS = _load(os.path.join(PLAYBOOKS, "vars", "argument_specs.yml"))["argument_specs"]
AWX_DATA = _load(os.path.join(AWX, "job_templates.yml"))
TEMPLATES = AWX_DATA["chom_awx_job_templates"]
RUNBOOK_PLAYBOOKS = sorted(
    name[:-len(".yml")] for name in os.listdir(PLAYBOOKS)
    if name.endswith(".yml") and os.path.isfile(os.path.join(PLAYBOOKS, name))
)


def _template_id(template):
    return template["runbook"]


def _existing_playbook(runbook):
    path = os.path.join(PLAYBOOKS, f"{runbook}.yml")
    if not os.path.isfile(path):
        pytest.fail(f"playbooks/{runbook}.yml does not exist")
    return path


def _survey_default(option):
    """The survey's default for a spec option: what AWX sends when the operator keeps it."""
    default = option["default"]
    if option.get("type") == "bool":
        return "yes" if default else "no"
    if option.get("type") == "list":
        return ",".join(str(item) for item in default)
    return default


def _asked(option):
    """An option becomes a question when it is required or has a default; see job_templates.yml."""
    return bool(option.get("required")) or "default" in option


def test_every_runbook_playbook_has_a_spec_and_a_template():
    runbooks = [template["runbook"] for template in TEMPLATES]
    assert len(runbooks) == len(set(runbooks)), "a runbook has two templates"
    assert len({template["name"] for template in TEMPLATES}) == len(TEMPLATES), "two templates share a name"
    for runbook in RUNBOOK_PLAYBOOKS:
        assert runbook in SPECS, f"playbooks/{runbook}.yml has no entry in playbooks/vars/argument_specs.yml"
        assert runbook in runbooks, f"playbooks/{runbook}.yml has no job template in awx/job_templates.yml"
    assert set(runbooks) == set(SPECS), "templates and argument specs name different runbooks"


@pytest.mark.parametrize("runbook", sorted(SPECS))
def test_every_spec_option_is_documented(runbook):
    spec = SPECS[runbook]
    assert spec.get("short_description"), f"{runbook}: no short_description"
    assert spec.get("description"), f"{runbook}: no description"
    for name, option in (spec.get("options") or {}).items():
        where = f"{runbook}.{name}"
        description = option.get("description")
        text = " ".join(description) if isinstance(description, list) else description
        assert text and text.strip(), f"{where}: no description"
        assert option.get("type") in ("str", "int", "float", "bool", "list"), f"{where}: type {option.get('type')}"
        assert not option.get("no_log"), f"{where}: a secret is not a runbook variable; use a credential"
        assert not (option.get("required") and "default" in option), f"{where}: required with a default"
        if "choices" in option and "default" in option:
            assert option["default"] in option["choices"], f"{where}: default not among the choices"


@pytest.mark.parametrize("template", TEMPLATES, ids=_template_id)
def test_template_settings(template):
    runbook = template["runbook"]
    assert template["playbook"] == f"playbooks/{runbook}.yml"
    for key in ("name", "description", "inventory", "execution_environment"):
        assert template.get(key), f"{runbook}: no {key}"
    assert template.get("credentials"), f"{runbook}: no credentials"
    for flag in ASK_FLAGS:
        assert isinstance(template.get(flag), bool), f"{runbook}: {flag} must be true or false"


@pytest.mark.parametrize("template", TEMPLATES, ids=_template_id)
def test_template_playbook_exists(template):
    _existing_playbook(template["runbook"])


@pytest.mark.parametrize("template", TEMPLATES, ids=_template_id)
def test_survey_asks_exactly_the_runbook_options(template):
    runbook = template["runbook"]
    options = SPECS[runbook].get("options") or {}
    questions = {question["variable"]: question for question in template["survey"]}
    assert len(questions) == len(template["survey"]), f"{runbook}: a variable is asked twice"

    for variable, question in questions.items():
        where = f"{runbook} survey {variable}"
        assert variable in options, f"{where}: not an option of the runbook's argument spec"
        option = options[variable]
        assert question.get("question_name"), f"{where}: no question_name"
        assert question.get("question_description"), f"{where}: no question_description"
        assert question["type"] != "password" and not SECRET_WORDS.search(variable), f"{where}: asks a secret"
        assert bool(question.get("required")) == bool(option.get("required")), f"{where}: required differs"

        if option["type"] == "bool":
            assert question["type"] == "multiplechoice" and question["choices"] == BOOL_CHOICES, where
        elif "choices" in option:
            assert question["type"] == "multiplechoice", f"{where}: choices need multiplechoice"
            assert question["choices"] == option["choices"], f"{where}: choices differ"
        else:
            assert question["type"] == SURVEY_TYPES[option["type"]], f"{where}: type {question['type']}"

        if "default" in option:
            assert "default" in question, f"{where}: the spec's default is missing"
            assert question["default"] == _survey_default(option), f"{where}: default differs"
        else:
            assert question.get("default") in (None, ""), f"{where}: default the spec does not have"
        if question["type"] == "integer" and "min" in question and "default" in question:
            assert question["min"] <= question["default"], f"{where}: default below min"

    for name, option in options.items():
        if _asked(option):
            assert name in questions, f"{runbook}: option {name} is not asked in the survey"
        else:
            # Neither required nor defaulted: set as an extra variable at launch, never as a blank answer.
            assert name not in questions, f"{runbook}: optional {name} without default must not be a question"
            assert template["ask_variables_on_launch"], f"{runbook}: {name} needs ask_variables_on_launch"


def _first_task(playbook_path):
    plays = _load(playbook_path)
    first = plays[0]
    tasks = first.get("pre_tasks") or first.get("tasks") or []
    return first, tasks[0] if tasks else {}


@pytest.mark.parametrize("runbook", sorted(name for name in SPECS if SPECS[name].get("options")))
def test_runbook_validates_its_variables_first(runbook):
    path = _existing_playbook(runbook)
    play, task = _first_task(path)
    validates = "ansible.builtin.validate_argument_spec" in task
    assert play["hosts"] == "localhost", f"{runbook}: the first play must run on localhost, before any host"
    assert validates, f"{runbook}: first task is not validate_argument_spec"
    spec_ref = task["ansible.builtin.validate_argument_spec"]["argument_spec"]
    assert f"argument_specs.{runbook}.options" in spec_ref, f"{runbook}: validates another runbook's spec"
    assert "vars/argument_specs.yml" in yaml.safe_dump(task), f"{runbook}: spec not read from vars/argument_specs.yml"


@pytest.mark.parametrize("runbook", sorted(name for name in SPECS if SPECS[name].get("options")))
def test_playbook_defaults_agree_with_the_spec(runbook):
    with open(_existing_playbook(runbook), encoding="utf-8") as handle:
        text = handle.read()
    for name, option in SPECS[runbook]["options"].items():
        if "default" not in option:
            continue
        for literal in re.findall(rf"\b{name}\s*\|\s*default\(([^()]*)\)", text):
            assert yaml.safe_load(literal) == option["default"], (
                f"{runbook}: {name} | default({literal}) but the spec says {option['default']!r}"
            )


def test_configure_applies_the_data_file():
    plays = _load(os.path.join(AWX, "configure.yml"))
    assert "job_templates.yml" in plays[0]["vars_files"]
    modules = {key for task in plays[0]["tasks"] for key in task if key.startswith("awx.awx.")}
    for module in ("organization", "credential", "execution_environment", "project", "inventory",
                   "inventory_source", "job_template"):
        assert f"awx.awx.{module}" in modules


def _requirements_pins():
    pins = {}
    with open(os.path.join(REPO, "requirements.txt"), encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[name.lower()] = version
    return pins


def test_execution_environment_builds_a_context_with_the_pinned_dependencies(tmp_path):
    builder = os.path.join(REPO, ".venv", "bin", "ansible-builder")
    if not os.path.exists(builder):
        builder = shutil.which("ansible-builder")
    assert builder, "ansible-builder is not installed (requirements.txt)"

    # The definition copies the tarball of `make build` from ../.lab/build; lay out the same tree
    # in tmp_path so the test builds its own tarball and leaves the repository alone.
    version = _load(os.path.join(REPO, "galaxy.yml"))["version"]
    shutil.copytree(AWX, tmp_path / "awx")
    subprocess.run(
        [os.path.join(REPO, ".venv", "bin", "ansible-galaxy"), "collection", "build",
         "--output-path", str(tmp_path / ".lab" / "build"), REPO],
        check=True, capture_output=True, cwd=REPO,
    )
    context = tmp_path / "context"
    subprocess.run(
        [builder, "create", "-f", str(tmp_path / "awx" / "execution-environment.yml"), "--context", str(context)],
        check=True, capture_output=True, cwd=tmp_path,
    )

    containerfile = (context / "Containerfile").read_text()
    pins = _requirements_pins()
    assert 'ARG EE_BASE_IMAGE="' in containerfile
    assert f"ansible-core=={pins['ansible-core']}" in containerfile

    python_deps = (context / "_build" / "requirements.txt").read_text()
    for name in ("psycopg[binary]", "boto3", "xxhash", "cryptography"):
        assert f"{name}=={pins[name]}" in python_deps, f"{name} is not pinned as in requirements.txt"

    bindep = (context / "_build" / "bindep.txt").read_text()
    for package in ("rsync", "openssh-client"):
        assert re.search(rf"^{package}\b", bindep, re.MULTILINE), f"{package} is not a system package"

    galaxy = _load(context / "_build" / "requirements.yml")
    (collection,) = galaxy["collections"]
    assert collection["name"].endswith(f"chom-storage-{version}.tar.gz"), "the EE installs another version"
    assert (context / "_build" / collection["name"]).is_file(), "the collection tarball is not in the context"
