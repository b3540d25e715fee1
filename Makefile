# The README's two commands: `make demo` (the main job) and `make test` (the whole suite; CI runs it).
.PHONY: demo test lint install model docker container-test

install:
	bash scripts/install.sh

demo: install
	bash scripts/demo.sh

test: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest

model: install
	bash scripts/ship_model.sh

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

docker: install
	bash scripts/docker-build.sh

container-test: install
	bash scripts/container-test.sh
