"""The words of the company link's pages (SPEC 10), beside ``i18n``'s for the consent pages."""

from __future__ import annotations

from consent_site import i18n

JA = {
    "link_title": "{agency}へのご登録のご案内（任意）",
    "link_from": "{company}からのご案内",
    "link_intro": "{company}の選考にご応募いただき、ありがとうございました。"
                  "ご希望の方に限り、提携する人材紹介会社「{agency}」"
                  "（有料職業紹介事業 許可番号 {license_no}）へのご登録をご案内しています。"
                  "ご登録は任意です。登録しない場合も、あなたに不利益が生じることは一切ありません。",
    "link_how": "ご本人確認のため、まずメールアドレスを入力してください。"
                "そのアドレスに、あなた専用のご登録ページのリンクをお送りします。"
                "登録するかどうかは、そのページで内容をご確認のうえお決めいただけます。",
    "link_nothing_yet": "アドレスを入力しただけでは、何も登録されず、"
                        "{agency}にも何も提供されません。",
    "link_field_email": "メールアドレス",
    "link_send": "リンクを受け取る",
    "link_error_email": "メールアドレスの形式が正しくありません"
                        "（例：taro@example.jp。空白や記号は使えません）。",
    "link_error_company": "{company}のアドレスには送れません。ご自身のアドレスを入力してください。",
    "link_sent_title": "メールをご確認ください",
    "link_sent_text": "入力されたアドレスがメールを受け取れる場合、まもなく"
                      "あなた専用のご登録ページのリンクが届きます。"
                      "メール内のリンクを開いて、内容をご確認ください。",
    "link_sent_help": "数分たっても届かない場合は、迷惑メールフォルダをご確認のうえ、"
                      "しばらくしてからもう一度お試しください。",
    "link_again": "別のアドレスを入力する",
}

EN = {
    "link_title": "Register with {agency} (optional)",
    "link_from": "A message from {company}",
    "link_intro": "Thank you for applying to {company}. Only if you wish, you can register "
                  "with our partner recruiting agency, {agency} (fee-charging employment "
                  "placement licence no. {license_no}). Registering is entirely optional; "
                  "not registering has no effect on you whatsoever.",
    "link_how": "To make sure it is you, first enter your email address. We will send a "
                "link to a page set up just for you to that address; there you can read "
                "everything and decide whether to register.",
    "link_nothing_yet": "Entering your address registers nothing and shares nothing "
                        "with {agency}.",
    "link_field_email": "Email address",
    "link_send": "Send me my link",
    "link_error_email": "This does not look like an email address (for example "
                        "taro@example.jp, with no spaces).",
    "link_error_company": "We cannot send to an address of {company}. Please enter your "
                          "own address.",
    "link_sent_title": "Please check your email",
    "link_sent_text": "If the address you entered can receive mail, a link to a page set up "
                      "just for you is on its way. Open the link in that email to continue.",
    "link_sent_help": "If nothing arrives within a few minutes, check your spam folder, "
                      "then try again a little later.",
    "link_again": "Enter another address",
}

TEXTS = {"ja": i18n.Words({**i18n.JA, **JA}), "en": i18n.Words({**i18n.EN, **EN})}
