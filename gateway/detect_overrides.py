"""The classifier's overrides and noise rules as data (SPEC 5, rule 3): what says a
mail that reads like a rejection is not one, with negative weights.

Overrides (-5): the next round, an interview date, an offer, still under consideration,
a conditional ("if you are not selected"), the applicant's own decision, a business
proposal declined.  Noise (-3 and less): newsletters, talk about rejection mail,
templates, auto-replies, full events, colleagues' greetings, internal memos and
deliberation, a candidate's own mail.  They run only once the phrases of
``gateway.detect_rules`` reach the threshold, and only where one of their cues is.
"""

from __future__ import annotations

from gateway.detect_rules import NOISE, OVERRIDE, Rule, expand

OVERRIDES: tuple[Rule, ...] = (
    Rule("次(?:の|回の?)選考(?:に|へ|の)|通過(?<!不通過)(?:となりました|されました)"
         "|選考(?:を|の)?通過(?![^。]{0,8}(?:ません|ず|なかった|ない|でき))",
         OVERRIDE, label="次の選考/選考通過", not_others=True,
         cues=("次の選考", "次回選考", "次回の選考", "通過")),
    Rule("次面接(?:へ|に)(?:お?進|ご案内)|次面接の(?:ご案内|日程|実施)|面接の?日程|面接のご案内"
         "|日程の?ご?調整|面接を(?:実施|設定)(?:したく|させて|いたします)"
         "|ご来社(?:くだ|下|いただきたく)",
         OVERRIDE, label="面接日程/面接のご案内", not_others=True,
         cues=("面接", "日程", "ご来社")),
    Rule("内(?:々)?定(?![^。]{0,8}(?:至|見送|ません|ず|なかった|取り?消|をお出し|を出す))",
         OVERRIDE, label="内定", not_others=True, cues=("内定", "内々定")),
    Rule("合格(?<!不合格)(?![^。]{0,8}(?:ません|ず|なかった|ない|至))",
         OVERRIDE, label="合格", not_others=True, cues=("合格",)),
    Rule(r"next (?:round|stage|step)|schedule (?:an|your|a) (?:interview|call|time)"
         r"|interview invitation|invite you (?:to|for) (?:an? )?(?:interview|onsite|call"
         r"|conversation|meet)|(?:would|'d) like to invite you\b"
         r"|shortlisted for (?:an? )?interview|you(?:'ve| have| are)? been (?:selected"
         r"|shortlisted|chosen|invited)\b|you are one of (?:them|the|those)\b",
         OVERRIDE, label="next round / schedule an interview",
         cues=("next ", "schedule", "interview", "invite you", "shortlisted", "been", "one of")),
    Rule(r"(?:pleased|delighted|happy|excited|thrilled|glad|like|love) to (?:formally )?"
         r"(?:offer you (?:the|a|an|this)(?: [\w-]+){0,4}? (?:position|role|job|post|place"
         r"|internship|contract|opportunity)|extend (?:you )?(?:an|the|this|a) (?:formal "
         r"|conditional )?offer)|offer letter|offer of employment|congratulations"
         r"|(?:pleased|delighted|happy|excited|thrilled|glad) to (?:offer|move forward with you"
         r"|invite|let you know that you|tell you that you|inform you that you"
         r"|confirm that you)", OVERRIDE, label="pleased to offer",
         cues=("offer", "congratulations", " to ")),
    Rule(r"still (?:under consideration|being considered|in the running|in (?:the )?(?:process"
         r"|contention)|active|live|very much)|no decisions? (?:has|have) (?:yet )?been made"
         r"|no decisions? yet|(?:is|'s)n't a no\b|not a no\b", OVERRIDE,
         label="still under consideration", cues=("still ", "no decision", "n't a no", "not a no")),
    # What happens *if* (an acknowledgement explaining the process), not a decision.  The
    # conditional clauses themselves are not scored (``_unconditional``); these are the
    # forms that survive that: assume…, only those shortlisted…, 結果にかかわらず.
    Rule(expand(r"<IF> (?:you|your <APPL>|we)(?: (?:are|is|were|was|have|has|do|does|did|will"
            r"|'re|'ve))?(?: not\b|n't)?(?: be| been| yet)*(?: not)? (?:selected|successful"
            r"|unsuccessful|shortlisted|chosen|progress\w*|invited|moved? forward"
            r"|taken forward|proceed\w*|to move forward)"
            r"|assume (?:that )?(?:you|your <APPL>)[^.!?]{0,40}?(?:not\b|n't|unsuccessful)"
            r"|only (?:the )?(?:successful|shortlisted|selected) (?:candidates|applicants)"
            r"|unsuccessful (?:candidates|applicants) will"
            r"|(?:whatever|regardless of) the (?:outcome|decision)"
            r"|(?:until|once|when) (?:the|this|our) (?:role|position|vacancy|job|post)"
            r" (?:has|is|have)(?: been)? filled")
         + "|(?:不採用|不合格|見送り|ご縁がなかった|選考の?結果)[^。]{0,10}(?:場合|際)"
         "|(?:縁がなかった|不採用|見送り|不合格|残念な結果)[^。]{0,8}(?:とお考え|とご理解"
         "|と(?:ご)?判断(?:くだ|下)|とみなし)"
         "|(?:ご連絡|連絡|お知らせ)(?:が|を)?(?:ない|なかった|差し上げない|いたしません)場合"
         "|(?:不採用|不合格|見送り|お見送り)(?:と(?:なった|なる|させていただいた))?の?"
         "(?:方|かた)(?:に|には|へ|へは|の|は)"
         "|(?:結果|合否|採否)(?:に|の)?(?:かかわらず|関わらず|拘らず|関係なく|問わず|いかん)",
         OVERRIDE, label="conditional: if not selected",
         cues=("if", "unless", "in case", "in the event", "whether", "should", "when", "assume",
               "only ", "unsuccessful", "whatever", "regardless", "filled", "場合", "際", "考え",
               "理解", "判断", "みなし", "方", "かた", "かかわらず", "関わらず", "拘らず",
               "関係なく", "問わず", "いかん")),
    # The applicant's own decision: withdrawing, declining an offer, or its acknowledgement.
    Rule(expand(r" i (?:have |'ve )?(?:decided|chosen) (?:not to|to (?:withdraw|decline|accept"
            r" (?:another|an|a)))| i (?:will not|won't|shall not|cannot|can't|am unable to"
            r"|'m unable to|must|have to|need to|would like to|wish to|am writing to"
            r"|'m writing to)(?: be)? (?:accept|join|withdraw|declin|take up)"
            r"|withdraw(?:ing)? my (?:application|candidacy)"
            r"| i (?:have |'ve )?accepted (?:another|an|a) (?:offer|position|role|job)"
            r"|you(?:'ve| have| are|'re)? (?:withdr[ae]wn?|withdrawing)\b"
            r"|your (?:decision|request|wish) to (?:withdraw|decline|not)"
            r"|withdrawal of your <APPL>|(?:respect|understand|accept) your (?:decision|choice)"
            r"|decline (?:our|the|this|your) (?:kind |generous )?offer"
            r"| i (?:was|am|have been|'ve been|had been)(?: not|n't)? (?:not )?(?:selected"
            r"|successful|unsuccessful|shortlisted|chosen)| i (?:wasn't|haven't been|hadn't been"
            r"|didn't get|did not get)\b")
         + "|辞退(?:させて|いた(?:し|す)|したく|します|の(?:ご連絡|旨|お申し出|ご意向|件)"
         "|された|される|を(?:承|受)|のご意向)|ご辞退|ご決断を尊重",
         OVERRIDE, label="the applicant's own decision",
         cues=(" i ", "withdr", "your decision", "your request", "your wish", "your choice",
               "decline", "辞退", "ご決断を尊重")),
    # Business mail: a supplier's proposal (ご提案の採用 = adopting it), not an application.
    Rule("(?:ご提案|ご提示|お見積|見積|ぷらん|企画|製品|さーびす|しすてむ)(?:内容)?(?:の|を)"
         "(?:採用|導入|ご契約|契約|発注)|他社(?:様|さん)?の(?:ご提案|製品|さーびす|しすてむ)"
         "|(?:ご提案|お見積|ぷらん)(?:は|を)?(?:お断り|見送)"
         "|(?:導入|ご契約|契約|発注|購入|掲載)(?:を|は|に|について(?:は)?)?"
         "(?:見送|お断り|見合わせ|控えさせ)",
         OVERRIDE, label="business: a proposal declined",
         cues=("採用", "導入", "契約", "発注", "他社", "お断り", "見送", "見合わせ", "控えさせ")),
    # ---- Noise: newsletters, job alerts, scouts, auto-replies, internal memos, candidates' mail
    Rule(r"newsletter|digest\b|issue #?\d|this week's|in this issue|read (?:the full article"
         r"|online)|you(?:'re| are) subscribed|subscribed (?:as|to|at)|you subscribed"
         r"|because you (?:subscribed|signed up|created a(?: job)? alert|saved a job|registered"
         r"|joined|opted in)|forward (?:this |it )?to a (?:friend|colleague)|jobs? (?:you may"
         r"|recommended|for you|matching)|new jobs|view (?:this|it) in (?:your )?browser"
         "|配信(?:停止|解除)|メールマガジン|メルマガ|おすすめ求人|新着求人|スカウト",
         NOISE, label="newsletter/marketing",
         cues=("newsletter", "digest", "issue", "this week", "read ", "subscribed", "because you",
               "forward", "job", "view ", "配信", "メールマガジン", "メルマガ", "おすすめ求人",
               "新着求人", "スカウト")),
    Rule("unsubscribe|job alert", -1.0, label="unsubscribe link",
         cues=("unsubscribe", "job alert")),
    Rule(r"rejection[- ](?:e-?mails?|letters?|templates?|messages?|notices?)|お祈りメール"
         "|(?:不採用|お祈り|見送り)(?:通知|メール|連絡)?の(?:文面|文章|テンプレート|ひな形|雛形"
         "|例文)|例文|テンプレート", NOISE, label="talks about rejection mail",
         cues=("rejection", "お祈りメール", "文面", "文章", "テンプレート", "ひな形", "雛形",
               "例文")),
    Rule(r"\{[^{}\n]{1,30}\}|\[(?:first name|last name|name|candidate name|role|job title"
         r"|company)\]|<<[^<>\n]{1,30}>>", NOISE, label="merge fields: a template, not a mail",
         cues=("{", "[", "<<")),
    Rule("自動返信|不在(?:にして|のため)|out of (?:the )?office|automatic reply|auto-?reply"
         "|受け付けました|受付(?:が)?完了|we have received your application", NOISE,
         label="auto-reply/acknowledgement",
         cues=("自動返信", "不在", "out of ", "automatic reply", "auto", "受け付けました", "受付",
               "we have received")),
    Rule(r"満席|定員に達し|キャンセル待ち|fully booked|waiting list|waitlist"
         r"|(?:webinar|\ event\b|seminar|open (?:day|evening)|説明会|せみなー)[^.。]{0,60}?"
         r"(?:cancel|postpone|中止|延期)", NOISE, label="event full/cancelled",
         cues=("満席", "定員に達し", "キャンセル待ち", "fully booked", "waiting list", "waitlist",
               "cancel", "postpone", "中止", "延期")),
    Rule("お疲れ(?:様|さま)です", -1.0, label="colleague's greeting (お疲れ様です)",
         cues=("お疲れ",)),
    Rule(r"社外秘|社内(?:限り|のみ)|【社内】|各位|internal only|fyi\b|hi team"
         r"|(?:send|sending) (?:the |a |him |her |them )?(?:regret|rejection|decline|turndown)"
         r"|no hire\b|scorecards?\b|let's not\b|(?:him|her) the (?:decline|rejection|regret"
         r"|news)|(?:candidates|applicants) (?:have|has) been (?:notified|informed|told)"
         r"|(?:notify|inform|tell|let) the (?:other )?(?:candidates|applicants)\b",
         NOISE, label="internal memo",
         cues=("社外秘", "社内", "各位", "internal only", "fyi", "hi team", "send", "no hire",
               "scorecard", "let's not", "him the", "her the", "candidates", "applicants")),
    # Deciding, not telling: "we are leaning towards 見送り", "if 不採用 is fine with you".
    Rule("(?:見送る|見送り|不採用|お見送り)(?:の|とする|にする)?方向"
         "|(?:見送り|不採用|お見送り)(?:で|と|に)?(?:問題なければ|よろしければ|よければ"
         "|いかがでしょう|よいか|良いか|よろしいでしょうか)"
         "|(?:不採用|見送り|お見送り|お断り)の(?:ご連絡|連絡|通知)を(?:差し上げる|送る|出す"
         "|お送りする|入れる)予定|候補者(?:の|である)[^。]{0,8}?(?:様|さん)",
         NOISE, label="internal deliberation",
         cues=("方向", "問題なければ", "よろしければ", "よければ", "いかがでしょう", "よいか",
               "良いか", "よろしいでしょうか", "予定", "候補者")),
    Rule("(?:御社|貴社)[^。]{0,15}(?:ご発展|ご繁栄)", NOISE, label="candidate's mail (逆お祈り)",
         cues=("ご発展", "ご繁栄")),
)
