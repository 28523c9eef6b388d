# Two commands for a fresh Linux machine with Python 3.11:
#   make run    set up .venv and execute every notebook headless on the embedded model (outputs in runs/)
#   make test   set up .venv and run the whole test suite
#   make lab    set up .venv and open the notebooks in JupyterLab (more options in LAB_ARGS, e.g. --no-browser)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lab clean

setup: $(STAMP)

# requirements/official.txt: official VBench / pyiqa code for tests/test_official_networks.py, installed without
# their (heavy, unused) dependencies
$(STAMP): pyproject.toml requirements/lock.txt requirements/official.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/lock.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements/official.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

run: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m ieadapt_interp.notebook_runner --out runs

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

# root (containers, CI machines) needs --allow-root to start the server
LAB_ARGS ?=
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: setup
	HF_HUB_OFFLINE=1 $(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(LAB_ROOT) $(LAB_ARGS)

clean:
	rm -rf $(VENV) runs
