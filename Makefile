# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python scripts/demo.py

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests notebooks --nbmake --durations=15

bench: $(STAMP)
	@for script in scripts/bench_*.py; do [ -e "$$script" ] || continue; echo "== $$script"; $(VENV)/bin/python "$$script" || exit 1; done

clean-venv:
	rm -rf $(VENV)
