"""The demo's scenarios: every branch of the three shipped processes, with the demo org's people.

Starters: suxiaoyun (市场部品牌专员, manager guoxin, department head huangmin), zhaoqiang (销售总监).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from engine.demo.driver import Scenario
from engine.finance.invoices import today as invoice_today

_SERIAL = itertools.count(1)


def invoices_for(amount: int) -> list[dict]:
    """One 全电发票 dated yesterday, numbered afresh each run (an invoice backs one claim only)."""
    number = f"{datetime.now():%y%m%d%H%M%S}{next(_SERIAL):08d}"
    return [{"number": number, "amount": amount, "date": (invoice_today() - timedelta(days=1)).isoformat()}]


def claim(category: str, amount: int, reason: str) -> dict:
    """A reimbursement's start data, backed by a fresh invoice (also used by the benchmarks)."""
    return {"category": category, "amount": amount, "reason": reason, "invoices": invoices_for(amount)}


def _payment(amount: int, budget_line: str, payee: str = "杭州印象广告有限公司") -> dict:
    return {"payee": payee, "bank_account": "6222020200112233445", "bank_name": "中国工商银行杭州分行",
            "amount": amount, "due_date": "2026-12-01", "budget_line": budget_line, "purpose": "品牌推广服务费"}


def _contract(amount: int) -> dict:
    return {"title": "2027 年度云服务采购合同", "counterparty": "阿里云计算有限公司", "amount": amount,
            "contract_type": "采购", "attachments": [{"name": "合同正文.pdf", "size": 482133,
                                                      "sha256": "9f2c" + "0" * 60}]}


def _first_reject(visit: int) -> str:
    return "reject" if visit == 1 else "approve"


SCENARIOS: list[Scenario] = [
    Scenario("报销 ≤5,000：上级→会计→出纳", "reimbursement", "suxiaoyun", claim("办公", 1200, "采购办公用品")),
    Scenario("报销 8,000：增加部门负责人", "reimbursement", "suxiaoyun", claim("差旅", 8000, "上海客户拜访差旅")),
    Scenario("报销 60,000：部门负责人+财务总监", "reimbursement", "suxiaoyun", claim("其他", 60000, "展会搭建费")),
    Scenario("报销 招待 3,000：增加部门负责人", "reimbursement", "suxiaoyun", claim("招待", 3000, "客户商务宴请")),
    Scenario("报销 会计驳回→修改重提→通过", "reimbursement", "suxiaoyun", claim("交通", 800, "打车费"),
             decisions={"finance_review": _first_reject},
             revisions={"applicant_revise": {"amount": 760, "reason": "打车费（已剔除个人行程）",
                                            "invoices": invoices_for(760)}}),
    Scenario("付款 预算内：负责人→财务经理→出纳→凭证", "payment", "suxiaoyun", _payment(30000, "MKT-ADS-2026")),
    Scenario("付款 >200,000：增加总经理", "payment", "zhaoqiang", _payment(250000, "SALES-TRAVEL-2026", "国航商旅")),
    Scenario("付款 预算使用 ≥85%：预警后继续", "payment", "suxiaoyun", _payment(10000, "MKT-TRAVEL-2026")),
    Scenario("付款 超预算：自动驳回", "payment", "suxiaoyun", _payment(30000, "MKT-TRAVEL-2026")),
    Scenario("付款 财务经理驳回", "payment", "suxiaoyun", _payment(5000, "MKT-ADS-2026"),
             decisions={"finance_manager_approval": "reject"}),
    Scenario("合同 法务+财务并行→会签全部同意→总经理→用印→归档", "contract", "zhaoqiang", _contract(180000)),
    Scenario("合同 会签一人驳回", "contract", "zhaoqiang", _contract(90000), decisions={"countersign": _first_reject}),
    Scenario("合同 法务驳回", "contract", "zhaoqiang", _contract(50000), decisions={"legal_review": "reject"}),
]
