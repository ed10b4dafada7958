"""PII redaction: datatrove's ``PIIFormatter`` (e-mail and IP addresses), counted."""

from __future__ import annotations

from collections import Counter

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.formatters import PIIFormatter

from datagen.steps.counting import flush_counts


class _CountingValidator:
    """Stands in for a datatrove ``PIIReplacer``'s validator: decides as the original does (every match,
    when there is none) and counts the matches it lets the replacer replace."""

    def __init__(self, inner=None):
        self.inner = inner
        self.count = 0

    def __call__(self, match: str) -> bool:
        ok = self.inner is None or bool(self.inner(match))
        self.count += ok
        return ok


class PIIRedactor(PIIFormatter):
    """datatrove's ``PIIFormatter``: e-mail addresses and (public) IP addresses in the text are replaced by
    datatrove's placeholders (or the given ones, used in turn). Counts the documents changed and the
    addresses replaced (``redacted_documents``, ``redacted_emails``, ``redacted_ips``).

    Args:
        emails: replace e-mail addresses.
        ips: replace IP addresses.
        only_public_ips: only globally routable IPs (private, loopback and reserved ones stay).
        email_replacement: replacements used in turn (None: datatrove's example.com/.org addresses).
        ip_replacement: replacements used in turn (None: datatrove's list).
    """

    name = "📞 PII redaction (counted)"

    def __init__(
        self,
        emails: bool = True,
        ips: bool = True,
        only_public_ips: bool = True,
        email_replacement: list[str] | None = None,
        ip_replacement: list[str] | None = None,
    ):
        kwargs = {}
        if email_replacement:
            kwargs["email_replacement"] = tuple(email_replacement)
        if ip_replacement:
            kwargs["ip_replacement"] = tuple(ip_replacement)
        super().__init__(remove_emails=emails, remove_ips=ips, only_remove_public_ips=only_public_ips, **kwargs)
        self.emails_replacer.validator = _CountingValidator(self.emails_replacer.validator)
        self.ip_replacer.validator = _CountingValidator(self.ip_replacer.validator)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        emails, ips = self.emails_replacer.validator, self.ip_replacer.validator
        counts: Counter = Counter()
        try:
            for doc in data:
                e0, i0 = emails.count, ips.count
                with self.track_time():
                    doc.text = self.format(doc.text)
                n_emails, n_ips = emails.count - e0, ips.count - i0
                counts["total"] += 1
                if n_emails or n_ips:
                    counts["redacted_documents"] += 1
                    counts["redacted_emails"] += n_emails
                    counts["redacted_ips"] += n_ips
                yield doc
        finally:
            flush_counts(self, counts)
