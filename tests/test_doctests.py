"""The ``>>>`` examples in the docstrings of every embcore module and of the Rust
extension's classes run and hold. The modules are the *installed* package (so this works
after a plain ``pip install .``, where pytest's --doctest-modules would import the source
tree and clash with the installed copy)."""

import doctest
import importlib
import pkgutil

import pytest

import embcore
import embcore._core as core

MODULES = sorted(
    name
    for _, name, _ in pkgutil.iter_modules(embcore.__path__, "embcore.")
    if name != "embcore._core"
)


@pytest.mark.parametrize("name", ["embcore", *MODULES])
def test_module_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert failures == 0, f"{failures} doctest example(s) of {name} failed; run python -m doctest"


CLASSES = [
    getattr(core, name) for name in sorted(dir(core)) if isinstance(getattr(core, name), type)
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_class_docstring_examples(cls: type) -> None:
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(cls, cls.__name__, globs={}):
        runner.run(test)
    assert runner.failures == 0


def test_every_public_class_documents_its_constructor() -> None:
    for name in (
        "EmbeddingTable",
        "MatrixFactorization",
        "FieldAwareFM",
        "FactorizationMachine",
        "Monitor",
    ):
        doc = getattr(core, name).__doc__ or ""
        assert f"{name}(" in doc, f"{name}'s docstring does not show its constructor"
