"""The admin pages' views: dashboard, forwards, credits (redeem, request a referral), reviews
(approve, reject).

Thin: each view finds its ``Scope`` (which refuses a company the user may not
see), calls the core on the admin's ledger thread, and renders.  The
numbers are ``career_relay.ledger.reports``'s, the very ones ``career-relay report``
prints; the lists are ``career_relay.ledger.records``'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from aiohttp import web

from career_relay.errors import CreditRequestOpen, LedgerConflict
from career_relay.ledger import (
    NOTE_MAX,
    CreditRequest,
    NoCreditAvailable,
    Referrals,
    records,
    reports,
)
from career_relay.settings import Settings
from career_relay.tokens import CompanySigner, company_link
from consent_site import admin_outcomes
from consent_site.admin import ADMIN, Scope, render, scope, see_other, user_of
from consent_site.candidate import SITE

#: SPEC 8's fields as the dashboard names them.
FIELD_LABELS = {
    "rejections": "不採用メール", "offers": "案内リンクの送信",
    "offers_relay": "うちゲートウェイ経由", "offers_api": "うちAPI経由",
    "offers_link": "うち会社リンク経由", "not_injected": "リンクなしで送信",
    "unmarked_rejections": "マーカーなしの不採用判定", "views": "案内ページの閲覧",
    "accepted": "登録に同意", "declined": "登録しない", "withdrawn": "同意の撤回",
    "erased": "データの消去", "forwards_delivered": "紹介会社への提供",
    "qualified_forwards": "有効紹介（カウント対象）", "under_review": "審査待ち",
    "credits_earned": "獲得クレジット", "credits_redeemed": "利用したクレジット",
    "credits_available": "利用可能なクレジット", "progress_to_next_credit": "次のクレジットまで",
    "credit_every": "クレジット1件に必要な有効紹介",
    "credits_requested": "紹介を依頼したクレジット", "credits_fulfilled": "紹介を受けたクレジット",
    "recovered_value": "回収した採用コスト（円）",
    "outcomes_registered": "紹介会社に登録（5人以上の組のみ）",
    "outcomes_interviewing": "選考中（5人以上の組のみ）",
    "outcomes_placed": "就職（5人以上の組のみ）",
    "outcomes_not_placed": "不成立（5人以上の組のみ）",
}
#: A free referral request's states (SPEC 11).
REQUEST_STATES = {"requested": "依頼中", "fulfilled": "紹介済み", "cancelled": "取り消し"}
#: The funnel, rejection to credit.
FUNNEL = ("rejections", "offers", "views", "accepted", "qualified_forwards", "credits_earned")
ITEM_LABELS = {"name": "氏名", "email": "メールアドレス", "phone": "電話番号",
               "desired_job": "希望職種", "desired_location": "希望勤務地", "note": "自由記入欄",
               "application": "応募情報"}
KIND_LABELS = {"consent": "登録（同意）", "withdrawal": "撤回の通知", "erasure": "消去の通知"}
STATUS_LABELS = {"delivered": "提供済み", "cancelled": "取り消し", "held": "審査待ち",
                 "pending": "送信待ち", "to_pull": "取得待ち",
                 "served": "取得済み（受領確認待ち）"}
REASON_LABELS = {"review_window": "送信直後の操作", "scanner": "スキャナーらしい利用者",
                 "link": "会社リンク経由（不採用の確認なし）",
                 "api-network": "API依頼元と同じネットワーク"}
LIST_LIMIT = 500  # rows on a page; the CSV has them all


def _common(s: Scope) -> dict[str, Any]:
    return {"scope": s, "q": s.query(), "item_labels": ITEM_LABELS}


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "–"


async def dashboard(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    s = scope(request)
    r = await admin.run(admin.report, s.company.id, s.period)
    funnel = [(f, FIELD_LABELS[f], r[f], _rate(r[f], r["offers"]) if f != "rejections" else "")
              for f in FUNNEL]
    return render(request, "dashboard.html", page="dashboard", r=reports.flat(r),
                  labels=FIELD_LABELS, funnel=funnel, view_rate=_rate(r["views"], r["offers"]),
                  opt_in_rate=_rate(r["accepted"], r["offers"]), fields=reports.COLUMNS[3:],
                  company_link=_company_link(admin.settings, s.company.id),
                  outcome_tables=admin_outcomes.TABLES, outcome_rows=admin_outcomes.table,
                  suppressed=admin_outcomes.SUPPRESSED, **_common(s))


def _company_link(settings: Settings, company: str) -> str | None:
    """The company's one fixed link (SPEC 10), as ``career-relay company-link`` prints it."""
    try:
        token = CompanySigner(settings.secrets.signing_keys).token(company)
    except ValueError:  # an id no token can carry (``tokens.COMPANY_ID``)
        return None
    return company_link(settings.site.public_url, token)


def shown(settings: Settings, rows: list[records.ForwardRow]) -> list[records.ForwardRow]:
    """The rows as the pages say them: a pending forward of an agency that pulls waits to be
    pulled (``to_pull``), not sent; it is never failing, since nothing is attempted."""
    pulling = {a.id for a in settings.all_agencies if a.deliver == "pull"}
    return [dataclasses.replace(r, status="to_pull")
            if r.status == "pending" and r.agency in pulling else r for r in rows]


async def forwards(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    s = scope(request)
    rows = shown(admin.settings, await admin.run(records.forwards, admin.ledger,
                                                 s.company.id, s.period, LIST_LIMIT + 1))
    return render(request, "forwards.html", page="forwards", rows=rows[:LIST_LIMIT],
                  more=len(rows) > LIST_LIMIT, kinds=KIND_LABELS, statuses=STATUS_LABELS,
                  **_common(s))


async def credits(request: web.Request, *, error: str | None = None,
                  status: int = 200) -> web.Response:
    admin = request.app[ADMIN]
    s = scope(request, await request.post() if request.method == "POST" else None)
    balance = await admin.run(admin.report, s.company.id,
                              reports.period(None, None, dt.datetime.now(dt.UTC).date()))
    rows = await admin.run(admin.book.credits, s.company.id)
    asked = await admin.run(Referrals(admin.ledger).requests, s.company.id)
    by_credit: dict[str, list[CreditRequest]] = {}
    for q in asked:
        by_credit.setdefault(q.credit_id, []).append(q)
    done = ("1件のクレジットを利用しました。" if request.query.get("redeemed") else
            "紹介会社に紹介を依頼しました。" if request.query.get("requested") else None)
    return render(request, "credits.html", page="credits", status=status, rows=rows,
                  balance=balance, error=error, done=done, requests=asked,
                  by_credit=by_credit, states=REQUEST_STATES, note_max=NOTE_MAX, **_common(s))


async def request_referral(request: web.Request) -> web.StreamResponse:
    """A free referral asked of the company's agency (SPEC 11), for the credit chosen."""
    admin = request.app[ADMIN]
    form = await request.post()
    s = scope(request, form)
    credit = str(form.get("credit", "")) or None
    try:
        await admin.run(Referrals(admin.ledger).request, s.company.id, s.company.agency,
                        user_of(request).email, str(form.get("note", "")),
                        company_name=s.company.name, credit=credit)
    except CreditRequestOpen:
        return await credits(request, status=409,
                             error="このクレジットはすでに紹介を依頼中です。何も記録していません。")
    except NoCreditAvailable:
        return await credits(request, status=409, error="未使用のクレジットがありません。"
                                                        "何も記録していません。")
    site = request.config_dict.get(SITE)
    if site is not None:
        site.on_forward()  # the worker tells the agency now, not at its next round
    return see_other(f"/admin/credits?{s.query(requested='1')}")


async def redeem(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    form = await request.post()
    s = scope(request, form)
    note = str(form.get("note", "")).strip()[:200]
    try:
        await admin.run(admin.book.redeem, s.company.id, user_of(request).email, note)
    except NoCreditAvailable:
        return await credits(request, status=409,
                             error="利用できるクレジットがありません。何も記録していません。")
    return see_other(f"/admin/credits?{s.query(redeemed='1')}")


async def reviews(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    s = scope(request)
    rows = await admin.run(records.held, admin.ledger, s.company.id)
    done = {"approve": "承認しました。紹介会社へ送信します。",
            "reject": "却下しました。紹介会社へは送信しません。"}.get(request.query.get("done", ""))
    return render(request, "reviews.html", page="reviews", rows=rows, reasons=REASON_LABELS,
                  done=done, error=None, **_common(s))


async def review(request: web.Request) -> web.StreamResponse:
    """An operator's verdict on a decision held for review (SPEC 8)."""
    admin = request.app[ADMIN]
    user = user_of(request)
    form = await request.post()
    receipt_id = request.match_info["receipt"]
    company = await admin.run(records.receipt_company, admin.ledger, receipt_id)
    if company is None or not user.may_see(company):
        raise web.HTTPNotFound()
    if not user.operator:
        # The company gains a credit from each approval: the operator decides.
        raise web.HTTPForbidden()
    verdict = form.get("verdict")
    if verdict not in ("approve", "reject"):
        raise web.HTTPBadRequest()
    receipt = await admin.run(admin.store.receipt, receipt_id)
    if receipt is None or receipt.review is None:
        raise web.HTTPNotFound()
    s = scope(request, {"company": company, "since": form.get("since", ""),
                        "until": form.get("until", "")})
    try:
        await admin.run(admin.store.review, receipt_id, verdict == "approve", user.email)
    except LedgerConflict:
        raise web.HTTPConflict() from None
    site = request.config_dict.get(SITE)
    if site is not None and verdict == "approve":
        site.on_forward()  # the forwarding worker sends it now, not at its next round
    return see_other(f"/admin/reviews?{s.query(done=str(verdict))}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", dashboard)
    app.router.add_get("/forwards", forwards)
    app.router.add_get("/credits", credits)
    app.router.add_post("/credits/redeem", redeem)
    app.router.add_post("/credits/request", request_referral)
    app.router.add_get("/reviews", reviews)
    app.router.add_post("/reviews/{receipt}", review)
