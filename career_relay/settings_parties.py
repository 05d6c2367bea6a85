"""The settings of the parties the relay serves: the agencies and the companies.

Part of the one settings table (``career_relay.settings_table``): ``[agency]`` (the single
agency of old, id ``default``), ``[[agencies]]`` (SPEC 11) and ``[[companies]]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from career_relay.settings_base import DEFAULT_AGENCY, _Section, setting


@dataclass(frozen=True, repr=False)
class AgencySettings(_Section):
    name: str = setting("株式会社サンプル人材", "Legal name of the agency shown to candidates.")
    license_no: str = setting("13-ユ-000000", "Recruitment licence number shown to candidates.")
    privacy_url: str = setting("https://agency.example/privacy", "The agency's privacy policy.")
    deliver: str = setting(
        "webhook",
        "webhook | email | pull: how forwards reach the agency.  pull: nothing is sent; the "
        "agency pulls GET /api/v1/agency/forwards with its key, and asking for the page after "
        "a cursor acknowledges every forward up to it (delivered then).")
    webhook_url: str = setting(
        "", "Where forwards are POSTed as JSON: https:// (http:// only to this machine's loopback)."
    )
    webhook_secret: str = setting("", "HMAC key for X-Career-Relay-Signature.", secret=True)
    email: str = setting("", "Where forwards are mailed when deliver = email.")
    retention_months: int = setting(
        24, "Months the agency keeps a registered candidate's data (shown on the consent page)."
    )
    contact: str = setting(
        "", "How candidates reach the agency about their data (an e-mail address or URL)."
    )
    retry_schedule: tuple[int, ...] = setting(
        [10, 30, 60, 300, 900, 1800, 3600],
        "Seconds to wait before each retry of a forward the agency did not take; the last "
        "repeats (a forward is never dropped).",
    )
    timeout: int = setting(30, "Seconds to wait for the agency's webhook to answer.")


@dataclass(frozen=True, repr=False)
class AgencyEntrySettings(AgencySettings):
    """One ``[[agencies]]`` table: an agency with an ``id``, and every key of ``[agency]``.

    Its legal name, licence number and privacy policy have no sample default here: the
    consent page shows them, so each agency's own must be given (``check-config``).
    """

    name: str = setting("", "Legal name of the agency shown to candidates (required).")
    license_no: str = setting(
        "", "Recruitment licence number shown to candidates (required).")
    privacy_url: str = setting("", "The agency's privacy policy (required).")
    id: str = setting(
        "",
        "Short identifier that companies.agency names (lower-case letters, digits, - and _). "
        '"default" is the agency of every company that names none; the single [agency] table '
        "is that agency when no [[agencies]] entry has this id.",
    )


@dataclass(frozen=True, repr=False)
class CompanySettings(_Section):
    id: str = setting("", "Short identifier used in reports and the command line.")
    name: str = setting("", "The company's name as candidates know it.")
    domains: tuple[str, ...] = setting(
        [], "Its From domains; also the domains of its internal recipients."
    )
    locale: str = setting("ja", "ja | en: language of the appended block and the pages.")
    detect: str = setting("marker", "marker | auto: how rejections are recognised.")
    dkim_selector: str = setting("", "DKIM selector of the company's signing key.")
    dkim_key_file: str = setting("", "PEM RSA private key for DKIM signing.", path=True)
    smtp_username: str = setting("", "User name the company's systems authenticate with.")
    smtp_password_hash: str = setting(
        "", "argon2 hash of the SMTP password (career-relay hash-password).", secret=True
    )
    allow_ips: tuple[str, ...] = setting(
        [],
        "This company's own sending hosts (CIDR): their mail is the company's without AUTH. "
        "Never a shared provider range (Microsoft 365, Google) without a second proof.",
    )
    agency: str = setting(
        DEFAULT_AGENCY,
        "The id of the agency this company's candidates register with ([[agencies]]; "
        '"default": the [agency] table). Its forwards go to that agency alone, and the '
        "consent page names it.",
    )
    referral_value: int = setting(
        0,
        "Yen one free referral is worth to the company (what it would pay an agency for a "
        "hire): the report's recovered_value is the referrals received times this. 0: not "
        "set. Reports only; nothing is billed.",
    )
