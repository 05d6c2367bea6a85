"""One form of a domain for comparing: its A-label (the ASCII ``xn--`` form).

A company's own domains are compared with an address's in several places (the API's
staff check, ``Rules.own`` in qualification).  Compared as typed, ``x@acme\\u00ad.example``
(a soft hyphen, which IDNA maps to nothing) passed for an outside address, and
``アクメ.jp`` configured did not match its punycode ``xn--cck0a4k.jp`` (attack review).
``a_label`` maps both sides through IDNA 2008 with the UTS 46 mapping (RFC 5891,
UTS 46 section 4: width and case folded, ignorable code points dropped), as a browser or
a mail client would before looking the name up.
"""

from __future__ import annotations

import unicodedata

import idna


def a_label(domain: str) -> str:
    """``domain`` as its lower-case A-label; as NFKC, lower-cased, when IDNA refuses it
    (then it is no name a mail server resolves, and it matches only itself)."""
    name = domain.strip().rstrip(".")
    try:
        return idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:  # Python's IDNA 2003 codec: underscores and the like, which IDNA 2008 refuses
        return unicodedata.normalize("NFKC", name).encode("idna").decode("ascii").lower()
    except UnicodeError:
        return unicodedata.normalize("NFKC", name).lower()


def address_domain(address: str) -> str:
    """The A-label of the domain of ``local@domain``."""
    return a_label(address.rpartition("@")[2])
