"""The rules a ledger applies, from the settings: how many qualified forwards make a
credit, each company's own domains, the key of the hashes that stand for candidates.

Built once per process by ``open_configured`` (``Ledger.rules``) and again on reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from career_relay.domains import a_label, address_domain
from career_relay.ledger import chain as ledger_chain
from career_relay.ledger.chain import DEFAULT_HASH_KEY
from career_relay.settings_table import Settings


def settings_hash_key(settings: Settings) -> bytes:
    """``secrets.hash_key``, or when it is empty the oldest signing key (the last listed), as
    ``Rules`` always did."""
    keys = settings.secrets.signing_keys
    key = settings.secrets.hash_key or (keys[-1] if keys else "")
    return key.encode("utf-8")



@dataclass(frozen=True)
class Rules:
    credit_every: int = 10
    domains: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hash_key: bytes = DEFAULT_HASH_KEY
    #: ``ledger.qualify_on``: "delivered", or "registered" (an outcome of QUALIFYING too).
    qualify_on: str = "delivered"

    def __post_init__(self) -> None:
        # Kept as A-labels, however configured: compared with an address's (``own``).
        object.__setattr__(self, "domains", {
            company: frozenset(a_label(d) for d in domains)
            for company, domains in self.domains.items()})

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(settings.ledger.credit_every,
                   {c.id: frozenset(c.domains) for c in settings.companies},
                   settings_hash_key(settings), settings.ledger.qualify_on)

    def candidate(self, address: str) -> str:
        """The keyed hash that stands for a candidate (SPEC 9: it outlives the address)."""
        return ledger_chain.candidate_hash(self.hash_key, address)

    def own(self, company: str, address: str) -> bool:
        """Whether ``address`` is in one of ``company``'s domains, compared as A-labels
        (``アクメ.jp`` is ``xn--cck0a4k.jp``; a soft hyphen or full-width letters hide
        nothing: ``career_relay.domains``)."""
        return address_domain(address) in self.domains.get(company, frozenset())
