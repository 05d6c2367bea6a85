"""The rejection classifier (SPEC 5 rule 3) and the text extraction it reads from."""

from __future__ import annotations

import base64
import csv
import re
import time
import unicodedata
from collections import Counter
from pathlib import Path
from re import _constants as sre_constants
from re import _parser as sre_parser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import detect, detect_text
from gateway.detect import THRESHOLD, classify, decode_bytes, extract_text, normalise

DATA = Path(__file__).resolve().parent / "data" / "classifier"

# Each strong phrase decides alone, inside an otherwise neutral recruiting mail.  One or
# two sentences per family, with the spelling variants a family has to absorb.
STRONG = [
    ("誠に残念ながら、ご連絡いたします。", "誠に残念ながら"),
    ("誠に残念ではございますが、今回の結果をお知らせします。", "誠に残念ながら"),
    ("今回はご期待に添えない結果となりました。", "ご期待に添えない"),
    ("今回はご期待に沿えない結果となりました。", "ご期待に添えない"),
    ("貴意に添いかねる結果となりました。", "ご期待に添えない"),
    ("ご希望に沿わず、大変恐縮です。", "ご期待に添えない"),
    ("ご期待にお応えすることができず、申し訳ございません。", "ご期待に添えない"),
    ("今回は見送らせていただきます。", "見送り"),
    ("今回は見送らせて頂きます。", "見送り"),
    ("検討の結果、採用を見送ることと致しました。", "見送り"),
    ("今回はお見送りとさせていただきます。", "見送り"),
    ("今回はご縁がなかったということで。", "ご縁がなかった"),
    ("ご縁を結ぶことが出来ませんでした。", "ご縁がなかった"),
    ("今回は不採用とさせていただきます。", "不採用"),
    ("書類選考は不通過となりました。", "不採用"),
    ("採用には至りませんでした。", "…には至りませんでした"),
    ("書類選考を通過されませんでした。", "通過されませんでした"),
    ("次の選考へお進みいただくことは叶いませんでした。", "次の選考…できかねます (negated)"),
    ("応募条件により、選考を進めることができかねます。", "次の選考…できかねます (negated)"),
    ("今回は採用には至らない結論となりました。", "…には至りませんでした"),
    ("内々定のご連絡を差し上げることができなくなりました。", "内定のご連絡を差し上げられず"),
    ("今回は他の方で採用が決定いたしました。", "別の方で決定"),
    ("山田様の選考はここで終了とさせていただきます。", "選考はここで終了"),
    ("今回はご一緒することが難しいと判断いたしました。", "ご一緒することが難しい"),
    ("今回はお断りさせて頂くこととなりました。", "お断りさせていただきます"),
    ("今回は残念な結果となりました。", "残念な結果となりました"),
    ("今回は採用を控えさせていただきます。", "採用を控えさせて"),
    ("誠に勝手ながら内定を取り消させていただきます。", "内定取り消し"),
    ("今回は書類選考NGとなりました。", "選考はNG"),
    ("We have decided not to move forward with your application.",
     "not to proceed with your application"),
    ("We will not be progressing your application any further.",
     "not to proceed with your application"),
    ("Sadly we’re unable to take your candidacy forward.", "not to proceed with your application"),
    ("The panel decided against offering you the role.", "not to proceed with your application"),
    ("We are unable to offer you the position.", "not to proceed with your application"),
    ("Your application will not proceed to the next step.", "your application will not progress"),
    ("Unfortunately, you were not selected for the role.", "not selected"),
    ("I’m sorry to say your application has been unsuccessful.", "unsuccessful"),
    ("The vacancy has now been filled.", "the role has been filled"),
    ("We have decided to pursue other candidates.", "went with another candidate"),
    ("We’ve offered the position to another applicant.", "went with another candidate"),
    ("We have decided to go in a different direction.", "a different direction"),
    ("We feel this is not the right fit for the role.", "not the right fit"),
    ("We have decided to pass on your application.", "pass on your application"),
    ("We have closed your application for this vacancy.", "your application has been closed"),
    ("We have to withdraw the offer we made to you.", "the offer is withdrawn"),
    ("Other candidates’ experience aligned more closely with the brief.",
     "others match more closely"),
]


@pytest.mark.parametrize(("text", "label"), STRONG)
def test_each_strong_phrase_decides_alone(text: str, label: str) -> None:
    verdict = classify("ご応募について / your application", text)
    assert verdict.is_rejection, verdict
    assert label in verdict.reasons


MEDIUM = [
    ("厳正なる選考の結果をお知らせします。", "慎重/厳正なる選考"),
    ("慎重に選考を重ねました。", "慎重/厳正なる選考"),
    ("今後のご健勝をお祈りいたします。", "ご活躍をお祈り"),
    ("採用予定人数に達しました。", "募集枠が充足"),
    ("After careful consideration, we have made a decision.", "after careful consideration"),
    # A lead-in to bad news of any kind (a session cancelled), not a decision by itself.
    ("We regret to inform you that the information session is cancelled.", "regret to inform"),
    ("Thank you for your interest in the role.", "thank you for your interest"),
    ("We wish you the best of luck in your job search.", "wish you the best"),
    ("We encourage you to apply for future roles.", "keep your resume on file / apply again"),
]


@pytest.mark.parametrize(("text", "label"), MEDIUM)
def test_a_medium_phrase_alone_is_not_enough(text: str, label: str) -> None:
    verdict = classify("", "ご応募 application " + text)
    assert label in verdict.reasons
    assert 0 < verdict.score < THRESHOLD and not verdict.is_rejection


def test_two_medium_phrases_are_enough() -> None:
    text = "ご応募ありがとうございました。厳正なる選考の結果、今後のご健勝をお祈りいたします。"
    assert classify("", text).is_rejection


def test_the_full_closing_prayer_decides_alone() -> None:
    # ご活躍をお祈り (2) + お祈り申し上げ (1): the お祈りメール's own name, as strong as the rest.
    verdict = classify("", "ご応募ありがとうございました。今後のご活躍をお祈り申し上げます。")
    assert verdict.is_rejection and verdict.score == THRESHOLD


def test_subject_phrase_counts_only_in_the_subject() -> None:
    assert "選考結果 (subject)" in classify("選考結果のご連絡", "").reasons
    assert "選考結果 (subject)" not in classify("ご連絡", "選考結果のご連絡").reasons


OVERRIDES = [
    "次の選考にお進みいただきたく存じます。",
    "二次面接のご案内をいたします。",
    "面接日程をご調整ください。",
    "内定のご連絡を申し上げます。",
    "選考通過のお知らせです。",
    "一次選考に合格されました。",
    "We would like to invite you to the next round.",
    "Please schedule an interview using this link.",
    "We are pleased to offer you the position.",
    "Your offer letter is attached.",
]


@pytest.mark.parametrize("override", OVERRIDES)
def test_overrides_outweigh_a_strong_phrase(override: str) -> None:
    text = "残念ながら日程が変わりました。 Unfortunately, " + override
    verdict = classify("選考結果のご連絡", text)
    assert not verdict.is_rejection, verdict
    assert verdict.score < 0


def test_negated_next_stage_is_a_rejection() -> None:
    ja = classify("", "ご応募ありがとうございました。次の選考へお進みいただくことはできかねます。")
    en = classify("", "We will not be inviting you to the next round of interviews.")
    them = classify("", "Thanks for applying. You haven’t progressed to the next stage.")
    assert ja.is_rejection and en.is_rejection and them.is_rejection


def test_fugoukaku_is_not_goukaku() -> None:
    verdict = classify("", "書類選考の結果、不合格となりました。")
    assert verdict.is_rejection and "合格" not in verdict.reasons


def test_newsletter_quoting_rejection_phrases_is_not_a_rejection() -> None:
    text = ('Unfortunately, we all read "we regret to inform you". 「誠に残念ながら」'
            "と書かれた求人のお祈りメール。Unsubscribe")
    assert not classify("Career tips", text).is_rejection


def test_internal_memo_and_candidate_mail_are_not_rejections() -> None:
    assert not classify("面接結果", "お疲れ様です。山田様は不採用です。").is_rejection
    reverse = "選考を辞退させていただきたく存じます。貴社の益々のご発展をお祈り申し上げます。"
    assert not classify("選考辞退のご連絡", reverse).is_rejection


# Look-alikes, by family: each says a rejection phrase, and none is a rejection.
LOOKALIKES = [
    # What happens *if* (an acknowledgement explaining the process)
    ("Application received", "Thank you for applying. If you are not selected for an "
     "interview, we will let you know by email."),
    ("Application received", "If you have not heard from us within two weeks, please assume "
     "that your application has not been successful."),
    ("Your application", "Only shortlisted candidates will be contacted. Unsuccessful "
     "applicants will not receive feedback. We regret that we cannot reply to everyone."),
    ("ご応募ありがとうございます", "書類選考の結果、不採用の場合はご連絡いたしませんので、"
     "あらかじめご了承ください。"),
    ("ご応募完了", "企業から連絡がない場合は、今回はご縁がなかったものとお考えください。"),
    ("ご応募ありがとうございます", "選考結果は合否にかかわらずご連絡いたします。"
     "ご期待に添えない場合もございますが、ご了承ください。"),
    # The applicant's own decision, or its acknowledgement
    ("Re: Offer", "I regret to inform you that I have decided to decline your kind offer."),
    ("Re: Withdrawal", "Thank you for letting us know that you are withdrawing your "
     "application for the analyst role. We wish you every success in your new job."),
    ("Re: 選考辞退", "選考辞退のご連絡、承知いたしました。残念ではございますが、"
     "今後のご活躍をお祈り申し上げます。"),
    # Reschedules, offers, still in process
    ("Interview date", "Unfortunately we are unable to move the interview to next month. "
     "Could you do Tuesday at 10:00 instead?"),
    ("Offer", "Unfortunately we were not able to raise the salary, but we are delighted to "
     "offer you the role of analyst. Your offer letter is attached."),
    ("Your application", "No decision has been made yet, and you are still in the running "
     "for the role."),
    # Internal mail and business mail
    ("Pipeline", "Hi team, we agreed not to move forward with the candidate; could you send "
     "the rejection today?"),
    ("【社内】候補者の評価", "候補者の田中様ですが、今回は見送る方向で考えております。"
     "見送りで問題なければ、不採用のご連絡を差し上げる予定です。"),
    ("Re: Proposal", "After careful consideration, we have decided not to proceed with your "
     "proposal and have selected another vendor."),
    ("ご提案の件", "誠に残念ながら、今回はご提案の採用を見送らせていただくことになりました。"),
    # A template or article about rejection mail
    ("Templates", 'Template: "Dear [first name], thank you for applying. Unfortunately, we '
     'have decided not to move forward with your application at this time."'),
    ("文面の確認", "不採用通知の文面案です。{氏名}様 今回はご期待に添えない結果となりました。"),
]


@pytest.mark.parametrize(("subject", "text"), LOOKALIKES)
def test_lookalikes_are_not_rejections(subject: str, text: str) -> None:
    verdict = classify(subject, text)
    assert not verdict.is_rejection, verdict


def test_a_bulk_rejection_mentioning_what_others_got_is_a_rejection() -> None:
    text = ("エントリーいただいた皆様。書類選考を通過された方には、"
            "面接のご案内をお送りしております。"
            "本メールをお受け取りの皆様については、今回は選考を見送らせていただきます。")
    assert classify("書類選考結果について", text).is_rejection


def test_no_recruiting_context_means_no_rejection() -> None:
    text = "ご提案の件、誠に残念ながら今回は見送らせていただきます。"
    verdict = classify("お見積りの件", text)
    assert verdict.score >= THRESHOLD and not verdict.is_rejection
    assert "no recruiting context" in verdict.reasons


def test_quoted_history_and_reply_subjects_are_ignored() -> None:
    text = "ご応募ありがとうございました。\n> 次の選考のご案内です。\n> 面接日程をお知らせください"
    verdict = classify("Re: 面接日程のご連絡", text + "\nご縁がなかったということで。")
    assert verdict.is_rejection and verdict.score > 0
    outlook = ("Thanks for your note, see you on Monday.\nFrom: HR <hr@example.com>\n"
               "Sent: Monday\nWe regret to inform you that you were not selected.")
    assert not classify("RE: Interview", outlook).is_rejection


# NFKC and the other folds: full-width, half-width, katakana, 沿/添, spaces, line breaks.
VARIANTS = [
    "今回はｺﾞ縁がなかったということで",  # half-width katakana
    "今回はゴ縁がなかったということで",  # katakana
    "今回はこ\u3099縁がなかったということで",  # a combining voiced mark (decomposed input)
    "誠に　残念ながら",  # ideographic space
    "誠に残念\r\nながら",  # wrapped mid-phrase
    "ご期待に沿いかねる結果",  # 沿 for 添
    "ＹＯＵＲ　ＡＰＰＬＩＣＡＴＩＯＮ　ＷＡＳ　ＵＮＳＵＣＣＥＳＳＦＵＬ",  # full-width Latin
    "We  Regret\n to   Inform you that you were\n  Not   Selected",  # case and whitespace
    "We won’t be moving forward.",  # a curly apostrophe
]


@pytest.mark.parametrize("text", VARIANTS)
def test_normalised_variants_match(text: str) -> None:
    assert classify("選考結果", "ご応募 " + text).is_rejection


def test_normalise() -> None:
    assert normalise("ＡＢＣ　ｶﾞｲﾄﾞ\r\n 見 送り") == "abc がいど見送り"
    assert normalise("Hello\t\n World") == "hello world"
    assert normalise("candidates’ experience — “fit”") == "candidates' experience — \"fit\""
    assert normalise("ご確認頂き、ご返信致します") == "ご確認いただき、ご返信いたします"
    assert normalise("か\u3099 e\u0301") == "が é"


# Every mix of the characters that NFKC or the folds treat specially.
_FOLD_ALPHABET = (
    "aZ9 \n.'\"-" "あかがはぱ゛゜ー・" "アカガハパヴヷヽ" "ｱｶｶﾞﾊﾟｰ･" "ＡＺ０（）～！　"
    "〜①㈱Ⅱ㌔ﬁ豈⼀" "沿頂致添" "’‘“”" "漢字選考" "é가각" "\u3099\u309a\u0301\u0308\u0338="
)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_FOLD_ALPHABET, max_size=40))
def test_the_fast_fold_is_nfkc_and_the_folds(text: str) -> None:
    assert detect_text.fold(text) == unicodedata.normalize("NFKC", text).translate(detect_text.FOLD)


def test_stable_characters_are_stable() -> None:
    """What ``_fold`` leaves alone, NFKC and ``_FOLD`` leave alone too; and nothing in
    it composes with a following mark that is not a combining one (which ``_fold``
    catches)."""
    stable = re.compile(f"[{detect_text.STABLE}]")
    for code in range(0x110000):
        char = chr(code)
        if stable.match(char):
            assert unicodedata.normalize("NFKC", char) == char, hex(code)
            assert code not in detect_text.FOLD, hex(code)
        parts = unicodedata.decomposition(char).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            first, second = (chr(int(p, 16)) for p in parts)
            assert not stable.match(second), hex(code)
            if stable.match(first):
                assert unicodedata.combining(second), hex(code)


# ---------------------------------------------------------------- extraction


def _mail(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


def test_extract_decodes_rfc2047_subject_and_qp_utf8() -> None:
    msg = _mail(
        "Subject: =?UTF-8?B?" + base64.b64encode("選考結果".encode()).decode() + "?=\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
        b"=E4=B8=8D=E6=8E=A1=E7=94=A8\r\n",
    )
    assert extract_text(msg) == ("選考結果", "不採用\r\n")


def test_extract_iso2022jp_with_cp50220_characters() -> None:
    jis = b"\x1b$B-!-5\x1b(B \x1b$B%F%9%H\x1b(B"  # ①Ⅰ テスト, NEC row 13 is not in iso2022_jp
    msg = _mail("Subject: x\nContent-Type: text/plain; charset=ISO-2022-JP\n", jis)
    assert extract_text(msg)[1] == "①Ⅰ テスト"


@pytest.mark.parametrize(
    ("data", "label"),
    [
        ("不採用".encode("cp932"), "shift_jis"),
        ("不採用".encode("euc_jp"), "euc-jp"),
        ("不採用".encode(), "iso-2022-jp"),  # UTF-8 labelled JIS
        ("不採用".encode("cp932"), "utf-8"),  # Shift_JIS labelled UTF-8
        ("不採用".encode("iso2022_jp"), None),  # JIS with no charset
        ("不採用".encode(), "x-no-such-charset"),
        ("不採用".encode(), "undefined"),  # a codec that always raises UnicodeError
        ("不採用".encode(), "utf\x00-8"),  # ValueError: a NUL in the codec name
        ("不採用".encode(), "base64"),  # not a text encoding
    ],
)
def test_decode_bytes_survives_wrong_labels(data: bytes, label: str | None) -> None:
    assert decode_bytes(data, label) == "不採用"


def test_html_is_stripped_and_unescaped() -> None:
    html = (b"<html><head><style>p{color:red}</style><!--[if mso]>x<![endif]--></head>"
            b"<body><p>We&nbsp;regret&#32;to inform&amp;</p><script>alert(1)</script>"
            b"</body></html>")
    msg = _mail("Subject: a\nContent-Type: text/html; charset=us-ascii\n", html)
    text = extract_text(msg)[1]
    assert "regret to inform&" in " ".join(text.split())
    assert "color" not in text and "alert" not in text and "mso" not in text


def test_attachments_and_attached_messages_are_not_read() -> None:
    msg = _mail(
        'Subject: a\nContent-Type: multipart/mixed; boundary="b"\n',
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nATTACHED\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nINNER\r\n--b--\r\n",
    )
    assert extract_text(msg) == ("a", "hello")  # the CRLF before a boundary is the boundary's


GARBAGE = [
    b"",
    b"\x00\xff\xfe garbage \x1b$B\xff\xff",
    b"Subject: =?utf-8?B?!!!?= =?x-unknown?Q?=FF?=\r\n\r\nbody",
    b"Subject: \xff\xfe raw 8bit\r\nContent-Type: multipart/alternative\r\n\r\nno boundary",
    b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Transfer-Encoding: base64'
    b"\r\n\r\n@@@not base64@@@\r\n",
    b"Content-Type: text/plain; charset*=utf-8''%ZZ\r\n\r\n\xe4\xb8",
    b'Content-Type: multipart/mixed; boundary="a"\r\n\r\n'
    + b'--a\r\nContent-Type: multipart/mixed; boundary="a"\r\n\r\n' * 200,
    bytes(range(256)) * 50,
]


@pytest.mark.parametrize("data", GARBAGE)
def test_malformed_input_never_raises(data: bytes) -> None:
    subject, text = extract_text(data)
    assert isinstance(subject, str) and isinstance(text, str)
    assert isinstance(classify(subject, text).score, float)




# ---------------------------------------------------------------- the cue gate
#
# classify() runs a positive rule only when one of its cues is in the text.  That is only
# safe if every match of the rule contains one of them: proved here from the parsed
# pattern, and checked on every labelled mail and every phrase in this file.


def _exact(items: Any) -> set[str] | None:
    """The strings a sequence of parsed items can match, when they are few."""
    strings = {""}
    for op, av in items:
        item = _exact_item(op, av)
        if item is None:
            return None
        strings = {a + b for a in strings for b in item}
        if len(strings) > 512:
            return None
    return strings


def _exact_item(op: Any, av: Any) -> set[str] | None:
    c = sre_constants
    if op is c.LITERAL:
        return {chr(av)}
    if op is c.IN:
        chars: set[str] = set()
        for kind, value in av:
            if kind is c.LITERAL:
                chars.add(chr(value))
            elif kind is c.RANGE and value[1] - value[0] < 64:
                chars.update(chr(code) for code in range(value[0], value[1] + 1))
            else:
                return None
        return chars
    if op is c.SUBPATTERN:
        return _exact(av[3])
    if op is c.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            strings = _exact(branch)
            if strings is None:
                return None
            union |= strings
        return union
    if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[1] <= 4:
        body = _exact(av[2])
        if body is None:
            return None
        out, current = set(), {""}
        for count in range(av[1] + 1):
            if count >= av[0]:
                out |= current
            current = {a + b for a in current for b in body}
        return out
    if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
        return {""}  # zero width: consumes nothing
    return None


def _covered(items: Any, cues: tuple[str, ...]) -> bool:
    """Does every match of this sequence contain one of ``cues``?"""
    items = list(items)
    for start in range(len(items)):  # a run of items with few strings, all holding a cue
        strings = {""}
        for op, av in items[start:]:
            item = _exact_item(op, av)
            if item is None:
                break
            strings = {a + b for a in strings for b in item}
            if len(strings) > 512:
                break
            if all(any(cue in s for cue in cues) for s in strings):
                return True
    c = sre_constants
    for op, av in items:  # or one item that always holds one
        if op is c.SUBPATTERN and _covered(av[3], cues):
            return True
        if op is c.BRANCH and all(_covered(branch, cues) for branch in av[1]):
            return True
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1 and _covered(av[2], cues):
            return True
    return False


@pytest.mark.parametrize("rule", detect.RULES, ids=lambda rule: rule.label or rule.pattern)
def test_every_match_of_a_rule_holds_one_of_its_cues(rule: detect.Rule) -> None:
    parsed = sre_parser.parse(detect_text.canon(rule.pattern))
    assert rule.cues, "a rule needs cues"
    assert _covered(parsed, tuple(detect_text.canon(cue) for cue in rule.cues))
    if rule.also:
        assert _covered(parsed, tuple(detect_text.canon(cue) for cue in rule.also))


def test_the_proof_catches_a_missing_cue() -> None:
    assert _covered(sre_parser.parse("(?:not|n't) (?:selected|chosen)"), ("not", "n't"))
    assert not _covered(sre_parser.parse("(?:not|n't) (?:selected|chosen)"), ("not",))
    assert not _covered(sre_parser.parse("(?:not)? selected"), ("not",))
    assert _covered(sre_parser.parse("見送(?:らせ|り)|見合わせ"), ("見送", "見合"))


def _phrases() -> list[tuple[str, str]]:
    texts = [("選考結果 / your application", text) for text, _ in STRONG + MEDIUM]
    texts += [("選考結果のご連絡", "残念ながら Unfortunately, " + text) for text in OVERRIDES]
    texts += LOOKALIKES + [("選考結果", "ご応募 " + text) for text in VARIANTS]
    return texts


def _all_texts() -> list[tuple[str, str]]:
    mails = [extract_text((DATA / row["file"]).read_bytes()) for row in _labelled()]
    return mails + _phrases()


def test_the_gate_agrees_with_the_full_rule_set() -> None:
    """On every labelled mail and every phrase above: the verdict with the cue gate is the
    verdict without it, and every rule that matches was woken by its cues."""
    for subject, text in _all_texts():
        own = detect_text.own_words(subject, text)
        assert detect.score(*own) == detect.score(*own, gate=False), (subject, text[:80])
        where = {"subject": own[0], "body": own[1], "any": own[0] + "\n" + own[1]}
        woken = detect._woken(*own) | detect._woken(*own, ("negative",))
        for i, (rule, parts) in enumerate(detect._COMPILED):
            if detect._matches(parts, where[rule.where]):
                assert i in woken, (rule.label, subject, text[:80])


def test_the_literal_led_parts_match_what_the_pattern_matches() -> None:
    whole = [re.compile(detect_text.canon(rule.pattern)) for rule in detect.RULES]
    for subject, text in _all_texts():
        own = detect_text.own_words(subject, text)
        joined = own[0] + "\n" + own[1]
        for (rule, parts), pattern in zip(detect._COMPILED, whole, strict=True):
            assert detect._matches(parts, joined) == bool(pattern.search(joined)), rule.label


def test_conditional_clauses_are_dropped_before_the_phrases_count() -> None:
    text = normalise("Thanks for applying. If you are not selected, we will tell you. We will "
                     "not progress your application, but if a role opens up we will call. "
                     "Even if it was close, we went with another candidate.")
    assert detect._unconditional(text) == (
        "thanks for applying.  we will not progress your application, but  "
        "even if it was close, we went with another candidate.")
    ja = normalise("書類選考の結果、不採用の場合はご連絡しません。今回は見送らせていただきますが、"
                   "募集がある場合はご連絡します。")
    assert detect._unconditional(ja) == " 今回は見送らせていただきますが、 "


def test_the_splitter() -> None:
    assert detect._literal_led("(?:a|b)c|d(?:e|f)") == ["ac", "bc", "d(?:e|f)"]
    assert detect._literal_led("(?:go|went) (?:x|y)") == ["go (?:x|y)", "went (?:x|y)"]
    assert detect._literal_led("(?:a|b)?c") == ["(?:a|b)?c"]
    assert detect._literal_led("(?:ab|ac)d|[|(]x") == ["abd|acd", "[|(]x"]


# A Japanese and an English interview invitation, about 1,400 characters each: ordinary
# mail, the kind the gateway reads all day.
INVITE_JA = (
    "山田 太郎 様\n\n株式会社サンプルテクノロジー 人事部採用担当の佐藤でございます。\n"
    "このたびは弊社の中途採用（バックエンドエンジニア職）にご応募いただき、誠にありがとうございます。\n"
    "書類選考の結果、ぜひ一次面接にお越しいただきたく、ご連絡を差し上げました。\n\n"
    "つきましては、以下の候補日の中からご都合のよい日時を二つほどお選びいただき、\n"
    "今週金曜日までにご返信いただけますでしょうか。\n\n【候補日】\n"
    "・6月12日（水）10:00～11:00\n・6月13日（木）14:00～15:00\n・6月14日（金）16:00～17:00\n\n"
    "【面接形式】\nオンライン（Google Meet）にて実施いたします。\n"
    "URLは日程確定後にお送りいたします。\n"
    "カメラとマイクをご用意のうえ、静かな環境でご参加ください。\n\n"
    "【面接官】\n開発部 部長 鈴木、開発部 リードエンジニア 高橋\n\n"
    "【所要時間】\n約60分を予定しております。前半30分で職務経歴とご経験について、\n"
    "後半30分で技術的なディスカッションと質疑応答を予定しております。\n\n"
    "【ご準備いただきたいもの】\n・職務経歴書（ご提出済みのもので結構です）\n"
    "・これまでに携わったプロジェクトの概要（口頭でのご説明で構いません）\n\n"
    "なお、ご都合がつかない場合は、別の日程をご提案いただいても構いません。\n"
    "できる限り調整いたしますので、お気軽にお申し付けください。\n"
    "当日の進め方や服装についてご不明な点がございましたら、本メールにご返信ください。\n"
    "交通費の支給はございませんが、オンライン面接のため来社の必要はございません。\n\n"
    "面接では、ご経験されたシステムの設計方針や、チームでの役割、\n"
    "今後挑戦したい技術領域などについてお伺いできればと考えております。\n"
    "また、弊社の開発体制や働き方についても詳しくご説明いたします。\n"
    "リモートワークの運用、評価制度、研修制度など、気になる点は何でもご質問ください。\n\n"
    "弊社では現在、決済基盤の刷新プロジェクトを進めており、\n"
    "大規模トラフィックを扱うバックエンドの設計にご経験のある方を求めております。\n"
    "山田様のこれまでのご経験は、まさに私どもが必要としているものと感じております。\n"
    "選考の流れとしては、一次面接の後に二次面接（役員面接）を予定しており、\n"
    "結果はそれぞれ一週間以内にご連絡いたします。二次面接では、事業責任者より中長期の事業計画と\n"
    "組織の方針についてご説明し、山田様のキャリアのご希望についても伺えればと考えております。\n"
    "また、ご希望があれば、一次面接の前に現場のエンジニアとのカジュアルな面談も設定いたします。\n"
    "オフィス見学をご希望の場合も、お気軽にお知らせください。社内の雰囲気を\n"
    "実際にご覧いただける機会として、これまで多くの方にご好評をいただいております。\n\n"
    "お忙しいところ恐縮ですが、ご検討のほどよろしくお願いいたします。\n"
    "当日お話しできることを、面接官一同楽しみにしております。\n\n"
    "――――――――――――――――――\n株式会社サンプルテクノロジー\n人事部 採用担当 佐藤 花子\n"
    "〒100-0001 東京都千代田区千代田1-1-1 サンプルビル5階\n"
    "TEL: 03-1234-5678 / MAIL: recruit@sample-tech.example.co.jp\n"
)
INVITE_EN = (
    "Hi Jordan,\n\nThank you for applying for the Senior Backend Engineer role at Northwind "
    "Labs, and for taking the time to speak with our recruiter, Priya, last week. We enjoyed "
    "learning about your work on the payments platform, and we'd like to invite you to the "
    "next stage of our process: a technical interview with two engineers from the team.\n\n"
    "The interview will last about 60 minutes and will be held over video. The first half is "
    "a conversation about systems you have designed and operated; the second half is a pair "
    "programming exercise in the language of your choice. You don't need to prepare anything "
    "in advance, but please make sure your camera and microphone work and that you have a "
    "quiet place to talk. If you need any adjustment, just let us know and we will arrange "
    "it.\n\nPlease choose a time that suits you using the scheduling link below. The slots "
    "shown are in your local time zone. If none of them work for you, reply to this email "
    "with a few times that do, and we will do our best to find an alternative.\n\n"
    "  https://careers.northwind.example.com/schedule/abc123\n\n"
    "Your interviewers will be Sam Carter (Staff Engineer) and Lee Wong (Engineering "
    "Manager). After the interview, we aim to get back to you within five working days. If "
    "you have any questions about the role, don't hesitate to get in touch.\n\n"
    "We look forward to speaking with you soon.\n\nBest regards,\nAlex Morgan\n"
    "Talent Acquisition Partner, Northwind Labs\n"
)


@pytest.mark.parametrize(("subject", "text"), [
    ("一次面接のご案内", INVITE_JA), ("Interview invitation - Senior Backend Engineer", INVITE_EN)])
def test_ordinary_mail_stops_before_the_overrides(subject: str, text: str) -> None:
    """An invitation wakes a few positive rules (ご検討, "don't"), none of which reaches
    the threshold; the overrides and noise rules never run for it."""
    assert 1300 <= len(text) <= 1700
    verdict = classify(subject, text)
    assert not verdict.is_rejection and verdict.score < THRESHOLD
    assert not any(r.weight < 0 and (r.label or r.pattern) in verdict.reasons
                   for r in detect.RULES)


ADVERSARIAL = [
    "you " * 50_000,
    "not " * 50_000,
    '"dear ' * 33_000,
    "採用" * 100_000,
    "ｶﾞ" * 100_000,
    "a\u0301" * 100_000,
    "\n> on x wrote:" * 15_000,
    "your application for " + "the " * 50_000,
    "残念ながら" * 40_000 + "。",
    ("ご期待に" + "添" * 10) * 10_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: repr(t[:12]))
def test_classify_is_linear_in_the_text(text: str) -> None:
    """200,000 characters of the worst repetition for a pattern: well under a second (a
    backtracking blow-up would take minutes)."""
    started = time.perf_counter()
    classify("選考結果 / update on your application", text)
    assert time.perf_counter() - started < 2.0


# ---------------------------------------------------------------- the labelled set


def _labelled() -> list[dict[str, str]]:
    with (DATA / "labels.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_the_labelled_set_is_well_formed() -> None:
    rows = _labelled()
    assert len(rows) >= 300
    assert {r["label"] for r in rows} == {"rejection", "other"}
    assert {r["language"] for r in rows} >= {"ja", "en"}
    listed = [r["file"] for r in rows]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert set(listed) == {p.relative_to(DATA).as_posix() for p in DATA.rglob("*.eml")}
    for name in listed:
        data = (DATA / name).read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n"), f"{name}: bare LF"
        assert b"MIME-Version: 1.0\r\n" in data and b"Message-ID: <" in data


def test_precision_and_recall_on_the_labelled_set() -> None:
    """The figures in docs/classifier.md: precision >= 0.98 and recall >= 0.90.

    A false positive puts an agency link into mail that is not a rejection, so precision
    is the stricter minimum: with 152 rejections it allows three false positives, where
    recall allows fifteen misses.
    """
    table: Counter[tuple[str, str]] = Counter()
    wrong = []
    for row in _labelled():
        verdict = classify(*extract_text((DATA / row["file"]).read_bytes()))
        gold = row["label"] == "rejection"
        cell = ("tp" if verdict.is_rejection else "fn") if gold else (
            "fp" if verdict.is_rejection else "tn")
        for group in ("all", row["language"]):
            table[group, cell] += 1
        if cell in ("fp", "fn"):
            wrong.append((cell, row["file"], verdict.score, verdict.reasons))

    def figures(group: str) -> tuple[float, float]:
        tp, fp, fn = (table[group, cell] for cell in ("tp", "fp", "fn"))
        return tp / max(tp + fp, 1), tp / max(tp + fn, 1)

    print()
    for group in sorted({group for group, _ in table}, key=lambda g: (g != "all", g)):
        precision, recall = figures(group)
        cells = " ".join(f"{cell}={table[group, cell]}" for cell in ("tp", "fp", "fn", "tn"))
        print(f"classifier {group:5}: precision={precision:.3f} recall={recall:.3f} {cells}")
    print(*wrong, sep="\n")
    precision, recall = figures("all")
    assert precision >= 0.98 and recall >= 0.90, wrong
