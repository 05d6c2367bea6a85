"""The mail bench/relay_bench.py sends: realistic Japanese company mail, ~10 KB.

Every message is multipart/alternative (text/plain + text/html), UTF-8 and
quoted-printable, so it is 7-bit clean: smtp-source speaks HELO, not EHLO, and
so cannot ask for 8BITMIME. ``build_message(size, kind)`` makes one kind:

``pass-through``
    the rejection text without the marker, From sender@acme.example (what the
    pass-through run has always sent; no company is configured in that run).
``rejection``
    the rejection with the marker in both parts (the plain text on a line of its
    own, the HTML in an href), From hr@acme.example: what a company sends.
``unmarked``
    an お祈りメール (誠に残念ながら…見送らせていただきます…) without the marker and
    without X-Career-Relay, From hr@acme.example: the classifier calls it a
    rejection, so a ``detect = "marker"`` company gets it counted as unmarked.
``interview``
    an interview invitation (面接のご案内, 日程調整), From hr@acme.example: ordinary
    company mail that neither the marker nor the classifier takes for a rejection.
``unconfigured``
    the same invitation From sender@other.example, a domain no company has.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP

MARKER = "[[CAREER_RELAY_LINK]]"
RECIPIENT = "rcpt@candidate.example"  # the To: header (smtp-source sets the envelope)

_REJECTION = [
    "この度は、株式会社アクメの営業職（東京本社）にご応募いただき、誠にありがとうございました。"
    "慎重に選考を進めました結果、誠に残念ながら、今回はご期待に沿えない結果となりました。",
    "多数のご応募をいただいた中で、ご経歴やご経験を拝見し、社内で検討を重ねましたが、"
    "現在の募集要件との兼ね合いにより、このような判断となりましたことをご了承ください。",
    "なお、選考内容に関するお問い合わせにはお答えいたしかねますので、あらかじめご了承ください。"
    "お預かりした応募書類は、当社の個人情報保護方針に基づき責任をもって破棄いたします。",
    "Thank you for your interest in Acme Corporation. After careful consideration we have "
    "decided not to proceed with your application at this time. We wish you every success.",
    "末筆ながら、今後のご活躍を心よりお祈り申し上げます。何卒よろしくお願い申し上げます。",
]

# The rejection as a company writes it without the gateway's template: no marker.
_UNMARKED = [
    "この度は、株式会社アクメの営業職（東京本社）にご応募いただき、誠にありがとうございました。"
    "慎重に選考を進めました結果、誠に残念ながら、今回は採用を見送らせていただきます。",
    *_REJECTION[1:],
]

_INTERVIEW = [
    "この度は、株式会社アクメの営業職（東京本社）にご応募いただき、誠にありがとうございます。"
    "書類を拝見し、ぜひ一度お会いしてお話を伺いたく、一次面接のご案内をお送りいたします。",
    "つきましては、下記の候補からご都合のよい日時を三つほどお選びいただき、"
    "今週金曜日までに本メールへご返信ください。面接はオンライン（Zoom）または"
    "東京本社での対面のいずれかをお選びいただけます。日程調整のうえ、改めてご連絡いたします。",
    "【面接概要】所要時間：約60分／面接官：営業部長、人事部採用担当／内容：これまでのご経験と"
    "志望動機のお伺い、営業職の業務内容のご説明、質疑応答。"
    "【候補日】12月1日（火）10:00〜18:00、12月2日（水）13:00〜18:00、12月4日（金）10:00〜15:00。",
    "対面の場合は、東京本社（東京都千代田区丸の内一丁目）の受付で「採用面接」とお伝えください。"
    "オンラインの場合は、確定後に接続用のURLをお送りします。筆記用具のみご持参ください。",
    "Thank you for applying to Acme Corporation. We would like to invite you to a first "
    "interview; please reply with three times that suit you from the dates above.",
    "ご不明な点がございましたら、採用担当までお気軽にお問い合わせください。"
    "当日お会いできますことを楽しみにしております。何卒よろしくお願い申し上げます。",
]

# The optional-referral block of templates/emails/rejection_ja.*, with the marker.
_REFERRAL_PLAIN = (
    "――――――――――――――――――――――――――――\n"
    "【任意のご案内】提携人材紹介会社へのご登録について\n\n"
    "弊社は、人材紹介会社 株式会社キャリアブリッジ（有料職業紹介事業 許可番号：13-ユ-000000）と"
    "提携しております。ご希望の場合に限り、下記の山田様専用ページから、"
    "同社への求職者登録をお申し込みいただけます。\n\n"
    f"{MARKER}\n\n"
    "・ご登録は任意です。ご利用にならなくても、今回の選考結果に影響することは一切ございません。\n"
    "・ご希望でない場合は、何もしていただく必要はございません。本メールへのご返信も不要です。\n"
    "――――――――――――――――――――――――――――"
)
_REFERRAL_HTML = (
    "<hr>\n<h2>【任意のご案内】提携人材紹介会社へのご登録について</h2>\n"
    "<p>弊社は、人材紹介会社 株式会社キャリアブリッジ（有料職業紹介事業 許可番号：13-ユ-000000）と"
    "提携しております。ご希望の場合に限り、下記の山田様専用ページから、"
    "同社への求職者登録をお申し込みいただけます。</p>\n"
    f'<p><a href="{MARKER}">株式会社キャリアブリッジ へのご登録ページ（任意）</a></p>\n'
    "<p>・ご登録は任意です。ご利用にならなくても、今回の選考結果に影響することは一切ございません。"
    "</p>\n<p>・ご希望でない場合は、何もしていただく必要はございません。</p>\n<hr>"
)

_RESULT_SUBJECT = "【選考結果のご連絡】営業職（東京本社）へのご応募について"
_RESULT_TITLE = "選考結果のご連絡"
_INTERVIEW_SUBJECT = "【一次面接のご案内】営業職（東京本社）"
_INTERVIEW_TITLE = "一次面接のご案内"


@dataclass(frozen=True)
class Kind:
    sender: str
    message_id: str
    subject: str
    title: str
    paragraphs: tuple[str, ...]
    referral: bool = False  # the marker block, in both parts
    display: str = "株式会社アクメ 採用担当"


KINDS: dict[str, Kind] = {
    "pass-through": Kind("sender@acme.example", "<bench-rejection-0001@acme.example>",
                         _RESULT_SUBJECT, _RESULT_TITLE, tuple(_REJECTION)),
    "rejection": Kind("hr@acme.example", "<bench-rejection-0002@acme.example>",
                      _RESULT_SUBJECT, _RESULT_TITLE, tuple(_REJECTION), referral=True),
    "unmarked": Kind("hr@acme.example", "<bench-unmarked-0001@acme.example>",
                     _RESULT_SUBJECT, _RESULT_TITLE, tuple(_UNMARKED)),
    "interview": Kind("hr@acme.example", "<bench-interview-0001@acme.example>",
                      _INTERVIEW_SUBJECT, _INTERVIEW_TITLE, tuple(_INTERVIEW)),
    "unconfigured": Kind("sender@other.example", "<bench-interview-0002@other.example>",
                         _INTERVIEW_SUBJECT, _INTERVIEW_TITLE, tuple(_INTERVIEW),
                         display="採用担当"),
}  # fmt: skip


def _bodies(kind: Kind, paragraph_count: int) -> tuple[str, str]:
    source = kind.paragraphs
    paragraphs = [source[i % len(source)] for i in range(paragraph_count)]
    html_paragraphs = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    if kind.referral:  # the marker goes into both parts, as in the templates companies paste
        paragraphs.append(_REFERRAL_PLAIN)
        html_paragraphs += "\n" + _REFERRAL_HTML
    plain = "山田 太郎 様\n\n" + "\n\n".join(paragraphs) + "\n\n株式会社アクメ 人事部 採用担当\n"
    html = (
        '<!DOCTYPE html>\n<html lang="ja">\n<head><meta charset="utf-8">'
        f"<title>{kind.title}</title></head>\n"
        f'<body style="font-family: sans-serif">\n<p>山田 太郎 様</p>\n{html_paragraphs}\n'
        "<p>株式会社アクメ 人事部 採用担当</p>\n</body>\n</html>\n"
    )
    return plain, html


def build_message(target_size: int, kind: str = "pass-through") -> bytes:
    """A message of ``kind`` (see the module docstring) of at least ``target_size`` bytes,
    CRLF line endings; paragraphs are repeated until it is large enough."""
    spec = KINDS[kind]
    paragraph_count = 1
    while True:
        plain, html = _bodies(spec, paragraph_count)
        msg = EmailMessage(policy=SMTP)  # policy.SMTP serialises with CRLF
        msg["From"] = Address(spec.display, addr_spec=spec.sender)
        msg["To"] = Address("山田 太郎", addr_spec=RECIPIENT)
        msg["Subject"] = spec.subject
        msg["Date"] = "Thu, 26 Nov 2026 10:00:00 +0900"
        msg["Message-ID"] = spec.message_id
        msg.set_content(plain, charset="utf-8", cte="quoted-printable")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
        data = msg.as_bytes()
        if len(data) >= target_size:
            return data
        paragraph_count += 1
