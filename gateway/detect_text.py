"""The text the classifier's rules read (``gateway.detect``): folded and normalised.

The rules are written over normalised text: NFKC, case-folded, katakana folded to
hiragana, 沿→添, 頂→いただ, 致→いた, curly quotes to straight ones, whitespace runs to
one space and none between Japanese characters.  ``own_words`` makes that text of a
mail: only what the sender wrote now (no quoted history, no mentioned phrases).
``canon`` gives a rule's pattern the same character folds.
"""

from __future__ import annotations

import re
import unicodedata

from gateway.mailtext import MAX_CHARS

# Katakana→hiragana, so ｺﾞ縁 / ゴ縁 / ご縁 all match; 沿/添, 頂/いただ, 致/いた and the
# tildes are one spelling; curly quotes and apostrophes are straight ones (we’ve → we've).
FOLD: dict[int, str | int] = {c: c - 0x60 for c in range(0x30A1, 0x30F7)} | {
    ord("沿"): "添", ord("頂"): "いただ", ord("致"): "いた", ord("〜"): "~",
    ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"',
}
# Characters that NFKC leaves alone and FOLD does not touch: ASCII, Japanese
# punctuation, hiragana and kanji (less 沿, 頂, 致).  Only runs of other characters are
# normalised, which is what makes a Japanese mail cheap (full NFKC is ~10x slower).
STABLE = (
    "\x00-\x7f\u3001-\u301b\u301d-\u3035\u3041-\u3096\u309d\u309e"
    "\u4e00-\u6cbe\u6cc0-\u81f3\u81f5-\u9801\u9803-\u9fff"
)
_UNSTABLE = re.compile(f"([^{STABLE}]+)")
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_SPACE = re.compile(f" (?=[{_CJK}])(?<=[{_CJK}] )")


def canon_pattern(pattern: str, flags: int = 0) -> re.Pattern[str]:
    # Patterns get the same character folds as the text, never case folding (\S ≠ \s).
    return re.compile(canon(pattern), flags)


def canon(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(FOLD)


# Where the history starts, searched in "\n" + text: a line of dashes, "On … wrote:",
# Gmail's Japanese "2024年6月10日(月) 10:00 山田 <…>:", an Outlook header block.
_QUOTE_CUT = canon_pattern(
    r"\n(?:-{3,} ?(?:original message|forwarded message|元のメッセージ|転送されたメッセージ)"
    r"|on [^\n]{5,200} wrote:(?=\n|$)"
    r"|\d{4}年\d{1,2}月\d{1,2}日[^\n]{0,120}(?:<[^<>\n]+>|wrote|書きました) ?:(?=\n|$)"
    r"|(?:from|差出人|送信者) ?: [^\n]{1,200}\n(?:sent|date|送信日時|日時) ?: )"
)
_REPLY = re.compile(r"\s*(re|fw|fwd|aw|返信|転送)\s*[:：]", re.IGNORECASE)
# A short phrase in quotes is mentioned, not used; so is a whole letter in quotes that
# opens with a greeting (a template or a draft shown to someone else).
_MENTION = re.compile(
    r"「[^」\n]{0,60}」|『[^』\n]{0,60}』|\"[^\"\n]{0,80}\"|\"(?:dear|hi|hello)\b[^\"]{0,800}\""
)


def fold(text: str) -> str:
    """``unicodedata.normalize("NFKC", text).translate(FOLD)``, made cheap.

    Only the runs of characters outside ``STABLE`` can change, so only they are
    normalised; a run that starts with a combining mark once normalised (か + U+3099,
    か + ﾞ, e + U+0301) could compose with the stable character before it, and then the
    whole text is.
    """
    if text.isascii():
        return text
    parts = _UNSTABLE.split(text)
    runs = [_ONE.get(run) or _fold_run(run) for run in parts[1::2]]
    if any(unicodedata.combining(run[:1]) for run in runs):
        return canon(text)
    parts[1::2] = runs
    return "".join(parts)


# Single characters folded so far (（, ）, ・, ～ …): half the runs of a Japanese mail.
_ONE: dict[str, str] = {}


def _fold_run(run: str) -> str:
    folded = canon(run)
    if len(run) == 1:
        _ONE[run] = folded
    return folded


def _squeeze(text: str) -> str:
    """Whitespace runs to one space; no space between two Japanese characters."""
    text = " ".join(text.split())
    return text if text.isascii() else _CJK_SPACE.sub("", text)


def normalise(text: str) -> str:
    """NFKC, case-folded, kana-folded, whitespace collapsed and removed within Japanese."""
    return _squeeze(fold(text).casefold())


def own_words(subject: str, text: str) -> tuple[str, str]:
    """What the sender wrote now, without history and without mentions, normalised.

    A reply's subject (Re:, 返信:) names the earlier thread; quoted lines and the
    forwarded history are someone else's words; a phrase in 「」 or "" is being
    talked about (a newsletter quoting お祈りメール), not used.
    """
    subject = normalise(subject)
    subject = "" if _REPLY.match(subject) else subject
    text = fold(text[:MAX_CHARS]).casefold()
    cut = _QUOTE_CUT.search("\n" + text)
    text = text[: cut.start()] if cut else text
    if ">" in text:
        text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(">"))
    if '"' in text or "「" in text or "『" in text:
        text = _MENTION.sub(" ", text)
    return subject, _squeeze(text)
