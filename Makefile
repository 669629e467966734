# Entry points for a fresh machine. `make demo` and `make test` set up .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: env demo test test-pythons lint bench-smoke colcon-check clean

env:
	@bash scripts/setup_env.sh

demo: env
	$(PY) -m sole_r1_tools.demo $(ARGS)

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

# the unit tests (no running ROS graph) under Python 3.10 and 3.12, in .venv-py310 / .venv-py312
test-pythons:
	@bash scripts/test_python_versions.sh

lint: env
	@VENV=$(VENV) bash scripts/lint.sh

# every bench once with its smallest settings: keeps them runnable (the figures are not measurements)
bench-smoke: env
	$(PY) bench/smoke.py

colcon-check: env
	@bash scripts/check_colcon_build.sh

clean:
	rm -rf build install log .pytest_cache .mypy_cache .ruff_cache demo_output
