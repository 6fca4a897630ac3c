"""Access to the raw-message corpus of tests/mailparse/corpus."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"
CORPUS_NAMES = sorted(path.name for path in CORPUS.glob("*.eml"))


def read_corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@pytest.fixture
def eml() -> Callable[[str], bytes]:
    """Return a loader for corpus messages by file name."""
    return read_corpus
