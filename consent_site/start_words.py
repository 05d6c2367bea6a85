"""The words of "Get started" (``admin_start``), Japanese and English.

Japanese first, like every admin page; English with ``?lang=en`` (``i18n.choose``, the
candidate pages' chooser, given no Accept-Language: an admin page never changes
language by itself).  As in ``consent_site.i18n``, the words live here and the layout in
the template; values with ``{...}`` are formatted there, escaped like everything else.
The codes the checks return (``dns_check.Checked.fix``, ``start_mail.Verdict.detail``)
are keys of these dicts.
"""

from __future__ import annotations

from consent_site import i18n

JA = {
    "title": "はじめに",
    "other": "English",
    "other_lang": "en",
    "intro": ("{company} の不採用メールに案内リンクが入るまでの4つの手順です。上から順に進めてく"
              "ださい。"),
    "step_templates": "テンプレートを貼り付ける",
    "step_keys": "APIキー（ATSが自分でメールを送る場合）",
    "step_dns": "DNSレコードを公開して確認する",
    "step_test": "テスト送信で確かめる",
    "h_templates": "1. テンプレート",
    "templates_how": ("欄をクリックし、すべて選択（Ctrl+A／⌘A）してコピー（Ctrl+C／⌘C）し、ATSや"
                      "メールソフトの不採用メールに貼り付けます。${...} は差し込み項目に置き換え"
                      "てください。会社名・紹介会社名・許可番号・会社リンクは記入済みです。"),
    "h_marker": "ゲートウェイを通して送るメール（マーカー入り）",
    "marker_how": ("マーカー [[CAREER_RELAY_LINK]] は変えずに残してください。ゲートウェイが候補"
                   "者ごとのリンクに置き換えます。"),
    "h_elsewhere": "ほかのサーバーから送るメール（会社リンク入り）",
    "elsewhere_how": ("ATSが自分のサーバーから送る場合は、この会社リンクを使います（候補者がアド"
                      "レスを入力すると、本人専用のリンクが届きます）:"),
    "tpl_ja_txt": "日本語・テキスト",
    "tpl_ja_html": "日本語・HTML",
    "tpl_en_txt": "英語・テキスト",
    "tpl_en_html": "英語・HTML",
    "h_keys": "2. APIキー",
    "keys_how": ("ATSがAPIで候補者ごとのリンクを受け取れる場合は、APIキーのページでキーを作成し"
                 "、ATSの設定に貼り付けます。ゲートウェイを通して送る場合は不要です。"),
    "keys_link": "APIキーのページ",
    "h_dns": "3. DNSレコード",
    "dns_how": ("ゲートウェイはリンクを入れたメールに {company} の鍵でDKIM署名します。受信側が署"
                "名を確かめられるよう、次のレコードを会社のDNSに公開してください。"),
    "check_dns": "DNSを確認する",
    "col_kind": "種類",
    "col_name": "名前 (TXT)",
    "col_value": "公開する値",
    "col_result": "確認結果",
    "split": "長い値を255文字ずつに分ける場合:",
    "spf_how": ("送信サーバー（スマートホスト）を含むレコードを1件だけ。ゲートウェイは直接配送し"
                "ないので、通常は今のままで構いません。例:"),
    "dmarc_how": "署名は From のドメインで行うので、DKIMは relaxed でも strict でも揃います。例:",
    "dns_ttl": "DNSの変更が反映されるまで、TTLの時間（数分から1日）がかかることがあります。",
    "ok": "一致",
    "different": "違う値",
    "missing": "未公開",
    "error": "確認できません",
    "no_key": ("DKIM鍵が設定されていません（companies.dkim_selector と dkim_key_file）。運営者に"
               "依頼してください。"),
    "bad_key": "DKIM鍵を読み込めません: {arg}",
    "fix_error": ("DNSに問い合わせできませんでした（{arg}）。しばらくしてからもう一度確認してく"
                  "ださい。"),
    "fix_dkim_missing": "{name} に TXT レコードがありません。左の値を公開してください。",
    "fix_dkim_different": ("公開されている鍵がゲートウェイの署名鍵と違います（古い鍵か、途中で切"
                           "れた値かもしれません）。左の値に置き換えてください。"),
    "fix_dkim_revoked": "公開されている鍵は失効（p= が空）しています。左の値に置き換えてください。",
    "fix_spf_missing": ("{name} に SPF レコードがありません。スマートホスト（送信サーバー）を含"
                        "むレコードを1件公開してください。"),
    "fix_dmarc_missing": ("{name} に DMARC レコードがありません。まず p=none で公開し、レポート"
                          "を確認してから quarantine / reject に進めてください。"),
    "fix_many": ("{kind} レコードが{arg}件あります。受信側はどれも使いません。1件にまとめてくだ"
                 "さい。"),
    "h_test": "4. テスト送信",
    "test_how": ("ゲートウェイを通して、マーカー入りの不採用メール（テスト）を送ります。届いたら"
                 "、リンクと署名を確かめます。テストも案内リンクの送信1件として集計されます（経"
                 "路 career-relay-test）。届いたページで登録には進まないでください。"),
    "own_domain": ("ログイン中のアドレスは社内のドメインです。社内宛てにはリンクが入らないため、"
                   "社外で受け取れるアドレスを入力してください。"),
    "to": "送信先",
    "smtp_password": "SMTPパスワード（{user}）",
    "unset": "未設定",
    "password_how": "ATSに設定したものと同じです。この送信にだけ使い、保存しません。",
    "send": "テストメールを送る",
    "h_status": "状況",
    "offer_yes": "✔ ゲートウェイが受け付け、リンクを入れました（{when}）。",
    "offer_no": "… ゲートウェイの記録がまだありません。数秒後に再読み込みしてください。",
    "reload": "再読み込み",
    "viewed_yes": "✔ リンクが開かれました（{when}）。",
    "viewed_no": "… 届いたメールのリンクを開いてください。",
    "h_verify": "受信したメールを確かめる",
    "verify_how": ("受信したメールの「ソースを表示」（Gmail: メッセージのソースを表示、Outlook: "
                   "メッセージのソース）の内容をすべて貼り付けます。"),
    "source": "メールのソース",
    "verify": "確かめる",
    "verdict_ok": "✔ リンク入りで、有効な署名（d={domain}, s={selector}）付きで届きました。",
    "verdict_problem": "届いたメールに問題があります:",
    "signature": "署名",
    "sig_valid": "有効",
    "sig_invalid": "無効",
    "sig_none": "なし",
    "others": "ほかの署名",
    "mismatch": ("署名が本文・ヘッダーと一致しません。途中で書き換えられたか、貼り付けたソースが"
                 "受信したままではありません。"),
    "cannot": "署名を検証できません（{arg}）。DNSのDKIMレコードを確認してください。",
    "unsigned": ("会社のドメイン（{arg}）のDKIM署名がありません。ゲートウェイを通っていないか、"
                 "リンクを入れられなかったメールです。"),
    "link": "リンク",
    "open": "案内ページを開く",
    "opened": "開封済み {when}",
    "not_opened": "まだ開かれていません",
    "foreign_link": ("見つかりましたが、この会社の案内リンクではありません（途中で切れていないか"
                     "確かめてください）。"),
    "no_link": ("career-relay のリンクがありません。マーカーが崩れていないか、社内宛てでないか確"
                "かめてください。"),
    "err_no_domains": ("この会社にはドメイン（companies.domains）が設定されていません。運営者に"
                       "依頼してください。"),
    "err_address": "送信先のメールアドレスを確認してください。",
    "err_own": ("社内のドメインのアドレスには、リンクの代わりに社内向けの一文が入ります（社員に"
                "リンクは送りません）。社外で受け取れるアドレスを入力してください。"),
    "err_password": ("この会社のメールはSMTP認証でゲートウェイに届けます。SMTPパスワードを入力し"
                     "てください。"),
    "err_no_auth": ("この会社にはSMTP認証もサイトからの送信の許可（companies.allow_ips）もありま"
                    "せん。運営者に設定を依頼してください。"),
    "err_limit": "テスト送信は1時間に{limit}通までです。{wait}秒後にお試しください。",
    "err_gateway": "ゲートウェイが受け付けませんでした: {arg}",
}

EN = {
    "title": "Get started",
    "other": "日本語",
    "other_lang": "ja",
    "intro": "Four steps until {company}'s rejection mails carry the link. Go from top to bottom.",
    "step_templates": "Paste a template",
    "step_keys": "API keys (an ATS that sends its own mail)",
    "step_dns": "Publish the DNS records and check them",
    "step_test": "Send a test rejection",
    "h_templates": "1. Templates",
    "templates_how": ("Click a box, select all (Ctrl+A / ⌘A), copy (Ctrl+C / ⌘C) and paste it "
                      "into the rejection mail of your ATS or mail program. Replace each ${...} "
                      "with your merge field. The company's and agency's names, the licence "
                      "number and the company link are filled in."),
    "h_marker": "Mail through the gateway (with the marker)",
    "marker_how": ("Keep the marker [[CAREER_RELAY_LINK]] as it is: the gateway replaces it with"
                   " each candidate's own link."),
    "h_elsewhere": "Mail sent from elsewhere (with the company link)",
    "elsewhere_how": ("When your ATS sends from its own servers, use this company link (a "
                      "candidate types an address and gets a personal link):"),
    "tpl_ja_txt": "Japanese, text",
    "tpl_ja_html": "Japanese, HTML",
    "tpl_en_txt": "English, text",
    "tpl_en_html": "English, HTML",
    "h_keys": "2. API keys",
    "keys_how": ("If your ATS can fetch each candidate's link from the API, create a key on the "
                 "API keys page and paste it into the ATS's settings. Not needed for mail "
                 "through the gateway."),
    "keys_link": "API keys page",
    "h_dns": "3. DNS records",
    "dns_how": ("The gateway signs the mail it adds a link to with {company}'s DKIM key. Publish"
                " these records in the company's DNS so that receivers can check the signature."),
    "check_dns": "Check DNS",
    "col_kind": "Kind",
    "col_name": "Name (TXT)",
    "col_value": "Value to publish",
    "col_result": "Result",
    "split": "Split into strings of 255 characters:",
    "spf_how": ("One record only, covering your sending server (smarthost). The gateway never "
                "delivers directly, so usually nothing changes. Example:"),
    "dmarc_how": ("The signature is made with the From domain, so DKIM aligns under relaxed and "
                  "strict alike. Example:"),
    "dns_ttl": "DNS changes can take the record's TTL (minutes to a day) to show.",
    "ok": "OK",
    "different": "Different",
    "missing": "Missing",
    "error": "Cannot check",
    "no_key": ("No DKIM key is configured (companies.dkim_selector and dkim_key_file). Ask your "
               "operator."),
    "bad_key": "The DKIM key cannot be read: {arg}",
    "fix_error": "DNS could not be asked ({arg}). Check again in a while.",
    "fix_dkim_missing": "{name} has no TXT record. Publish the value on the left.",
    "fix_dkim_different": ("The published key is not the gateway's signing key (an old key, or a"
                           " value cut when pasted). Replace it with the value on the left."),
    "fix_dkim_revoked": ("The published key is revoked (empty p=). Replace it with the value on "
                         "the left."),
    "fix_spf_missing": "{name} has no SPF record. Publish one record that covers your smarthost.",
    "fix_dmarc_missing": ("{name} has no DMARC record. Start with p=none, read the reports, then"
                          " move to quarantine or reject."),
    "fix_many": "There are {arg} {kind} records: receivers use none of them. Merge them into one.",
    "h_test": "4. Test rejection",
    "test_how": ("Sends a test rejection with the marker through the gateway; when it arrives, "
                 "check its link and signature. A test counts as one offer in the report "
                 "(channel career-relay-test). Do not register on the page it opens."),
    "own_domain": ("You are logged in with an address of the company's own domain, which gets no"
                   " link: enter an address outside the company that you can read."),
    "to": "To",
    "smtp_password": "SMTP password ({user})",
    "unset": "not set",
    "password_how": "The one your ATS uses. Used for this message only, never stored.",
    "send": "Send the test mail",
    "h_status": "Status",
    "offer_yes": "✔ The gateway accepted it and added the link ({when}).",
    "offer_no": "… The gateway has recorded nothing yet. Reload in a few seconds.",
    "reload": "Reload",
    "viewed_yes": "✔ The link was opened ({when}).",
    "viewed_no": "… Open the link in the mail you received.",
    "h_verify": "Verify what arrived",
    "verify_how": ("Paste the whole source of the mail as received (Gmail: Show original; "
                   "Outlook: View message source)."),
    "source": "Message source",
    "verify": "Verify",
    "verdict_ok": "✔ Arrived with a link and a valid signature (d={domain}, s={selector}).",
    "verdict_problem": "Something is wrong with the mail that arrived:",
    "signature": "Signature",
    "sig_valid": "valid",
    "sig_invalid": "invalid",
    "sig_none": "none",
    "others": "other signatures",
    "mismatch": ("The signature does not match the body and headers: changed on the way, or the "
                 "source pasted is not as received."),
    "cannot": "The signature cannot be verified ({arg}). Check the DKIM record in DNS.",
    "unsigned": ("No DKIM signature of the company's domain ({arg}): the mail did not pass the "
                 "gateway, or it could not take a link."),
    "link": "Link",
    "open": "Open the page",
    "opened": "opened {when}",
    "not_opened": "not opened yet",
    "foreign_link": "Found, but not a link of this company (check that it was not cut).",
    "no_link": ("No career-relay link. Check that the marker is intact and that the address is "
                "not a staff address."),
    "err_no_domains": "The company has no domains (companies.domains). Ask your operator.",
    "err_address": "Check the address to send to.",
    "err_own": ("An address of the company's own domain gets a sentence for staff instead of a "
                "link (staff get no link). Enter an address outside the company."),
    "err_password": ("The company's mail reaches the gateway with SMTP AUTH: enter the SMTP "
                     "password."),
    "err_no_auth": ("The company has neither SMTP AUTH nor the site's address in "
                    "companies.allow_ips. Ask your operator to configure one."),
    "err_limit": "At most {limit} test mails an hour. Try again in {wait} seconds.",
    "err_gateway": "The gateway did not accept it: {arg}",
}

WORDS = {"ja": JA, "en": EN}


def locale(asked: object) -> str:
    """Japanese unless English is asked for (``?lang=en`` or the form's ``lang``)."""
    return i18n.choose(asked if isinstance(asked, str) else None, None, "ja")
