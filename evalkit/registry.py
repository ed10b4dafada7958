"""evalkit's extension points: ``SUITES`` (what ``suites:`` names) and ``JUDGES`` (the refusal/harm judges).

A suite is one ``@SUITES.register("name")`` above a function ``(Context) -> SuiteResult`` in
``evalkit/suites.py``; a judge is one ``@JUDGES.register("name")`` above a class in ``evalkit/judges.py``
(protocol there) plus the fields it reads in ``evalkit.config.JudgeConfig``.

This module imports nothing from evalkit, so that ``evalkit.config`` can check ``suites:`` against
``SUITES`` although the suites import the config. Each registry names the modules that register its
built-in entries and imports them the first time it is read (a lookup, ``in``, iteration), not when
it is imported: by then the config module is complete, whichever module was imported first.
"""

from __future__ import annotations

from infra.registry import Registry

__all__ = ["SUITES", "JUDGES"]

SUITES = Registry("evalkit suite", builtins=("evalkit.suites",))
# the judges a config can name in ``judges.use`` (``kind``); ``module:Class`` names a user's own
JUDGES = Registry(
    "evalkit judge", allow_import=True, builtins=("evalkit.rules", "evalkit.llm_judge", "evalkit.classifier_judge")
)
