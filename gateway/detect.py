"""Is this mail a rejection?  A phrase classifier for ``detect = "auto"`` (SPEC 5, rule 3).

The rules are data: ``RULES`` lists regular expressions with a weight and where they
apply (the subject, the body, or either).  ``classify`` normalises the text
(``gateway.detect_text``: NFKC, case-folded, katakana folded to hiragana, 沿→添,
頂→いただ, 致→いた, curly quotes to straight ones, whitespace between Japanese
characters removed, quoted replies and mentioned phrases dropped), adds the weight
of every distinct rule that matches, and calls the mail a rejection when the sum
reaches ``THRESHOLD`` and the mail is about an application (``CONTEXT``).

The rules are written as phrase families, not sentences: a negation next to a verb of
progression whose object is the applicant or the application ("we will not be
progressing your application", "unable to take you forward"); an outcome said of the
applicant ("your application has been unsuccessful", "the role has been filled", "we
have offered the role to another candidate"); the Japanese decisions (見送り, ご縁,
添いかねる, 至らず, 不採用) with their kana and keigo variants.  The look-alikes are
families too, and some are read from the structure rather than listed: a phrase inside
a conditional clause ("if you are not selected, …", "…場合は") decides nothing; good
news addressed to "those who passed" (…方には) is not good news for the reader; the
applicant's own withdrawal, newsletters and templates about rejection mail, internal
mail, business proposals, invitations and offers are overrides or noise.

Weights: a strong phrase (誠に残念ながら, "regret to inform") is worth 3, so it
decides alone; medium phrases (厳正なる選考, "after careful consideration") 1 to 2,
so two of them are needed; overrides that mean "not a rejection" (次の選考, 内定,
"next round", a conditional, the applicant's own decision) are -5; newsletters,
auto-replies and internal memos -3.  A negated override (次の選考…できかねます, "not
… to the next round") is a strong phrase that ``cancels`` the override it contains.

Speed: most mail is ordinary, so ``classify`` first looks for each positive rule's
``cues`` (plain substrings, at least one of which is in every match of the rule) with
``in``, runs only the rules whose cues are present, and returns at once when what they
find cannot reach ``THRESHOLD``.  Past it, the overrides and noise rules are gated by
their cues the same way (a rejection wakes a few of twenty).  Every rule is compiled as
literal-led parts, which ``re`` scans fast.  docs/classifier.md has the measured figures
and timings.
"""

from __future__ import annotations

import bisect
import logging
import re

from gateway.detect_overrides import OVERRIDES
from gateway.detect_rules import (
    CONTEXT,
    MEDIUM,
    NOISE,
    OVERRIDE,
    PHRASES,
    STRONG,
    WEAK,
    Rule,
    Verdict,
)
from gateway.detect_text import canon, canon_pattern, normalise, own_words

# The text the classifier reads, re-exported for callers that want both in one place.
from gateway.mailtext import (
    CLASSIFY_BYTES,
    MAX_CHARS,
    classifier_input,
    decode_bytes,
    decode_header_value,
    extract_text,
    header_field,
    html_to_text,
)

__all__ = ["CLASSIFY_BYTES", "CONTEXT", "MAX_CHARS", "MEDIUM", "NOISE", "OVERRIDE", "RULES",
           "STRONG", "THRESHOLD", "WEAK", "Rule", "Verdict", "classifier_input", "classify",
           "decode_bytes", "decode_header_value", "extract_text", "header_field",
           "html_to_text", "normalise", "score"]

log = logging.getLogger("career_relay.detect")

# The phrases, then the overrides and noise rules: the order of ``Verdict.reasons``.
RULES: tuple[Rule, ...] = PHRASES + OVERRIDES

THRESHOLD = 3.0


def _group_end(pattern: str, start: int) -> int:
    """The index of the ")" closing the group opened at ``start`` (or of a "|" at top
    level when ``start`` is -1; len(pattern) when there is none)."""
    depth, i, in_class = 0, start + 1 if start >= 0 else 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1 + (pattern[i + 1:i + 2] == "^")
            continue  # a "]" right after "[" or "[^" is a literal
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth == 0 and start >= 0:
                return i
            depth -= 1
        elif c == "|" and depth == 0 and start < 0:
            return i
        i += 1
    return len(pattern)


def _top_alternatives(pattern: str) -> list[str]:
    parts = []
    while True:
        end = _group_end(pattern, -1)
        parts.append(pattern[:end])
        if end == len(pattern):
            return parts
        pattern = pattern[end + 1:]


def _literal_led(pattern: str, limit: int = 48) -> list[str]:
    """The pattern as alternatives that each start with a literal where possible.

    ``re`` finds a literal prefix with a fast scan but tries an alternation or a
    leading group at every position (50-100x slower on a page of text).  The top-level
    alternatives are split, and a leading ``(?:a|b)`` group (not repeated) is multiplied
    out: ``(?:a|b)c`` → ``ac``, ``bc``.  The union of the parts matches what the pattern
    matches.
    """
    todo, done = _top_alternatives(pattern), list[str]()
    while todo:
        alt = todo.pop(0)
        if alt.startswith("(?:") and len(done) + len(todo) < limit:
            end = _group_end(alt, 0)
            rest = alt[end + 1:]
            if rest[:1] not in ("?", "*", "+", "{"):
                todo[:0] = [inner + rest for inner in _top_alternatives(alt[3:end])]
                continue
        done.append(alt)
    # Parts that start with the same letter go back together: ``re`` factors a common
    # prefix out of an alternation (go with|going with → go + …), a literal again.
    by_first: dict[str, list[str]] = {}
    for alt in done:
        plain = alt[:1].isalnum() or not alt[:1].isascii()
        by_first.setdefault(alt[:1] if plain else alt, []).append(alt)
    return ["|".join(alts) for alts in by_first.values()]


# Each rule as its literal-led parts, compiled.
_COMPILED = tuple(
    (rule, tuple(re.compile(part) for part in _literal_led(canon(rule.pattern))))
    for rule in RULES
)
_CONTEXT = canon_pattern(CONTEXT)
_OTHERS = canon_pattern("(?:方|かた)(?:に|には|へ|へは|のみ|だけ)")
# What opens a condition, one literal-led pattern each (scanned fast); "even if" concedes.
_CONDITIONS = tuple(re.compile(p) for p in (
    r"if\b(?<!\wif)(?<!even if)", r"unless\b", r"in case\b", r"in the event\b", r"whether\b",
    r"should (?:you|your|we|the|this|it)\b", r"when (?:you|your \w+) (?:are|is|get|'re)\b",
    "場合", "の際",
    # Japanese conditional forms: 過ぎますと / 過ぎると (if it passes), なければ, 〜たら.
    # Not 申しますと / 申し上げますと ("to put it plainly"), which introduce the decision.
    r"(?<!申し)(?<!申し上げ)(?:ますと|ぎると)、?", "なければ", "(?:れ|け)ば、", "たら、",
))
# Where a clause ends: a sentence, a line, or a "but" (…, but if a role opens up …).
_CLAUSE_END = re.compile(
    r"[.!?;。\n] ?|, (?:but|and|although|though|however|while|yet) "
    r"|、(?:(?<=が、)|(?<=けれど、)|(?<=けれども、)|(?<=ものの、))"
)
# The positive rules, and which of them each cue can wake: the cues of subject rules are
# looked for in the subject, the others in the subject and body at once.  ASCII cues
# are looked for in the ASCII letters of a text only (a Japanese mail's few Latin
# words), as bytes: an ASCII substring of the text is a substring of those.
_POSITIVE = tuple(i for i, rule in enumerate(RULES) if rule.weight > 0)
_WAKES: dict[str, dict[str, list[int]]] = {"subject": {}, "any": {}, "negative": {}}
for _i, _rule in enumerate(RULES):
    for _cue in _rule.cues:
        # The overrides and noise rules run only once the phrases reach THRESHOLD (a
        # rejection in most mail that gets that far): their cues are looked for then, in
        # the subject and body at once (a subject rule's text is part of that).
        _part = ("negative" if _rule.weight < 0
                 else "subject" if _rule.where == "subject" else "any")
        _WAKES[_part].setdefault(canon(_cue), []).append(_i)
_CUES = {
    part: (tuple((cue, cue.encode()) for cue in wakes if cue.isascii()),
           tuple(cue for cue in wakes if not cue.isascii()))
    for part, wakes in _WAKES.items()
}
_ALSO = {i: tuple(canon(cue) for cue in RULES[i].also) for i in _POSITIVE if RULES[i].also}

def _cues_in(text: str, part: str) -> list[str]:
    """The cues of the ``part`` rules ("subject", "any" or "negative") found in ``text``."""
    ascii_cues, other_cues = _CUES[part]
    if text.isascii():
        return [cue for cue, _ in ascii_cues if cue in text]
    latin = text.encode("ascii", "ignore")
    return [cue for cue, raw in ascii_cues if raw in latin] + [
        cue for cue in other_cues if cue in text]


def _woken(subject: str, body: str, parts: tuple[str, ...] = ("subject", "any")) -> set[int]:
    """The rules of ``parts`` (the positive ones by default; "negative": the overrides and
    noise rules) that can match: a cue of theirs is where they look (and one of their
    ``also`` cues is somewhere)."""
    either = subject + "\n" + body
    texts = {"subject": subject, "any": either, "negative": either}
    woken: set[int] = set()
    for part in parts:
        for cue in _cues_in(texts[part], part):
            woken.update(_WAKES[part][cue])
    for i in woken & _ALSO.keys():
        if not any(cue in either for cue in _ALSO[i]):
            woken.discard(i)
    return woken


def _matches(parts: tuple[re.Pattern[str], ...], text: str) -> bool:
    return any(part.search(text) for part in parts)


def score(subject: str, body: str, *, gate: bool = True) -> Verdict:
    """Score normalised own words (``detect_text.own_words``) against ``RULES``.

    With ``gate``, a rule runs only when one of its cues is present; without it, every
    rule runs.  Both give the same verdict (the tests compare them).

    When the positive phrases found cannot reach ``THRESHOLD``, nothing more is done:
    the verdict is "not a rejection" and the score is what the phrases add up to.
    Otherwise the phrases are looked for again outside the conditional clauses, and the
    overrides and noise rules (which read the whole text) are added.
    """
    where = {"subject": subject, "body": body, "any": subject + "\n" + body}
    positive = _woken(subject, body) if gate else set(_POSITIVE)
    found = {i for i in positive if _matches(_COMPILED[i][1], where[RULES[i].where])}
    total = sum(RULES[i].weight for i in found)
    if total >= THRESHOLD:
        # A phrase inside a condition ("if you are not selected, …", "…場合は") decides
        # nothing: the positive rules count only outside the conditional clauses.
        plain_subject, plain_body = _unconditional(subject), _unconditional(body)
        if plain_subject is not subject or plain_body is not body:  # a clause went
            plain = {"subject": plain_subject, "body": plain_body,
                     "any": plain_subject + "\n" + plain_body}
            found = {i for i in found if _matches(_COMPILED[i][1], plain[RULES[i].where])}
            total = sum(RULES[i].weight for i in found)
    if not found:
        return Verdict(False, 0.0, ("no phrase of a rejection",))
    if total < THRESHOLD:
        return Verdict(False, total, tuple(_label(RULES[i]) for i in sorted(found)))
    reasons = []
    others_out: dict[str, str] = {}
    cancelled = {label for i in found for label in RULES[i].cancels}
    negative = _woken(subject, body, ("negative",)) if gate else None
    for i, (rule, parts) in enumerate(_COMPILED):
        if i in found:
            reasons.append(_label(rule))
            continue
        if rule.label in cancelled or (negative is not None and i not in negative):
            continue
        text = where[rule.where]
        if rule.not_others:
            text = others_out.setdefault(rule.where, _without_others(text))
        if rule.weight < 0 and _matches(parts, text):
            total += rule.weight
            reasons.append(_label(rule))
    in_context = bool(_CONTEXT.search(where["any"]))
    if not in_context:
        reasons.append("no recruiting context")
    verdict = Verdict(total >= THRESHOLD and in_context, total, tuple(reasons))
    log.debug("rejection=%s score=%.1f reasons=%s", verdict.is_rejection, total, reasons)
    return verdict


def _unconditional(text: str) -> str:
    """The text less its conditional clauses.

    A clause runs to the end of a sentence or to a "but" ("…, but if a role opens up we
    will contact you" keeps its first half); one that says if, unless, in case, whether,
    場合 or の際 is a condition, and its consequence with it ("if we do not hear from
    you, we will not progress your application").  "Even if" concedes, and stays.
    """
    marks = [m.start() for pattern in _CONDITIONS for m in pattern.finditer(text)]
    if not marks:
        return text
    ends = [0, *(m.end() for m in _CLAUSE_END.finditer(text)), len(text)]
    dropped = sorted({bisect.bisect_right(ends, mark) - 1 for mark in marks})
    kept, pos = [], 0
    for clause in dropped:
        kept.append(text[pos:ends[clause]])
        pos = ends[clause + 1]
    kept.append(text[pos:])
    return " ".join(kept)


def _without_others(text: str) -> str:
    """The text less its sentences about other people (…方には, …方のみ)."""
    if "方" not in text and "かた" not in text:
        return text
    return "。".join(s for s in text.split("。") if not _OTHERS.search(s))


def _label(rule: Rule) -> str:
    return rule.label or rule.pattern


def classify(subject: str, text: str) -> Verdict:
    """Score a mail's subject and text against ``RULES``; see the module docstring."""
    return score(*own_words(subject, text))

