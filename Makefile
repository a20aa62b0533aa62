# Developer shortcuts. CI runs .ci/run, which calls the same commands.
PYTHON ?= python3

.PHONY: install dev lint test test-rust bench bench-quick clean

install:
	$(PYTHON) -m pip install .

dev:
	$(PYTHON) -m pip install -e ".[test]"

lint:
	$(PYTHON) scripts/check_layers.py src
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	ruff check python tests
	ruff format --check python tests
	mypy python/embcore
	$(PYTHON) -m mypy.stubtest embcore._core --allowlist scripts/stubtest_allowlist.txt

test-rust:
	cargo test --no-default-features

test: test-rust
	$(PYTHON) -m pytest -q

bench:
	embcore bench --out bench.json

bench-quick:
	embcore bench --quick --out bench-quick.json

clean:
	cargo clean
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist
