"""A user's own datatrove filters, outside datagen: the tests name them as "tests.datagen.user_filters:<Class>"."""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter


class DropIdSuffix(BaseFilter):
    """Drops documents whose id ends with ``suffix`` (reason ``id_suffix``): a drop count the test can predict."""

    name = "✂️ drop by id suffix"

    def __init__(self, suffix: str = "7", exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.suffix = suffix

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return not doc.id.endswith(self.suffix) or (False, "id_suffix")


class NotAFilter:
    """Has a ``filter`` method but is no datatrove step: the config must refuse it."""

    def filter(self, doc) -> bool:
        return True


class Sleep(BaseFilter):
    """Keeps every document after ``seconds`` of sleep: a stage that is still running when a test kills it."""

    name = "💤 sleep"

    def __init__(self, seconds: float = 0.05, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.seconds = seconds

    def filter(self, doc: Document) -> bool:
        import time

        time.sleep(self.seconds)
        return True
