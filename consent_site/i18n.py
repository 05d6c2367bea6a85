"""The candidate's language (SPEC 6) and the words of the pages.

Japanese by default; English by ``?lang=en`` or the browser's
Accept-Language; otherwise the company's ``locale``.  The words live here,
the layout in ``templates/``: a translator edits one dict, never markup.
Values with ``{...}`` are formatted by the templates with the page's names
(company, agency), which Jinja escapes like everything else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

LOCALES = ("ja", "en")
# Japan keeps UTC+9 all year (no daylight saving): no time-zone database needed.
_JST = dt.timezone(dt.timedelta(hours=9), "JST")


def local_time(moment: dt.datetime, locale: str) -> str:
    """A time as the candidate reads it: Japan time on Japanese pages, UTC on English ones
    (the candidates of a Japanese company are mostly in Japan; UTC says so where not)."""
    if locale == "ja":
        return moment.astimezone(_JST).strftime("%Y年%m月%d日 %H:%M（日本時間）")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def choose(query: str | None, accept_language: str | None, default: str) -> str:
    """``?lang=`` wins, then the best of ja/en in Accept-Language (RFC 9110 12.5.4), then
    ``default``."""
    if query in LOCALES:
        return query
    best: tuple[float, str] | None = None
    for item in (accept_language or "").split(","):
        tag, _, params = item.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        if lang not in LOCALES:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and (best is None or q > best[0]):
            best = (q, lang)
    if best is not None:
        return best[1]
    return default if default in LOCALES else "ja"


JA: dict[str, str] = {
    "title": "{agency}へのご登録のご案内（任意）",
    "from_company": "{company}の選考結果メールからのご案内",
    "intro": "{company}の選考にご応募いただき、ありがとうございました。"
             "ご希望の方に限り、提携する人材紹介会社「{agency}」へのご登録をご案内しています。"
             "ご登録は任意です。登録しない場合も、あなたに不利益が生じることは一切ありません。",
    "operator": "このページは、{company}の送信メールにこのご案内を付けるサービス"
                "「career-relay」が運営しています。",
    "notice_heading": "ご登録の前にご確認ください",
    "recipient": "提供先",
    "license": "有料職業紹介事業 許可番号 {license_no}",
    "privacy_policy": "{agency}のプライバシーポリシー",
    "purpose": "利用目的",
    "purpose_text": "ご入力いただいた情報を{agency}に提供し、{agency}があなたに求人をご紹介し、"
                    "転職のご支援についてご連絡するために利用します。",
    "items": "提供する情報",
    "item_name": "氏名（必須）",
    "item_email": "メールアドレス（必須）",
    "item_phone": "電話番号（任意）",
    "item_desired_job": "希望職種（任意）",
    "item_desired_location": "希望勤務地（任意）",
    "item_note": "自由記入欄（任意）",
    "item_application": "応募情報（応募した職種と選考段階）：下の欄にチェックした場合のみ、"
                        "{company}から提供します",
    "retention": "保存期間",
    "retention_text": "{agency}はご登録の情報を最長{months}か月保有します。"
                      "同意の記録は、法令に従い3年間保管します。",
    "outcomes": "{company}への結果の報告",
    "outcomes_text": "{agency}は、ご紹介の結果（登録、選考中、就職など）を{company}に報告しますが、"
                     "5人以上の組ごとの人数としてだけです。あなたを特定できる情報"
                     "（氏名、連絡先、個人ごとの結果）は{company}に伝えません。",
    "withdraw": "同意の撤回",
    "withdraw_text": "このページ（同じリンク）から、いつでも登録の取り消しと"
                     "データの削除ができます。取り消すと{agency}に削除を依頼します。",
    "contact": "お問い合わせ：{contact}",
    "caution": "ご注意",
    "caution_text": "本籍・出生地、信条、健康状態、家族の職業など、"
                    "就職差別につながるおそれのある情報は入力しないでください。未成年の方は保護者の同意を得たうえでご登録ください。",
    "form_heading": "登録する情報",
    "field_name": "氏名",
    "field_email": "メールアドレス",
    "field_phone": "電話番号",
    "field_desired_job": "希望職種",
    "field_desired_location": "希望勤務地",
    "field_note": "自由記入欄",
    "required": "必須",
    "optional": "任意",
    "share_application": "応募した職種と選考段階も{agency}に提供する（任意）",
    "agree": "上記の内容を確認し、{agency}への情報提供に同意します",
    "accept": "同意して登録する",
    "decline": "登録しない",
    "decline_hint": "「登録しない」を選んだ場合、入力内容は保存しません。",
    "errors_heading": "入力内容をご確認ください",
    "separator": "：",
    "decision": "内容",
    "error_required": "入力してください。",
    "error_too_long": "長すぎます。短くしてください。",
    "error_email": "メールアドレスの形式が正しくありません。",
    "error_phone": "電話番号は数字と + - ( ) で入力してください。",
    "error_agree": "登録するには、同意のチェックボックスにチェックを入れてください。",
    "state_accepted": "ご登録を受け付けました",
    "state_accepted_text": "ご入力の情報を{agency}にお届けしました"
                           "（または、まもなくお届けします）。{agency}からご連絡があります。",
    "state_under_review": "ご登録を受け付けました",
    "state_under_review_text": "確認のうえ、{agency}にお届けします。{agency}からご連絡があります。",
    "state_not_sent": "ご登録はお届けしていません",
    "state_not_sent_text": "確認の結果、このご登録は自動的な操作の可能性があるため、"
                           "{agency}にはお届けしていません。ご本人のご登録であれば、"
                           "もう一度ご登録ください。",
    "state_declined": "登録しないことを選択されました",
    "state_declined_text": "ご入力の内容は保存していません。気が変わった場合は、"
                           "このリンクの有効期間内であれば登録できます。",
    "state_withdrawn": "登録を取り消しました",
    "state_withdrawn_text": "{agency}には情報の削除を依頼しました。",
    "state_erased": "データを削除しました",
    "state_erased_text": "ご入力の情報を削除しました。法令で保管が求められる同意の記録"
                         "（日時・提供先・項目名）のみ残ります。",
    "receipt_id": "受付番号",
    "decided_at": "日時",
    "manage": "登録内容の確認・取り消し・削除",
    "register_again": "登録する",
    "manage_heading": "登録内容の確認・取り消し・削除",
    "history": "これまでの記録",
    "decision_accept": "同意",
    "decision_decline": "登録しない",
    "decision_withdraw": "取り消し",
    "decision_erase": "削除",
    "no_decision": "まだ何も選択されていません。",
    "withdraw_button": "登録を取り消す",
    "withdraw_explain": "{agency}への登録を取り消し、{agency}に情報の削除を依頼します。",
    "erase_button": "データを削除する",
    "erase_explain": "ご入力の情報をすべて削除します。登録中の場合は取り消しも行います。"
                     "この操作は元に戻せません。",
    "export": "保存している情報をダウンロード（JSON）",
    "back": "ご案内のページに戻る",
    "language_switch": "English",
    "error_404_title": "このリンクは使えません",
    "error_404_text": "リンクが途中で切れているか、書き換えられています。"
                      "メールに記載のリンクをもう一度、最後まで開いてください。"
                      "うまくいかない場合は、メールの送信元の会社にお問い合わせください。",
    "error_410_title": "このリンクの有効期限が切れています",
    "error_410_text": "ご登録の受付期間は終了しました。登録内容の確認や削除のご依頼は、"
                      "{agency}または選考結果メールの送信元の会社にお問い合わせください。",
    "error_403_title": "ページの有効期限が切れました",
    "error_403_text": "安全のため、ページを開いてから時間がたったフォームは受け付けていません。"
                      "ブラウザでページを再読み込みし、もう一度操作してください。"
                      "Cookie が無効な場合は有効にしてください。",
    "error_generic_title": "ページが見つかりません",
    "error_generic_text": "URL をご確認ください。",
    "error_500_title": "一時的なエラーが発生しました",
    "error_500_text": "お手数ですが、しばらくしてからもう一度お試しください。"
                      "ご入力の内容は保存されていません。",
    "error_503_title": "ただいまメンテナンス中です",
    "error_503_text": "数分後にもう一度お試しください。リンクはそのまま使えます。"
                      "ご入力の内容は保存されていません。",
    "error_429_title": "しばらくしてからお試しください",
    "error_429_text": "短い間に多くのお申し込みがありました。"
                      "時間をおいて、もう一度お試しください。",
    "error_413_title": "送信された内容が大きすぎます",
    "error_413_text": "ページを読み込み直して、もう一度お試しください。",
}

EN: dict[str, str] = {
    "title": "Register with {agency} (optional)",
    "from_company": "From the application result email of {company}",
    "intro": "Thank you for applying to {company}. If you wish, you can register with "
             "our partner recruitment agency, {agency}. Registering is entirely optional; "
             "not registering has no consequences for you whatsoever.",
    "operator": "This page is run by career-relay, the service that adds this offer to "
                "{company}'s outgoing email.",
    "notice_heading": "Please read before you register",
    "recipient": "Recipient",
    "license": "Licensed fee-charging employment placement business, licence no. {license_no}",
    "privacy_policy": "{agency} privacy policy",
    "purpose": "Purpose",
    "purpose_text": "What you enter is given to {agency}, who will use it to introduce job "
                    "openings to you and contact you about job-change support.",
    "items": "Information provided",
    "item_name": "Name (required)",
    "item_email": "Email address (required)",
    "item_phone": "Phone number (optional)",
    "item_desired_job": "Desired job (optional)",
    "item_desired_location": "Desired work location (optional)",
    "item_note": "Note (optional)",
    "item_application": "Your application (the job and stage you applied for): provided by "
                        "{company} only if you tick the box below",
    "retention": "Retention",
    "retention_text": "{agency} keeps your registration for at most {months} months. "
                      "The record of your consent is kept for three years, as the law requires.",
    "outcomes": "What {company} is told",
    "outcomes_text": "{agency} reports to {company} what became of the candidates it was "
                     "introduced (registered, interviewing, placed, ...) only as counts of "
                     "groups of at least 5 people. Nothing that identifies you (your name, "
                     "your contact details, your own outcome) is passed to {company}.",
    "withdraw": "Withdrawing",
    "withdraw_text": "You can withdraw and have your data erased at any time from this page "
                     "(the same link). {agency} is then asked to delete your data.",
    "contact": "Contact: {contact}",
    "caution": "Please note",
    "caution_text": "Do not enter information that could lead to discrimination in hiring, "
                    "such as your family register, birthplace, beliefs or health. If you are "
                    "a minor, please register with your guardian's consent.",
    "form_heading": "Your details",
    "field_name": "Name",
    "field_email": "Email address",
    "field_phone": "Phone number",
    "field_desired_job": "Desired job",
    "field_desired_location": "Desired work location",
    "field_note": "Note",
    "required": "required",
    "optional": "optional",
    "share_application": "Also give {agency} the job and stage I applied for (optional)",
    "agree": "I have read the above and agree to my information being given to {agency}",
    "accept": "Agree and register",
    "decline": "Do not register",
    "decline_hint": "If you choose \u201cDo not register\u201d, nothing you typed is kept.",
    "errors_heading": "Please check what you entered",
    "separator": ": ",
    "decision": "Decision",
    "error_required": "Please fill this in.",
    "error_too_long": "This is too long; please shorten it.",
    "error_email": "This does not look like an email address.",
    "error_phone": "Please use digits and + - ( ) only.",
    "error_agree": "To register, please tick the consent box.",
    "state_accepted": "Your registration has been received",
    "state_accepted_text": "Your details have been (or will shortly be) sent to {agency}, "
                           "who will contact you.",
    "state_under_review": "Your registration has been received",
    "state_under_review_text": "After a check, your details will be sent to {agency}, "
                               "who will contact you.",
    "state_not_sent": "Your registration was not sent",
    "state_not_sent_text": "After a check, this registration looked automated and was not "
                           "sent to {agency}. If it was you, please register again.",
    "state_declined": "You chose not to register",
    "state_declined_text": "Nothing you typed was kept. If you change your mind, you can "
                           "register while this link is valid.",
    "state_withdrawn": "Your registration has been withdrawn",
    "state_withdrawn_text": "{agency} has been asked to delete your data.",
    "state_erased": "Your data has been erased",
    "state_erased_text": "What you entered has been erased. Only the record of your consent "
                         "(date, recipient, item names) that the law requires remains.",
    "receipt_id": "Receipt no.",
    "decided_at": "Date",
    "manage": "Review, withdraw or erase your registration",
    "register_again": "Register",
    "manage_heading": "Review, withdraw or erase your registration",
    "history": "Your history",
    "decision_accept": "Agreed",
    "decision_decline": "Did not register",
    "decision_withdraw": "Withdrawn",
    "decision_erase": "Erased",
    "no_decision": "You have not made a choice yet.",
    "withdraw_button": "Withdraw my registration",
    "withdraw_explain": "Withdraws your registration with {agency} and asks {agency} to delete "
                        "your data.",
    "erase_button": "Erase my data",
    "erase_explain": "Erases everything you entered, and withdraws your registration if there "
                     "is one. This cannot be undone.",
    "export": "Download the information held about you (JSON)",
    "back": "Back to the offer page",
    "language_switch": "日本語",
    "error_404_title": "This link does not work",
    "error_404_text": "The link may have been cut off or changed. Please open the whole link "
                      "from the email again. If it still fails, contact the company that sent "
                      "you the email.",
    "error_410_title": "This link has expired",
    "error_410_text": "Registration through this link has closed. To review or erase your "
                      "data, contact {agency} or the company that sent you the email.",
    "error_403_title": "This page has expired",
    "error_403_text": "For your safety, forms are accepted only for a while after the page is "
                      "opened. Please reload the page and try again, with cookies enabled.",
    "error_generic_title": "Page not found",
    "error_generic_text": "Please check the address.",
    "error_500_title": "Something went wrong on our side",
    "error_500_text": "Please try again in a little while. Nothing you entered was saved.",
    "error_503_title": "Back in a few minutes",
    "error_503_text": "Please try again in a few minutes; your link still works. Nothing you "
                      "entered was saved.",
    "error_429_title": "Please try again later",
    "error_429_text": "There were too many requests in a short time. Please wait a while and "
                      "try again.",
    "error_413_title": "What was sent is too large",
    "error_413_text": "Please reload the page and try again.",
}

class Words:
    """The words of one language, as ``t.key`` or ``t["key"]`` in templates.

    Not a dict on purpose: Jinja looks attributes up first, so with a dict
    ``t.items`` was the method ``dict.items``, not the word.
    """

    __slots__ = ("_words",)

    def __init__(self, words: Mapping[str, str]) -> None:
        self._words = dict(words)

    def __getattr__(self, name: str) -> str:
        try:
            return self._words[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> str:
        return self._words[name]


TEXTS: Mapping[str, Words] = {"ja": Words(JA), "en": Words(EN)}
