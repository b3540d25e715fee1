# The README's two commands: `make demo` (the main job) and `make test` (the whole suite; CI runs it).
.PHONY: demo test lint typecheck install model docker container-test

install:
	bash scripts/install.sh

demo: install
	bash scripts/demo.sh

# Lint, format check, type check, then pytest. The container tests that need Docker run when a daemon
# answers or RNNMT_CONTAINER_TEST=1 (.ci/run sets it, and they then install and start Docker as root on
# Debian); `make container-test` runs them alone.
test: lint typecheck
	.venv/bin/pytest

model: install
	PAIR=$(PAIR) bash scripts/ship_model.sh

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# mypy cannot follow the editable install's import hook, so the installed layout ([tool.setuptools]
# package-dir: training/ is rnnmt.training, ...) is laid out as symlinks in build/typecheck, which
# [tool.mypy] mypy_path points at; [tool.mypy] also says which packages are checked.
typecheck: install
	rm -rf build/typecheck
	mkdir -p build/typecheck/rnnmt
	ln -s $(CURDIR)/rnnmt/* $(CURDIR)/training $(CURDIR)/serving $(CURDIR)/tokenizers build/typecheck/rnnmt/
	.venv/bin/mypy

docker: install
	bash scripts/docker-build.sh

container-test: install
	RNNMT_CONTAINER_TEST=1 .venv/bin/pytest -q tests/test_containers.py
