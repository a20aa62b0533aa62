"""The ``>>>`` examples in the docstrings of the Rust extension's classes run and hold
(pytest's --doctest-modules collects the Python modules, not the compiled one)."""

import doctest

import pytest

import embcore._core as core

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
