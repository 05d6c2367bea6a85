"""The words of the rights pages' lock and of the manage-link mail (``rights``)."""

from __future__ import annotations

from collections.abc import Mapping

JA: dict[str, str] = {
    "locked_text": ("この画面は、回答したときのブラウザからだけ開けます。別の端末から開く場合は、"
                    "フォームに入力したメールアドレスに確認用リンクをお送りします。"),
    "send_link": "確認用リンクをメールで受け取る",
    "sent": ("フォームにメールアドレスを入力していた場合、そのアドレスにリンクを送りました。"
             "リンクは60分間、1回だけ使えます。"),
    "open_heading": "登録内容の確認",
    "open_text": "このブラウザで確認・取り消し・削除の画面を開きます。",
    "open_button": "確認画面を開く",
    "subject": "登録内容の確認・取り消し用リンク（{agency}）",
    "mail": ("{agency}（許可番号 {license_no}）に登録した内容の確認、取り消し、削除は"
             "次のリンクから行えます。\n\n{link}\n\nリンクは60分間、1回だけ使えます。"
             "お心当たりのない場合は、このメールを破棄してください。\n"),
}

EN: dict[str, str] = {
    "locked_text": ("This page opens only in the browser you answered from. To open it on "
                    "another device, we can send a link to the email address you typed on "
                    "the form."),
    "send_link": "Email me a link to manage this",
    "sent": ("If you typed an email address on the form, we sent a link to it. It works once, "
             "for 60 minutes."),
    "open_heading": "Your registration",
    "open_text": "Open the page to review, withdraw or erase your registration in this browser.",
    "open_button": "Open the page",
    "subject": "Your link to manage your registration with {agency}",
    "mail": ("To review, withdraw or erase what you gave {agency} (licence {license_no}), "
             "open this link:\n\n{link}\n\nIt works once, for 60 minutes. If you did not ask "
             "for it, ignore this mail.\n"),
}

TEXTS: Mapping[str, Mapping[str, str]] = {"ja": JA, "en": EN}
