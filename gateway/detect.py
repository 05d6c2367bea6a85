"""Is this mail a rejection?  A phrase classifier for ``detect = "auto"`` (SPEC 5, rule 3).

The rules are data: ``RULES`` lists regular expressions with a weight and where they
apply (the subject, the body, or either).  ``classify`` normalises the text (NFKC,
case-folded, katakana folded to hiragana, 沿→添, whitespace between Japanese
characters removed, quoted replies dropped), adds the weight of every distinct rule
that matches, and calls the mail a rejection when the sum reaches ``THRESHOLD``.

Weights: a strong phrase (誠に残念ながら, "regret to inform") is worth 3, so it
decides alone; medium phrases (厳正なる選考, "after careful consideration") 1 to 2,
so two of them are needed; overrides that mean "not a rejection" (次の選考, 内定,
"next round") are -5; newsletters, auto-replies, internal memos and candidates'
own mail -3.  A few "negated" rules (次の選考…できかねます) carry +8 so that they
outweigh the override they contain.  docs/classifier.md has the measured figures.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import re
import unicodedata
from dataclasses import dataclass

from gateway import mime
from gateway.message import header_block
from gateway.textparts import text_parts

log = logging.getLogger("career_relay.detect")

THRESHOLD = 3.0
MAX_CHARS = 200_000  # enough for any real rejection; bounds the cost of the regexes
# What the gateway reads of a message for the classifier: the first text parts, this
# many decoded bytes in all.  A rejection says what it is in its first screen.
CLASSIFY_BYTES = 16_384

# Katakana→hiragana, so ｺﾞ縁 / ゴ縁 / ご縁 all match; 沿/添 and the tildes are one letter.
_FOLD = {c: c - 0x60 for c in range(0x30A1, 0x30F7)} | {ord("沿"): "添", ord("〜"): "~"}


@dataclass(frozen=True)
class Rule:
    pattern: str  # a regex over normalised text: lower case, hiragana, no CJK spaces
    weight: float
    where: str = "any"  # "subject", "body" or "any"
    label: str = ""  # what ``Verdict.reasons`` shows; the pattern when empty


@dataclass(frozen=True)
class Verdict:
    is_rejection: bool
    score: float
    reasons: tuple[str, ...]


STRONG, MEDIUM, WEAK, OVERRIDE, NOISE, NEGATED = 3.0, 1.5, 0.5, -5.0, -3.0, 8.0

RULES: tuple[Rule, ...] = (
    # Japanese decisions (strong)
    Rule("誠に残念ながら|誠に不本意ながら|誠に心苦しい", STRONG, label="誠に残念ながら"),
    Rule("(ご期待|ご希望|貴意|ご意向)に(お)?添(え|い|う)(かね|な|ませ|ことができ(ず|ませ|な))",
         STRONG, label="ご期待に添えない"),
    Rule("見送らせ|見送りと(な|さ|い)|お見送り|(採用|今回)(は|を)?見(送|合わせ)",
         STRONG, label="見送り"),
    Rule("ご縁が(なかった|無かった|なく|ありませんでした|ございませんでした)",
         STRONG, label="ご縁がなかった"),
    Rule("不採用|不合格", STRONG, label="不採用"),
    Rule("(採用|内定|合格|通過|ご期待|ご希望)[^。]{0,12}(至りません|至らず|至らなかった)",
         STRONG, label="…には至りませんでした"),
    Rule("通過(とは|には)?(され|でき|なり|いたし)?(ませんでした|ません|ず)", STRONG,
         label="通過されませんでした"),
    Rule("次(の|回の?)選考[^。]{0,25}(できません|できかね|いたしかね|かねます|なりません)",
         NEGATED, label="次の選考…できかねます (negated)"),
    # Japanese lead-ins, the closing prayer and document handling (medium)
    Rule("残念ながら", MEDIUM),
    Rule("(慎重|厳正な?る?)[^。]{0,4}(選考|検討|審査)", MEDIUM, label="慎重/厳正なる選考"),
    Rule("(ご活躍|ご健勝|ご多幸)[^。]{0,15}(お祈り|祈念)", 2.0, label="ご活躍をお祈り"),
    Rule("お祈り申し上げ", 1.0),
    Rule("(応募書類|履歴書|職務経歴書|個人情報)[^。]{0,30}(破棄|廃棄|返却|返送)",
         2.0, label="応募書類を破棄/返却"),
    Rule("選考結果|選考のご結果|応募結果|選考について", 1.0, "subject", "選考結果 (subject)"),
    Rule("ご了承(くだ|いただ|のほど)", WEAK, label="ご了承ください"),
    Rule("略儀ながら", WEAK),
    # English decisions (strong)
    Rule("regret to (inform|advise|let you know)|we regret that", STRONG,
         label="regret to inform"),
    Rule("(not|n't)( be)? (to )?(move|moving) forward", STRONG, label="not to move forward"),
    Rule("(pursue|proceed with|move forward with|go(ing)? with|went with|an offer to|hired"
         "|chose|selected) (an?other|other|a different|someone else)", STRONG,
         label="pursue other candidates"),
    Rule("(not|n't) (been )?(selected|successful|shortlisted)", STRONG, label="not selected"),
    Rule("(unable|not able) to (offer|extend)", STRONG, label="unable to offer"),
    Rule(r"(not|n't) (to )?(be )?(proceed|progress|advanc)\w* (with )?(your|you)",
         STRONG, label="not to proceed"),
    Rule("whose (qualifications|experience|background|skills|profiles?)[^.]{0,20}"
         "(closely|better|more|closer) (match|align|suit|fit)", STRONG, label="more closely match"),
    Rule(r"\b(not|n't|unable to)\b (be )?(moving|move|invit|advanc|progress)\w*[^.!?]{0,30}"
         "(next round|next stage|interview)", NEGATED, label="not … next round (negated)"),
    # English (medium)
    Rule("after (careful|thorough|much) (consideration|review|deliberation)", MEDIUM,
         label="after careful consideration"),
    Rule("unfortunately", 1.0),
    Rule("position has been filled|decided to fill the (position|role)", 2.0, label="filled"),
    Rule(r"wish(ing)? you (the best|every success|luck|all the best|success|well)[^.]{0,40}"
         "(search|future|endeavo|career)", MEDIUM, label="wish you the best"),
    Rule(r"keep your (resume|cv|details|information|application|profile) on file|"
         r"encourage you to (re-?)?apply", MEDIUM, label="keep your resume on file"),
    Rule("thank you for your interest", WEAK),
    Rule("update on your application|your application (to|for|with)|application (status|update)",
         1.0, where="subject", label="application update (subject)"),
    # Overrides: not a rejection
    Rule("次(の|回の?)選考(に|へ|の)|通過となりました|通過されました"
         "|選考(を|の)?通過(?!とは|には|され(ませ|ず)|でき|なりま)", OVERRIDE,
         label="次の選考/選考通過"),
    Rule("次面接(へ|に)(お?進|ご案内)|次面接の(ご案内|日程|実施)|面接(の)?日程|面接のご案内|"
         "日程(の)?(ご)?調整|面接を(実施|設定)(したく|させて|いたします)|ご来社(くだ|いただきたく)",
         OVERRIDE, label="面接日程/面接のご案内"),
    Rule("内(々)?定(?!には至|を見送|をお出し|を出す)", OVERRIDE, label="内定"),
    Rule("(?<!不)合格(?!とは|には)", OVERRIDE, label="合格"),
    Rule("next (round|stage|step)|schedule (an|your|a) (interview|call|time)|interview invitation"
         "|invite you (to|for) (an? )?(interview|onsite|call|conversation|meet)", OVERRIDE,
         label="next round / schedule an interview"),
    Rule("pleased to (offer|extend)|offer letter|offer of employment|congratulations"
         "|(excited|happy|delighted) to (offer|move forward|invite)", OVERRIDE,
         label="pleased to offer"),
    # Noise: newsletters, job alerts, scouts, auto-replies, internal memos, candidates' mail
    Rule("unsubscribe|配信(停止|解除)|メールマガジン|メルマガ|newsletter|job alert"
         "|jobs? (you may|recommended|for you)|おすすめ求人|新着求人|スカウト|view (this|it) in"
         " (your )?browser", NOISE, label="newsletter/marketing"),
    Rule("自動返信|不在(にして|のため)|out of (the )?office|automatic reply|auto-?reply"
         "|受け付けました|受付(が)?完了|we have received your application", NOISE,
         label="auto-reply/acknowledgement"),
    Rule("満席|定員に達し|キャンセル待ち|fully booked", NOISE, label="event full"),
    Rule("お疲れ(様|さま)です|社外秘|社内(限り|のみ)|各位|internal only|\\bfyi\\b|hi team",
         NOISE, label="internal memo"),
    Rule("(御社|貴社)[^。]{0,15}(ご発展|ご繁栄)|辞退(させて|いたします|したく)"
         "|不採用の(場合|際)", NOISE, label="candidate's mail / conditional"),
)


# A rejection is about an application: without one of these words, nothing is a rejection
# (a supplier's proposal turned down with 誠に残念ながら…見送らせて is not).
CONTEXT = (
    "応募|選考|採用|面接|面談|エントリー|求人|内定|履歴書|職務経歴書|"
    r"appl(y|ied|ying|ication)|position|role\b|candida|interview|recruit|hiring|\bjob"
)


def _canon_pattern(pattern: str) -> re.Pattern[str]:
    # Patterns get the same character folds as the text, never case folding (\S ≠ \s).
    return re.compile(unicodedata.normalize("NFKC", pattern).translate(_FOLD))


_COMPILED = tuple((rule, _canon_pattern(rule.pattern)) for rule in RULES)
_CONTEXT = _canon_pattern(CONTEXT)
# Every rule that adds to the score, as one pattern: text that matches none of them
# cannot reach THRESHOLD, and most mail is decided by this one pass.
_POSITIVE = {where: re.compile("|".join(
    f"(?:{regex.pattern})" for rule, regex in _COMPILED
    if rule.weight > 0 and rule.where in (where, "any"))) for where in ("subject", "body")}
_QUOTE_CUT = re.compile(
    r"^(-{3,} ?(original message|forwarded message|元のメッセージ)|on .{5,200} wrote:$)",
    re.IGNORECASE | re.MULTILINE,
)
_REPLY = re.compile(r"\s*(re|fw|fwd|aw|返信|転送)\s*[:：]", re.IGNORECASE)
_MENTION = re.compile(r"「[^」\n]{0,60}」|『[^』\n]{0,60}』|\"[^\"\n]{0,80}\"|“[^”\n]{0,80}”")
_CJK_SPACE = re.compile(r" (?=[^\x00-\x7f])|(?<=[^\x00-\x7f]) ")


def normalise(text: str) -> str:
    """NFKC, case-folded, kana-folded, whitespace collapsed and removed around CJK."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        text = text.translate(_FOLD)
        return _CJK_SPACE.sub("", " ".join(text.split()))
    return " ".join(text.split())


def _own_words(subject: str, text: str) -> tuple[str, str]:
    """What the sender wrote now, without history and without mentions.

    A reply's subject (Re:, 返信:) names the earlier thread; quoted lines and the
    forwarded history are someone else's words; a phrase in 「」 or "" is being
    talked about (a newsletter quoting お祈りメール), not used.
    """
    subject = "" if _REPLY.match(subject) else subject
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS])
    cut = _QUOTE_CUT.search(text)
    text = text[: cut.start()] if cut else text
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(">"))
    return subject, _MENTION.sub(" ", text)


def classify(subject: str, text: str) -> Verdict:
    """Score a mail's subject and text against ``RULES``; see the module docstring."""
    subject, text = (normalise(part) for part in _own_words(subject, text))
    if not (_POSITIVE["subject"].search(subject) or _POSITIVE["body"].search(text)):
        return Verdict(False, 0.0, ("no phrase of a rejection",))
    where = {"subject": subject, "body": text, "any": subject + "\n" + text}
    score, reasons = 0.0, []
    for rule, regex in _COMPILED:
        if regex.search(where[rule.where]):
            score += rule.weight
            reasons.append(rule.label or rule.pattern)
    in_context = bool(_CONTEXT.search(where["any"]))
    if not in_context:
        reasons.append("no recruiting context")
    verdict = Verdict(score >= THRESHOLD and in_context, score, tuple(reasons))
    log.debug("rejection=%s score=%.1f reasons=%s", verdict.is_rejection, score, reasons)
    return verdict


# --- Getting the text out of a message ---------------------------------------------------

_JIS_ESC = re.compile(rb"\x1b(\$@|\$B|\(B|\(J|\(I)")


def _jis_to_cp932(data: bytes, errors: str = "strict") -> str:
    """Decode ISO-2022-JP as CP50220 does: JIS X 0208 rows 13 and 89-92 (①, Ⅱ, ㈱, 髙).

    Python's iso2022_jp codecs reject NEC row 13; mapping each JIS pair to Shift_JIS
    and decoding as CP932 keeps them (research/consent_domain.md 4.3).
    """
    out, mode = bytearray(), b"(B"
    for i, chunk in enumerate(_JIS_ESC.split(data)):
        if i % 2:
            mode = chunk
            continue
        if mode in (b"$@", b"$B"):
            for j in range(0, len(chunk) - 1, 2):
                hi, lo = chunk[j], chunk[j + 1]
                s1 = ((hi + 1) >> 1) + (0x70 if hi <= 0x5E else 0xB0)
                s2 = lo + (0x1F if hi % 2 else 0x7E) + (1 if hi % 2 and lo >= 0x60 else 0)
                out += bytes((s1 & 0xFF, s2 & 0xFF))
        elif mode == b"(I":
            out += bytes((b | 0x80) for b in chunk)
        else:
            out += chunk
    return out.decode("cp932", errors=errors)


_JIS_CODECS = ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_2")
_FALLBACKS = ("utf-8", "cp932", "euc_jp")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` labelled ``charset``, never raising: declared → variants → guesses.

    Mail labelled ISO-2022-JP may carry CP50220 characters, or be UTF-8 in disguise
    (research/consent_domain.md 4.3); a JIS body is 7-bit, so 8-bit bytes rule it out.
    """
    label = (charset or "").strip().strip('"').lower().replace("-", "_")
    if label in ("shift_jis", "sjis", "x_sjis", "windows_31j", "ms932", "shift_jisx0213"):
        label = "cp932"  # the superset every Japanese Windows client really sends
    seven_bit = data.isascii()
    jis = seven_bit and (label.startswith(("iso_2022_jp", "iso2022_jp")) or b"\x1b$" in data)
    tries = (*_JIS_CODECS, "cp50220") if jis else (label,) if label else ()
    for codec in (*tries, *_FALLBACKS):
        try:
            return _jis_to_cp932(data) if codec == "cp50220" else data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return _jis_to_cp932(data, "replace") if jis else data.decode("utf-8", errors="replace")


_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t]+(?==\?)")


def decode_header_value(raw: bytes) -> str:
    """A header field's value for reading: unfolded, RFC 2047 words decoded with the
    same fallbacks as bodies, raw 8-bit text too.  Never raises; linear in the value."""
    text = raw.decode("utf-8", "surrogateescape")
    text = re.sub(r"\r\n(?=[ \t])", "", text)  # unfold (RFC 5322 2.2.3)
    text = _BETWEEN_WORDS.sub("", text)  # space between two encoded words is not text

    def word(m: re.Match[str]) -> str:
        charset = m.group(1).partition("*")[0]  # RFC 2231 section 5: charset*lang
        data = m.group(3).encode("ascii", "surrogateescape")
        try:
            if m.group(2) in "bB":
                raw_bytes = base64.b64decode(data + b"=" * (-len(data) % 4))
            else:
                raw_bytes = binascii.a2b_qp(data, header=True)
        except (binascii.Error, ValueError):
            return m.group(0)
        return decode_bytes(raw_bytes, charset)

    text = _ENCODED_WORD.sub(word, text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def header_field(block: bytes, name: bytes) -> bytes | None:
    """The raw value of the first ``name`` field in a header block (folds kept)."""
    pattern = re.compile(rb"(?im)^" + re.escape(name) + rb"[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)")
    found = pattern.search(block)
    return None if found is None else found.group(1).strip()


_RAW_BLOCK = re.compile(r"<(script|style)\b|<!--", re.IGNORECASE)
_BREAK = re.compile(r"<(?:br|/p|/div|/tr|/li|/h[1-6])\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")


def html_to_text(markup: str) -> str:
    """Crude but enough for phrases: drop scripts, styles and comments, then tags.

    Linear in the markup: a script, style or comment that never closes ends the
    text (a flood of unclosed ``<script`` took seconds with a lazy ``.*?``).
    """
    kept, pos = [], 0
    lower = markup.lower()
    while True:
        opened = _RAW_BLOCK.search(markup, pos)
        if opened is None:
            kept.append(markup[pos:])
            break
        kept.append(markup[pos:opened.start()])
        closer = "-->" if opened.group(0) == "<!--" else f"</{opened.group(1).lower()}"
        close = lower.find(closer, opened.end())
        if close < 0:
            break
        gt = markup.find(">", close)
        pos = len(markup) if gt < 0 else gt + 1
        kept.append(" ")
    text = _BREAK.sub("\n", "".join(kept))
    return html.unescape(_TAG.sub(" ", text))


def classifier_input(message: bytes, root: mime.Part,
                     limit: int = CLASSIFY_BYTES) -> tuple[str, str]:
    """(subject, text) the classifier reads: the plain-text parts, or failing those
    the HTML ones, ``limit`` decoded bytes in all."""
    subject = header_field(header_block(message), b"subject")
    plain: list[str] = []
    markup: list[str] = []
    budget = limit
    for tp in text_parts(message, root):
        if budget <= 0:
            break
        if tp.html:
            if not plain and not markup:
                markup.append(html_to_text(decode_bytes(_head(tp.raw, limit), tp.charset)))
            continue
        raw = _head(tp.raw, budget)
        budget -= len(raw)
        plain.append(decode_bytes(raw, tp.charset))
    return decode_header_value(subject or b""), "\n".join(plain or markup)


def _head(raw: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, cut after a line so that no character is split."""
    if len(raw) <= limit:
        return raw
    cut = raw.rfind(b"\n", 0, limit)
    return raw[:cut + 1] if cut > 0 else raw[:limit]


def extract_text(message: bytes) -> tuple[str, str]:
    """(subject, text) of a whole message for tests and tools; never raises."""
    try:
        return classifier_input(message, mime.parse(message), MAX_CHARS)
    except mime.MimeError:
        log.debug("extract_text: unmappable message", exc_info=True)
        return "", decode_bytes(message, None)
