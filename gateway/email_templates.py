"""The text the gateway puts into rejections: consent blocks and the internal sentence.

Templates live in ``templates/emails/`` (see its README): ``${name}``
placeholders filled with ``string.Template.safe_substitute`` (a stray ``$``
never raises), values HTML-escaped in the HTML blocks.  Each recipient's
``Replacement`` is built here from the rendered block and the recipient's
own link.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from string import Template

from career_relay.settings import AgencySettings, CompanySettings
from gateway.inject import Replacement
from gateway.textparts import MARKER

_MARK = MARKER.decode()


@dataclass(frozen=True)
class CompanyTexts:
    """A company's blocks and internal sentence, rendered once (the link left as the marker)."""

    text_block: str
    html_block: str
    internal: str

    def for_candidate(self, url: str) -> Replacement:
        esc = html.escape(url, quote=True)
        return Replacement(
            text=url,
            html_attr=esc,
            html_text=f'<a href="{esc}">{esc}</a>',
            text_block=self.text_block.replace(_MARK, url),
            html_block=self.html_block.replace(_MARK, esc),
        )

    def for_internal(self) -> Replacement:
        """Colleagues get one neutral sentence where the link would be, and no link."""
        esc = html.escape(self.internal)
        return Replacement(
            text=self.internal,
            html_attr=None,  # the whole link element gives way to the sentence
            html_text=esc,
            text_block="\n" + self.internal,
            html_block=f"<p>{esc}</p>",
        )


def load(directory: Path, company: CompanySettings, agency: AgencySettings) -> CompanyTexts:
    locale = company.locale if company.locale in ("ja", "en") else "ja"
    values = {"company_name": company.name or company.id, "agency_name": agency.name,
              "agency_license_no": agency.license_no}
    escaped = {k: html.escape(v) for k, v in values.items()}
    return CompanyTexts(
        text_block=Template((directory / f"block_{locale}.txt").read_text(encoding="utf-8"))
        .safe_substitute(values),
        html_block=Template((directory / f"block_{locale}.html").read_text(encoding="utf-8"))
        .safe_substitute(escaped),
        internal=(directory / f"internal_{locale}.txt").read_text(encoding="utf-8").strip(),
    )
