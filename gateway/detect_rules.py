"""The classifier's rules as data (SPEC 5, rule 3): the phrases of a rejection
(``PHRASES``), the weights and ``CONTEXT``; the overrides and noise rules that say "not
a rejection" are in ``gateway.detect_overrides``.

``gateway.detect`` joins them (``RULES``), compiles and applies them; its docstring says
how they are read and weighed, and docs/classifier.md what they score on the labelled
set.  Patterns are written over normalised text (lower case, hiragana, no spaces
between Japanese characters); English ones use the building blocks of ``_PARTS`` as ``<NAME>``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    pattern: str  # a regex over normalised text: lower case, hiragana, no CJK spaces
    weight: float
    where: str = "any"  # "subject", "body" or "any"
    label: str = ""  # what ``Verdict.reasons`` shows; the pattern when empty
    # Substrings of the normalised text, at least one of which is in every match
    # (tests/test_detect.py proves it from the pattern).  Text without any of them
    # cannot match, so the rule is not run.  Every rule has them.
    cues: tuple[str, ...] = ()
    # Optional second cues, one of which is also in every match: a rule with a common
    # first cue ("other") runs only when one of these is there too ("candidate").
    also: tuple[str, ...] = ()
    # Overrides only: looked for in the sentences that are not about other people, so
    # that "通過された方には面接のご案内を" in a mail to those who did not pass is no override.
    not_others: bool = False
    # Positive rules only: the overrides (by label) that this phrase explains away.
    # "次の選考へのご案内はできかねます" says 次の選考 and means the opposite.
    cancels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    is_rejection: bool
    score: float
    reasons: tuple[str, ...]


STRONG, MEDIUM, WEAK, OVERRIDE, NOISE = 3.0, 1.5, 0.5, -5.0, -3.0

# English building blocks, written into the patterns below as <NAME>.
_PARTS = {
    # What a rejection is about: the application, in its many names.
    "APPL": r"(?:[\w-]+ )?(?:applications?|candidacy|candidature|cv|resume|résumé|profile"
            r"|submission|employment)\b",
    # A negation as a company says it; not "didn't", which tells an old story.
    "NEG": r"(?:not\b|n't(?<!didn't)|unable to|no longer|decided against)",
    # What may stand between the negation and the verb: "not be able to".
    "FILL": r"(?: (?:be|been|to|able to|going to|in a position to|now|currently|therefore"
            r"|ultimately|further|happy to|looking to))*",
    # The applicant or the application, as the object of the verb.
    "OBJ": r"(?:you\b|your <APPL>|it\b|things\b)",
    # Somebody else got it.
    "OTHER": r"(?:an?other|other|a different|an alternative|the other|a more suitable"
             r"|more suitable|stronger|more experienced)(?: [\w-]+){0,2}? (?:candidates?"
             r"|applicants?|finalists?|individuals?|persons?|people|profiles?)\b",
    # Opens a condition: what follows is what happens if.
    "IF": r"(?:if|unless|should|in case|in the event(?: that)?|whether)",
}


def expand(pattern: str) -> str:
    """Expand the <NAME> building blocks (twice: a block may use another)."""
    for _ in range(2):
        for name, part in _PARTS.items():
            pattern = pattern.replace(f"<{name}>", part)
    return pattern


# Japanese: a condition follows within a few characters (…の場合, …かもしれません).
_JA_IF = (r"(?![^。]{0,8}(?:場合|際|かもしれ|可能性|ことも|ことがあ|ことがござ"
          r"|ようでしたら|ようであれば))")

PHRASES: tuple[Rule, ...] = (
    # ---- Japanese decisions (strong)
    Rule("誠に(?:残念|遺憾|不本意)(?:ながら|では(?:ございますが|ありますが)|ですが|なことに)"
         "|誠に心苦しい", STRONG, label="誠に残念ながら", cues=("誠に",)),
    Rule("(?:期待|希望|貴意|意向|要望|お気持ち)(?:に|には)お?(?:添(?:え|い|う|わ)|応え)"
         "(?:かね|兼ね|ない|なかっ|ず|ませ|られ(?:ず|な|ませ)|(?:する|る)?こと(?:が|は)?"
         "(?:でき|出来)(?:ず|ませ|な))" + _JA_IF,
         STRONG, label="ご期待に添えない", cues=("添", "応え")),
    Rule("(?:見送(?:らせ|り(?:と|に|を|させ|いた|ま)|る(?:こと|結果|判断|運び)|った)"
         "|(?:採用|今回|ご縁|選考)(?:は|を|に)?見(?:送|合わせ)"
         "|見合わせ(?:る(?:こと|結果)|させ|と))" + _JA_IF,
         STRONG, label="見送り", cues=("見送", "見合")),
    Rule("縁(?:が|は|に|を)?(?:なかった|無かった|なく|無く|ありませんでした|ございませんでした"
         "|いただけ(?:ず|ませ|な)|結べ(?:ず|ませ|な)|(?:つな|繋)がら(?:ず|なかっ)"
         "|至ら(?:ず|なかっ)|(?:結ぶ|いただく)こと(?:が|は)?(?:でき|出来)(?:ず|ませ|な))",
         STRONG, label="ご縁がなかった", cues=("縁",)),
    Rule("不(?:採用|合格|通過)(?![^。]{0,10}(?:場合|際|かどうか|か否か|にかかわらず"
         "|に関わらず|を問わず|に関係なく|いずれ))", STRONG, label="不採用", cues=("不",)),
    Rule("(?:書類|選考|面接|結果)(?:選考)?(?:は|が|も)? ?ng(?: ?(?:と|で|に|でした|です))",
         STRONG, label="選考はNG", cues=("ng",)),
    Rule("(?:採用|内定|合格|通過|採択|期待|希望|縁|ご案内|お進み|進んで|進む|選考)[^。]{0,15}?"
         "至(?:りませんでした|りません|らず|らない(?:結果|こと|判断|結論)|らなかった)",
         STRONG, label="…には至りませんでした", cues=("至",)),
    Rule("通過(?:すること|いただくこと|させること)?(?:が|は|と|とは|には)?"
         "(?:でき|出来|され|なり|いたし|かない|叶い)?(?:ませんでした|ません|ず|なかった)"
         + _JA_IF, STRONG, label="通過されませんでした", cues=("過",)),
    Rule("(?:別の|他の|ほかの)(?:方|かた|候補者|応募者|人|者)様?(?:で|に|を|の(?:採用|方))"
         "[^。]{0,6}?(?:決定|決まり|決まっ|採用|内定|お願い|進め)" + _JA_IF,
         STRONG, label="別の方で決定", cues=("別", "他", "ほかの")),
    Rule("(?:選考(?:は|を|も)(?:ここで|こちらで|これにて|今回で|この段階で|以上で)"
         "|(?:様|さん|貴殿|あなた)の選考(?:は|を|も)[^。]{0,10}?)"
         "終了(?:と|させ|いた|になり|となり)" + _JA_IF,
         STRONG, label="選考はここで終了", cues=("終",)),
    Rule("(?:ご一緒|一緒に働|お迎え|ご入社いただ|採用|お力をお借り|ご活躍いただ)"
         "(?:する|いただく|く)?こと(?:が|は)(?:難し|困難|叶わ|かなわ|できな|でき(?:ず|ませ))"
         + _JA_IF, STRONG, label="ご一緒することが難しい", cues=("難", "叶", "かな", "でき")),
    Rule("お断り(?:させていただ(?:き|く)(?!ております)|いたし(?:ます|まし)|する(?:こと|結果)"
         "|申し上げ)", STRONG, label="お断りさせていただきます", cues=("断",)),
    Rule("残念な(?:結果|ご連絡|ご報告|お知らせ)(?:と|に)(?:なり|なって|なっ|いたし)"
         "|残念な(?:結果|お知らせ)を(?:お伝え|ご報告|ご連絡)",
         STRONG, label="残念な結果となりました", cues=("念",)),
    Rule("(?:内々?定|採用|合格|通過)の(?:ご連絡|ご通知|お知らせ|ご案内)を(?:差し上げ|お伝え|お送り)"
         "(?:ること(?:が|は)(?:でき(?:ず|ませ|な)|叶わ|かなわ|難し)|(?:られ|でき)(?:ず|ませ|な))",
         STRONG, label="内定のご連絡を差し上げられず", cues=("でき", "叶", "かなわ", "難", "られ"),
         cancels=("内定", "合格", "次の選考/選考通過")),
    Rule("採用(?:を|は|について(?:は)?)?(?:控えさせ|差し控え|控える(?:こと|運び)|控えます)", STRONG,
         label="採用を控えさせて", cues=("控",)),
    Rule("内定(?:の|を)?(?:取り消|取消)", STRONG, label="内定取り消し", cues=("消",)),
    Rule("(?:選考|面接|すてっぷ|段階|ふぇーず)(?:へ|に|への|の|には|へは|を|は)?"
         "(?:お?進(?:み|んで|む|める|まれ)|ご案内|ご参加|ご招待)[^。]{0,15}?"
         "(?:できませ|できず|できな|出来|かね|叶|かない|かなわ|難し|困難|見送|控え|至ら|至り)"
         "(?![^。]{0,6}(?:場合|際|ようでしたら|ようであれば|方|かた))",
         STRONG, label="次の選考…できかねます (negated)",
         cues=("でき", "出来", "かね", "叶", "かな", "難", "見送", "控", "至"),
         cancels=("次の選考/選考通過", "面接日程/面接のご案内")),
    # ---- Japanese lead-ins, the closing prayer, documents, a full position (medium)
    Rule("残念(?:ながら|では(?:ございますが|ありますが)|ですが|な(?:結果|お知らせ|ご報告"
         "|ご連絡))", MEDIUM, label="残念ながら", cues=("念",)),
    Rule("(?:慎重|厳正な?る?|総合的)[^。]{0,4}?(?:選考|検討|審査|審議|判断)"
         "|検討(?:を重ねた|いたしました|しました|の)結果", MEDIUM, label="慎重/厳正なる選考",
         cues=("慎", "厳", "総", "討")),
    Rule("(?:ご活躍|ご健勝|ご多幸|ご健闘|ご成功)[^。]{0,15}?(?:お祈り|祈念|祈って)", 2.0,
         label="ご活躍をお祈り", cues=("祈",)),
    Rule("お祈り申し上げ", 1.0, cues=("祈",)),
    Rule("(?:応募書類|履歴書|職務経歴書|個人情報|(?:ご提出|提出)(?:いただいた)?書類"
         "|えんとりーしーと)[^。]{0,30}?(?:破棄|廃棄|返却|返送)", 2.0,
         label="応募書類を破棄/返却", cues=("棄", "却", "返送")),
    Rule("(?:採用予定|募集|予定|採用)人数に達し|(?:募集|採用|ぽじしょん)(?:枠|人員)?(?:が|は)?"
         "充足|(?:採用|募集)(?:枠|人数)(?:が|は)?(?:埋まり|埋まっ)", 2.0,
         label="募集枠が充足", cues=("達", "充", "埋")),
    Rule("選考結果|選考のご?結果|応募結果|選考について|結果の?(?:ご連絡|お知らせ|ご?通知)"
         "|ご応募の件", 1.0, "subject", "選考結果 (subject)",
         cues=("結果", "選考について", "ご応募の件")),
    Rule("ご了承(?:くだ|下|いただ|のほど|願)", WEAK, label="ご了承ください", cues=("了",)),
    Rule("略儀ながら", WEAK, cues=("儀",)),
    # ---- English decisions (strong)
    # "We regret to inform you" opens bad news of any kind (an event cancelled, a date
    # moved): a lead-in, not a decision.  The decision it introduces has a rule of its own.
    Rule(r"regret to (?:inform|advise|let you know|tell you|say)|we regret that\b", MEDIUM,
         label="regret to inform", cues=("regret",)),
    # A negation before a verb of progression, with the applicant or the application as
    # its object: "we will not be progressing your application", "unable to take you
    # forward", "decided not to extend an offer".
    Rule(expand(r"<NEG><FILL> (?:"
            r"proceed(?:ing)?(?: any)?(?: further)?(?: with <OBJ>| further\b)"
            r"|(?:progress|progressing|advance|advancing)(?: with)? <OBJ>"
            r"|(?:move|moving) (?:you |your <APPL> )?(?:forward|ahead|on)(?: with <OBJ>"
            r"|(?=[.,;:!?)]|$| at (?:this|the|present)| on this| for (?:this|the|now)"
            r"| this time| right now| any further| further| to (?:the|an?) ))"
            r"|(?:take|taking) (?:you|your <APPL>|it|things|this|matters) (?:any )?"
            r"(?:forward|further)"
            r"|(?:pursue|pursuing) (?:you\b|your <APPL>)"
            r"|(?:consider|considering) (?:you|your <APPL>)"
            r"(?![^.!?]{0,40}\b(?:until|unless|without|if|once)\b)"
            r"|(?:continue|continuing) (?:with )?(?:you\b|your <APPL>)"
            r"|(?:invite|inviting) you (?:to|for|back)\b"
            r"|(?:offer|offering) you(?: (?:a|an|the|this|that|any))?(?: [\w-]+){0,4}?"
            r" (?:position|role|job|place|post|opportunity|contract|internship|offer"
            r"|employment|interview|spot)\b"
            r"|(?:extend|extending|make|making) (?:you )?(?:an?|the) (?:job |formal |final )?"
            r"offer"
            r"|(?:select|selecting|shortlist|shortlisting|hire|hiring|appoint|appointing"
            r"|recommend|recommending) you\b"
            r"|(?:put|putting) (?:you|your <APPL>) (?:forward|through)\b)"),
         STRONG, label="not to proceed with your application",
         cues=("not", "n't", "unable", "no longer", "against")),
    # The same, with the applicant or the application as the subject: "your application
    # will not be progressed", "you have not been shortlisted", "none of them".
    Rule(expand(r"(?:you|your <APPL>|yours)(?: (?:for|to|with|at|in)(?: [\w&'()/-]+){1,5}?)?"
            r"(?: (?:will|would|can|could|has|have|had|is|are|was|were|did|does|shall|may)"
            r"(?: not\b|n't)|(?: won't| can't| cannot| not| no longer))"
            r"(?: (?:be|been|able to|now))* (?:progress(?:ed|ing)?|proceed(?:ed|ing)?"
            r"|advanc(?:e|ed|ing)|(?:taken|moved|put|gone|going|go|move|moving|taking|went) "
            r"(?:forward|further|through|ahead|on)|considered (?:any )?further|shortlisted"
            r"|selected|chosen|invited|passed|made it)\b"
            r"(?![^.!?]{0,40}\b(?:until|unless|without)\b)"
            r"|none of (?:them|these|those|the|your)(?: [\w-]+)?(?: (?:will|would|has|have"
            r"|were|was|are|is|could|can))?(?: be| been)* (?:progressed|taken forward"
            r"|shortlisted|selected|successful|proceed\w*|going forward)"),
         STRONG, label="your application will not progress",
         cues=("not", "n't", "no longer", "none of")),
    # Outcomes: not selected, unsuccessful, filled, somebody else, another direction.
    Rule(r"(?:not\b|n't)(?: been| be)? (?:selected|successful|shortlisted|chosen|among the"
         r" (?:finalists|successful|shortlisted|selected|candidates))\b"
         r"(?! (?:a|an|the|any|your|yet)\b| in (?:reaching|contacting|getting))",
         STRONG, label="not selected", cues=("not", "n't")),
    Rule(expand(r"(?:you|your <APPL>|yours)(?: (?:for|of|to|with|in|at|on)(?: [\w&'()/-]+){1,5}?)?"
            r"(?: (?:has|have|had|is|are|was|were|'ve|'s))?(?: been| proved| proven)?"
            r"(?: (?:unfortunately|sadly|regrettably|ultimately))? (?:unsuccessful"
            r"|not successful)|unsuccessful (?:on this occasion|this time|at this (?:time"
            r"|stage))"),
         STRONG, label="unsuccessful", cues=("unsuccessful", "not")),
    Rule(r"(?:role|position|vacancy|job|post|opening|place)(?: (?:that |which )?you"
         r" (?:applied|interviewed) for)?(?:'s| has| have| had| is| was)?"
         r"(?: now| already| since)? (?:been |now )?filled\b"
         r"|(?:we|they|client|company)(?:'ve| have| had)?(?: now| already)? filled (?:the|this"
         r"|that|our|their) (?:role|position|vacancy|job|post|opening)"
         r"|fill(?:ed|ing)? (?:it|the (?:role|position|vacancy|post|job|opening)) internally"
         r"|decided to fill the (?:role|position|vacancy|post)"
         r"|(?:it|that)(?:'s| has) (?:now |already )?been filled",
         STRONG, label="the role has been filled", cues=("fill",)),
    Rule(r"(?:not|no longer) hiring for (?:that|this|the) (?:role|position|job|post|vacancy)",
         STRONG, label="no longer hiring for the role", cues=("not", "no longer")),
    Rule(expand(r"(?:pursue|pursuing|proceed(?:ing)?(?: forward)? with|(?:move|moving|moved)"
            r" (?:forward|ahead|on) with|continu(?:e|ing) with|go(?:ing)? (?:forward )?with"
            r"|went with|gone with|decided on|progress(?:ing)? with|an offer to|hire[ds]?|hiring"
            r"|chose|choose|chosen|select(?:ed)?|appoint(?:ed)?|recruited|offer(?:ed|ing)?"
            r"(?: it| the(?: [\w-]+){1,4})? to) <OTHER>"
            r"|(?:went|gone|go|going|chose|chosen|hired|selected|appointed|decided on)"
            r"(?: with)? someone else|(?:hired|appointed) someone\b"
            r"|offer(?:ed|ing)? (?:it|the(?: [\w-]+){1,4}) to (?:someone|somebody|a candidate"
            r"|an applicant)\b"
            r"|(?:offer(?:ed|ing)?|give|given|gave|gone|went|go(?:ing)?) (?:it |the(?: [\w-]+)"
            r"{0,3} (?:role|position|job|post|place) )?elsewhere\b"
            r"|(?:(?:mov(?:e|ing)|go(?:ing)?|proceed(?:ing)?|continu(?:e|ing)|progress(?:ing)?)"
            r" (?:forward |ahead |on )?with|pursu(?:e|ing)) (?:the |some )?(?:candidates"
            r"|applicants|profiles) (?:whose|who|with)\b"),
         STRONG, label="went with another candidate",
         cues=("other", "different", "alternative", "suitable", "stronger", "experienced",
               "someone", "somebody", " to a", "who", "with", "elsewhere"),
         also=("candidat", "applicant", "finalist", "individual", "person", "people", "profile",
               "someone", "somebody", "elsewhere")),
    Rule(r"(?:whose|other (?:candidates|applicants)'?s?|another (?:candidate|applicant)'?s?)"
         r"(?: [\w'-]+){0,3}? (?:(?:more closely|closer|better) (?:match|align|suit|fit|meet)"
         r"|(?:match|align|fit|suit|line[sd]? up|meet)\w*(?: [\w-]+)? (?:more closely|better)"
         r"|(?:closer|more closely aligned|more aligned|better suited|better aligned"
         r"|a (?:closer|better|stronger) (?:match|fit))\b)",
         STRONG, label="others match more closely",
         cues=("clos", "better", "more aligned", "stronger")),
    Rule(r"(?:go|going|gone|went|move|moving|moved|take|taking|took|head|heading|decided on)"
         r"(?: in| with)? (?:a different|another|an alternative|a new) direction",
         STRONG, label="a different direction", cues=("direction",)),
    Rule(r"(?:not\b|n't)(?: quite)?(?: be)? (?:the right |a (?:good |strong |great )?"
         r"|the best )(?:fit|match)(?: for (?:this|the) (?:role|position|team)| at (?:this|the)"
         r" (?:time|moment|stage)| right now| for us)",
         STRONG, label="not the right fit", cues=(" fit", " match")),
    Rule(expand(r"(?:decided|decide|chosen|have|had|need|going|'re going|will have|'ll have) to"
            r" pass on (?:you\b|your <APPL>)(?! (?:on )?to\b| along\b)"),
         STRONG, label="pass on your application", cues=("pass on",)),
    Rule(expand(r"(?:clos(?:e|ed|ing)|archiv(?:e|ed|ing)|reject(?:ed|ing)?|declin(?:e|ed|ing))"
            r"(?: out)? your <APPL>(?![^.!?]{0,40}\b(?:if|unless|until)\b)"
            r"|your <APPL>(?: for [\w&' ()/-]{1,40}?)? (?:has been|was|is|will be|is now"
            r"|has now been|have been)(?: now)? (?:closed|archived|rejected|declined"
            r"|withdrawn from consideration)\b(?![^.!?]{0,40}\b(?:if|unless|until)\b)"
            r"|application[^.]{0,60}?(?:changed|updated|moved|set) to:? \"?(?:declined"
            r"|rejected|unsuccessful|not selected|not progressing|closed|archived)"),
         STRONG, label="your application has been closed",
         cues=("clos", "archiv", "reject", "declin", "unsuccessful", "not", "withdraw")),
    # An offer taken back: it says "offer" (an override) and "I must withdraw".
    Rule(r"(?:withdraw|withdrawing|rescind|rescinding)(?: our| the| your| this)(?: [\w-]+)"
         r"{0,2}? offer\b(?![^.!?]{0,60}\b(?:if|unless|should|in the event)\b)",
         STRONG, label="the offer is withdrawn", cues=("withdraw", "rescind"),
         cancels=("pleased to offer", "the applicant's own decision")),
    Rule(expand(r"<NEG><FILL> (?:progress|advanc|invit|select|shortlist|tak|mov|put)\w*"
            r"(?: (?:you|your <APPL>|it))?(?: (?:forward|further|through|on))?"
            r" (?:to|for|into) (?:the |an? |your )?(?:next (?:round|stage|step)|interview"
            r"|final|onsite|on-site|assessment|second|first|third)"
            r"|(?:you|your <APPL>)(?: (?:have|has|had|did|will|would))?(?: not\b|n't)"
            r"(?: been)? (?:progress|proceed|advanc|mov|go|gone|made it|make it|through)\w*"
            r"(?: forward| on| through)? (?:to|into) (?:the |an? )?(?:next|final|second|third"
            r"|interview|onsite|assessment)"),
         STRONG, label="not … next round (negated)",
         cues=("not", "n't", "unable", "no longer", "against"),
         cancels=("next round / schedule an interview",)),
    # ---- English (medium and weak)
    Rule(r"after (?:careful|thorough|much|a great deal of|lengthy|serious|extensive|further"
         r"|due) (?:consideration|review|deliberation|reflection|thought|discussion)"
         r"|(?:after|having) (?:carefully|thoroughly) (?:considered|considering|reviewed"
         r"|reviewing)|having (?:considered|reviewed) (?:your|all|the|it)\b",
         MEDIUM, label="after careful consideration", cues=("after ", "having ")),
    Rule(r"unfortunately\b|regrettably\b|regretfully\b|(?:i'm|i am|we're|we are)"
         r"(?: very| so| truly| really)? (?:sorry to (?:say|tell you|let you know"
         r"|inform you|share|report)|afraid\b)",
         1.0, label="unfortunately / sorry to say",
         cues=("unfortunately", "regret", "sorry", "afraid")),
    Rule(r"wish(?:ing)? you (?:the (?:very )?best|every success|luck|all the best|success|well"
         r"|the best of luck)[^.!?]{0,40}?(?:search|future|endeavo|career|hunt|next)"
         r"|(?:best of|good) luck (?:with|in|for) (?:your|the) (?:job )?(?:search|hunt|future"
         r"|career)|(?:every success|all the best|the best) (?:in|with|for) your (?:future"
         r"|job search|search|career)", MEDIUM, label="wish you the best",
         cues=("wish", "luck", "success", "the best")),
    Rule(r"keep your (?:resume|cv|details|information|application|profile) on file"
         r"|(?:cv|resume|details|profile) on file|encourage you to (?:re-?)?apply"
         r"|(?:apply|applying) (?:again|for (?:other|future|another) (?:roles?|positions?"
         r"|vacancies|openings|opportunities))|(?:welcome|free) to (?:re-?)?apply"
         r"|keep an eye on our (?:careers|jobs|vacancies|website)"
         r"|future (?:opportunities|vacancies|openings|roles|positions) (?:with|at) us",
         MEDIUM, label="keep your resume on file / apply again",
         cues=("on file", "apply", "keep an eye", "future")),
    Rule("thank(?:s| you) for (?:your interest|applying)", WEAK,
         label="thank you for your interest", cues=("interest", "apply")),
    Rule(r"update on your application|your application (?:to|for|with|at)|application"
         r" (?:status|update|outcome)|outcome\b|(?:our|the|final) decision", 1.0,
         where="subject", label="application update (subject)",
         cues=("application", "outcome", "decision")),
)


# A rejection is about an application: without one of these words, nothing is a rejection
# (a supplier's proposal turned down with 誠に残念ながら…見送らせて is not).
CONTEXT = (
    "応募|選考|採用|面接|面談|エントリー|求人|内定|履歴書|職務経歴書|派遣|就業|職種|就職|転職|ポジション|"
    r"appl(y|ied|ying|ication)|position|role\b|candida|interview|recruit|hiring|\bjob"
    r"|employment|vacanc|\bcv\b|shortlist|internship|\bhired?\b|onsite|on-site|take-home"
    r"|assessment (?:centre|center|day)"
)
