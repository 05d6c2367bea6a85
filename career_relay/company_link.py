"""The company link (SPEC 10): what it accepts, which offer it makes, the mail it sends.

A company whose mail does not pass the gateway pastes one fixed URL,
``{site.public_url}/j/{company_token}``, into its rejection template.  A
candidate who follows it types an address; the site sends a mail with a
personal consent link (``/c/{token}``, the very kind the gateway injects) to
that address and nowhere else, and only that link leads to the consent page
(double opt-in).  Nothing here sees a socket: the site's views
(``consent_site.company_link``) and its mailer call these functions.

- **The address** is checked strictly (``normal_address``): one plain
  ``local@domain``, ASCII after NFKC (a full-width address typed with a
  Japanese input method is folded to ASCII), no quotes, comments, routes,
  ``%`` or ``!`` (old relays route on them), no spaces or control
  characters, a domain of DNS labels under an alphabetic top-level domain.
  Nothing else can ride into a header or an SMTP command.
- **One offer per address and period** (``offer_message_id``): typed again
  within half the link's lifetime, an address gets the same offer and link,
  so a candidate who asks twice does not count twice; the link then still has
  at least half its lifetime left.  The offer's message id is keyed
  (``message_id_key``): ``(company, message_id, recipient)`` is unique in the
  ledger, so whoever could compute the id of an address's link offer could
  name that offer through the gateway (a relayed mail with that Message-ID)
  and be answered, or make it first, with a source that needs no review.
- **The mail** (``personal_mail``) is fixed text from ``templates/emails/``
  (``link_ja.txt``, ``link_en.txt``) with the company's and agency's names and
  the link: nothing the visitor typed is in it but the ``To`` address, which
  ``normal_address`` made safe.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import re
import unicodedata
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from string import Template

from career_relay.paths import email_templates_dir
from career_relay.settings_table import CompanySettings, Settings

#: The message id of a link offer (``offer_message_id``): its period and a keyed digest.
#: Offers made before it was keyed have ``<company-link.{period}@career-relay.invalid>``
#: and are still found by their id, as every offer is.
MESSAGE_ID = "<company-link.{period}.{digest}@career-relay.invalid>"
MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path of 256 octets, with its angle brackets
MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1

_LOCAL = re.compile(r"[A-Za-z0-9_+=-]+(?:\.[A-Za-z0-9_+=-]+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})")
_SECONDS_PER_DAY = 86400


def normal_address(typed: object) -> str | None:
    """The address typed, checked and normalised (the domain lower-cased); None when it
    is not one plain mailbox we would send to."""
    if not isinstance(typed, str) or len(typed) > 4 * MAX_ADDRESS:
        return None
    text = unicodedata.normalize("NFKC", typed).strip(" ")  # spaces only: no CR, LF, U+2028
    local, at, domain = text.rpartition("@")
    if not at or len(text) > MAX_ADDRESS or len(local) > MAX_LOCAL:
        return None
    if not (_LOCAL.fullmatch(local) and _DOMAIN.fullmatch(domain)):
        return None
    return f"{local}@{domain.lower()}"


#: Providers known to ignore the dots of a local part (``v.ictim@`` is ``victim@``), and
#: the one domain each is also known by.
_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def throttle_key(address: str) -> str:
    """Who an address reaches, for counting mails to it: case folded and a ``+tag``
    dropped, so ``Victim+1@`` and ``victim+2@`` are one mailbox to the per-address limit;
    at Gmail the dots of the local part too (``v.i.ctim@googlemail.com`` is
    ``victim@gmail.com``)."""
    local, _, domain = address.rpartition("@")
    local, domain = local.split("+", 1)[0].lower(), domain.lower()
    if domain in _DOTLESS:
        local, domain = local.replace(".", ""), _DOTLESS[domain]
    return f"{local}@{domain}"


def own_address(company: CompanySettings, address: str) -> bool:
    """An address in the company's own domains: never offered a link (SPEC 5, 8)."""
    return address.rpartition("@")[2].lower() in {d.lower() for d in company.domains}


def message_id_key(hash_key: bytes) -> bytes:
    """The key of the link offers' message ids, derived from the ledger's hash key
    (``ledger.settings_hash_key``: set once and never changed, so an id stays the same
    across restarts and signing-key rotations) for this purpose alone."""
    return hmac.new(hash_key, b"career-relay company-link message id", hashlib.sha256).digest()


def offer_message_id(key: bytes, company: str, address: str, now: float,
                     link_max_age_days: int) -> str:
    """The message id of ``company``'s link offer to ``address`` (as ``normal_address``
    returned it) at ``now``: one per half link lifetime, and nobody without ``key``
    (``message_id_key``) can compute it.

    ``(company, message_id, recipient)`` is unique in the ledger, so an address typed
    again in the same period finds the offer made the first time; a link re-sent from
    that offer (signed at its creation) has at least half its lifetime left.
    """
    half = max(1, link_max_age_days * _SECONDS_PER_DAY // 2)
    period = int(now // half)
    # Each part is free of NUL (a company id, digits, a checked address): unambiguous.
    material = "\0".join((company, str(period), address)).encode("utf-8")
    digest = hmac.new(key, material, hashlib.sha256).hexdigest()[:32]  # 128 bits
    return MESSAGE_ID.format(period=period, digest=digest)  # RFC 5322 3.6.4: a dot-atom


def _template(locale: str) -> Template:
    return Template((email_templates_dir() / f"link_{locale}.txt").read_text(encoding="utf-8"))


SUBJECTS = {"ja": "【{company}】ご登録のご案内（ご本人確認）",
            "en": "{company}: your personal link (please confirm it is you)"}


def personal_mail(settings: Settings, company: CompanySettings, recipient: str, url: str,
                  locale: str, now: dt.datetime) -> EmailMessage:
    """The mail with the personal link, to ``recipient`` (an address ``normal_address``
    returned) and nobody else."""
    if normal_address(recipient) != recipient:
        raise ValueError("the recipient must be an address normal_address returned")
    locale = locale if locale in SUBJECTS else "ja"
    hostname = settings.gateway.hostname
    agency = settings.agency_of(company.id) or settings.agency
    text = _template(locale).safe_substitute(
        company_name=company.name, agency_name=agency.name,
        agency_license_no=agency.license_no, link=url,
        days=str(settings.site.link_max_age_days))
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = Address(display_name=company.name, addr_spec=f"career-relay@{hostname}")
    msg["To"] = recipient
    msg["Subject"] = SUBJECTS[locale].format(company=company.name)
    msg["Date"] = email.utils.format_datetime(now.astimezone(dt.UTC))
    msg["Message-ID"] = email.utils.make_msgid("company-link", domain=hostname)
    # RFC 3834: a machine's mail; vacation responders and the like stay quiet.
    msg["Auto-Submitted"] = "auto-generated"
    # Base64, not quoted-printable: a soft line break would cut the link in two for
    # whoever reads the raw message (issue 14, "the first hour").
    msg.set_content(text, charset="utf-8", cte="base64")
    return msg
