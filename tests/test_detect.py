"""The rejection classifier (SPEC 5 rule 3) and the text extraction it reads from."""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import pytest

from gateway.detect import THRESHOLD, classify, decode_bytes, extract_text, normalise

DATA = Path(__file__).resolve().parent / "data" / "classifier"

# Each strong phrase decides alone, inside an otherwise neutral recruiting mail.
STRONG = [
    ("誠に残念ながら、ご連絡いたします。", "誠に残念ながら"),
    ("今回はご期待に添えない結果となりました。", "ご期待に添えない"),
    ("今回はご期待に沿えない結果となりました。", "ご期待に添えない"),
    ("貴意に添いかねる結果となりました。", "ご期待に添えない"),
    ("今回は見送らせていただきます。", "見送り"),
    ("今回は採用を見送ることとなりました。", "見送り"),
    ("今回はお見送りとさせていただきます。", "見送り"),
    ("今回はご縁がなかったということで。", "ご縁がなかった"),
    ("今回は不採用とさせていただきます。", "不採用"),
    ("採用には至りませんでした。", "…には至りませんでした"),
    ("書類選考を通過されませんでした。", "通過されませんでした"),
    ("We regret to inform you of our decision.", "regret to inform"),
    ("We have decided not to move forward with your application.", "not to move forward"),
    ("We have decided to pursue other candidates.", "pursue other candidates"),
    ("Unfortunately, you were not selected for the role.", "not selected"),
    ("We are unable to offer you the position.", "unable to offer"),
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
    ("After careful consideration, we have made a decision.", "after careful consideration"),
    ("Thank you for your interest in the role.", "thank you for your interest"),
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
    assert ja.is_rejection and en.is_rejection


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


def test_no_recruiting_context_means_no_rejection() -> None:
    text = "ご提案の件、誠に残念ながら今回は見送らせていただきます。"
    verdict = classify("お見積りの件", text)
    assert verdict.score >= THRESHOLD and not verdict.is_rejection
    assert "no recruiting context" in verdict.reasons


def test_quoted_history_and_reply_subjects_are_ignored() -> None:
    text = "ご応募ありがとうございました。\n> 次の選考のご案内です。\n> 面接日程をお知らせください"
    verdict = classify("Re: 面接日程のご連絡", text + "\nご縁がなかったということで。")
    assert verdict.is_rejection and verdict.score > 0


# NFKC and the other folds: full-width, half-width, katakana, 沿/添, spaces, line breaks.
VARIANTS = [
    "今回はｺﾞ縁がなかったということで",  # half-width katakana
    "今回はゴ縁がなかったということで",  # katakana
    "誠に　残念ながら",  # ideographic space
    "誠に残念\r\nながら",  # wrapped mid-phrase
    "ご期待に沿いかねる結果",  # 沿 for 添
    "ＷＥ　ＲＥＧＲＥＴ　ＴＯ　ＩＮＦＯＲＭ　ＹＯＵ",  # full-width Latin
    "We  Regret\n to   Inform you",  # case and whitespace
]


@pytest.mark.parametrize("text", VARIANTS)
def test_normalised_variants_match(text: str) -> None:
    assert classify("選考結果", "ご応募 " + text).is_rejection


def test_normalise() -> None:
    assert normalise("ＡＢＣ　ｶﾞｲﾄﾞ\r\n 見 送り") == "abcがいど見送り"
    assert normalise("Hello\t\n World") == "hello world"


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


# ---------------------------------------------------------------- the labelled set


def _labelled() -> list[dict[str, str]]:
    with (DATA / "labels.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_the_labelled_set_is_well_formed() -> None:
    rows = _labelled()
    assert len(rows) >= 80
    assert {r["label"] for r in rows} == {"rejection", "other"}
    assert {r["language"] for r in rows} >= {"ja", "en"}
    listed = {r["file"] for r in rows}
    assert listed == {p.relative_to(DATA).as_posix() for p in DATA.rglob("*.eml")}
    for name in listed:
        data = (DATA / name).read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n"), f"{name}: bare LF"
        assert b"MIME-Version: 1.0\r\n" in data and b"Message-ID: <" in data


def test_precision_and_recall_on_the_labelled_set() -> None:
    """The figures in docs/classifier.md.  The minimums leave room for one or two misses.

    With 42 rejections and 45 others, precision >= 0.95 allows two false positives and
    recall >= 0.90 four missed rejections; a change to RULES that costs more fails here.
    """
    tp = fp = fn = tn = 0
    misses = []
    for row in _labelled():
        verdict = classify(*extract_text((DATA / row["file"]).read_bytes()))
        gold = row["label"] == "rejection"
        tp += gold and verdict.is_rejection
        fn += gold and not verdict.is_rejection
        fp += verdict.is_rejection and not gold
        tn += not gold and not verdict.is_rejection
        if verdict.is_rejection != gold:
            misses.append((row["file"], verdict.score, verdict.reasons))
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    print(f"\nclassifier: precision={precision:.3f} recall={recall:.3f} "
          f"tp={tp} fp={fp} fn={fn} tn={tn}", *misses, sep="\n")
    assert precision >= 0.95 and recall >= 0.90, misses
