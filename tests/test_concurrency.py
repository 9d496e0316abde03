"""Two approvers at once: the same task completes once (the other gets 409); different tasks of the same
instance both complete, with no lost update."""

import threading

from tests.helpers import contract, events, invoice, ready, ready_nodes, start


def complete_concurrently(app, tokens_and_tasks):
    barrier = threading.Barrier(len(tokens_and_tasks))
    results = [None] * len(tokens_and_tasks)

    def worker(index, token, task_id):
        client = app.test_client()
        barrier.wait()
        response = client.post(f"/api/v1/tasks/{task_id}/complete", json={"action": "approve"},
                               headers={"Authorization": f"Bearer {token}"})
        results[index] = (response.status_code, response.json)

    threads = [threading.Thread(target=worker, args=(i, tok, tid)) for i, (tok, tid) in enumerate(tokens_and_tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def token_for(as_user, user):
    return as_user(user).headers["Authorization"].removeprefix("Bearer ")


def test_same_task_from_two_threads_one_wins(app, as_user):
    for _ in range(3):
        iid = start("reimbursement", "suxiaoyun", {"category": "办公", "amount": 10, "reason": "纸",
                                                    "invoices": [invoice(10)]})
        act_on = ready(iid)[0]
        act_on_finance = None
        results = complete_concurrently(app, [(token_for(as_user, "guoxin"), act_on.id)] * 2)
        statuses = sorted(code for code, _ in results)
        assert statuses == [200, 409], results
        assert sum(e.type == "task.completed" for e in events(iid)) == 1
        assert ready_nodes(iid) == ["finance_review"]
        assert act_on_finance is None


def test_parallel_tasks_of_one_instance_both_complete(app, as_user):
    for _ in range(3):
        iid = start("contract", "zhaoqiang", contract())
        tasks = {t.node_id: t for t in ready(iid)}
        results = complete_concurrently(app, [(token_for(as_user, "chenjing"), tasks["legal_review"].id),
                                              (token_for(as_user, "yangxue"), tasks["finance_review"].id)])
        assert [code for code, _ in results] == [200, 200], results
        assert ready_nodes(iid) == ["countersign"] * 2  # both reached the join; no self-signing
        completed = [e.node_id for e in events(iid) if e.type == "task.completed"]
        assert sorted(completed) == ["finance_review", "legal_review"]


def test_same_idempotency_key_from_two_threads_starts_one_instance(app, as_user):
    token = token_for(as_user, "suxiaoyun")
    body = {"process_key": "reimbursement", "data": {"category": "办公", "amount": 10, "reason": "纸",
                                                     "invoices": [invoice(10)]}}
    barrier = threading.Barrier(2)
    results = []

    def worker():
        client = app.test_client()
        barrier.wait()
        response = client.post("/api/v1/instances", json=body, headers={"Authorization": f"Bearer {token}",
                                                                        "Idempotency-Key": "same-key"})
        results.append((response.status_code, response.json["id"]))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [code for code, _ in results] == [201, 201]
    assert results[0][1] == results[1][1]  # the second call got the first call's instance
    assert as_user("fengli").get("/api/v1/instances").json["meta"]["total"] == 1
