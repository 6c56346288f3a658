"""Both store backends keep the same promises: atomic transactions and expiry."""

from __future__ import annotations

import json
import threading
import time

import pytest

from emotionq.errors import ConfigurationError
from emotionq.store import open_store


def test_unknown_scheme_is_one_clear_error():
    with pytest.raises(ConfigurationError, match="use one of"):
        open_store("mongodb://localhost/x")


def test_put_get_delete(store):
    assert store.get("a") is None
    store.transact(lambda tx: tx.put("a", {"n": 1}))
    assert store.get("a") == {"n": 1}
    store.transact(lambda tx: tx.delete("a"))
    assert store.get("a") is None


def test_failed_transaction_writes_nothing(store):
    def boom(tx):
        tx.put("b", {"n": 1})
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.transact(boom)
    assert store.get("b") is None


def test_concurrent_read_modify_write_loses_no_update(store):
    store.transact(lambda tx: tx.put("counter", {"n": 0}))

    def bump(tx):
        doc = tx.get("counter")
        doc["n"] += 1
        tx.put("counter", doc)

    def worker():
        for _ in range(25):
            store.transact(bump)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counter") == {"n": 200}


def test_ttl_expires_and_none_keeps_it(store):
    store.transact(lambda tx: tx.put("t", {"v": 1}, ttl=1))
    store.transact(lambda tx: tx.put("t", {"v": 2}))  # keeps the 1 s expiry
    assert store.get("t") == {"v": 2}
    time.sleep(1.3)
    assert store.get("t") is None


def test_touch_renews_the_expiry_and_keeps_the_document(store):
    store.transact(lambda tx: tx.put("t", {"v": 1}, ttl=1))
    store.transact(lambda tx: tx.touch("t", 3))
    time.sleep(1.3)
    assert store.get("t") == {"v": 1}  # past its first expiry: the touch renewed it
    store.transact(lambda tx: tx.touch("t", 1))
    time.sleep(1.3)
    assert store.get("t") is None
    store.transact(lambda tx: tx.touch("missing", 5))  # nothing there: nothing made
    assert store.get("missing") is None


def test_get_many_reads_documents_in_order(store):
    store.transact(lambda tx: (tx.put("m1", {"v": 1}), tx.put("m3", {"v": 3})))
    assert store.get_many(["m3", "m2", "m1"]) == [{"v": 3}, None, {"v": 1}]


def test_get_raw_is_the_json_text_as_stored_even_when_large(store):
    large = {"frames": [[k / 7] * 64 for k in range(3000)], "s": "\u00e9\"}"}  # over 1 MiB of JSON
    store.transact(lambda tx: (tx.put("r", {"v": 1}), tx.put("large", large), tx.put("gone", {"v": 1}, ttl=1)))
    assert json.loads(store.get_raw("r")) == {"v": 1} and store.get_raw("missing") is None
    for _ in range(2):  # a large one again, on whatever connection follows it
        raw = store.get_raw("large")
        assert len(raw) > 2**20 and json.loads(raw) == large
    time.sleep(1.3)
    assert store.get_raw("gone") is None and store.get("r") == {"v": 1}


def test_put_if_writes_only_while_its_keys_exist_and_its_absent_keys_do_not(store):
    store.transact(lambda tx: tx.put("run", {"state": "succeeded"}, ttl=1))
    assert store.put_if({"job": ({"n": 1}, 60), "idem": ({"k": 1}, 60)}, alive={"run": 3}, absent=["idem"])
    assert store.get_many(["job", "idem"]) == [{"n": 1}, {"k": 1}]
    time.sleep(1.3)
    assert store.get("run") == {"state": "succeeded"}  # past its first expiry: kept alive by the write

    assert not store.put_if({"job2": ({"n": 2}, 60)}, alive={"run": 3}, absent=["idem"])  # idem exists
    assert not store.put_if({"job2": ({"n": 2}, 60)}, alive={"run": 3, "gone": 3})  # one alive key is missing
    assert store.get("job2") is None and store.get("gone") is None  # nothing written, nothing made


def test_put_if_under_concurrent_writers_of_the_same_keys(store):
    """Many requests reuse one result at once: every write lands, and the result stays alive."""
    store.transact(lambda tx: tx.put("run", {"state": "succeeded"}, ttl=60))
    done = []

    def writer(i: int) -> None:
        done.extend(store.put_if({f"job{i}-{k}": ({"k": k}, 60)}, alive={"run": 60, "pointer": 60} if k % 2 else
                                 {"run": 60}) for k in range(25))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done.count(True) == 8 * 13 and done.count(False) == 8 * 12  # odd k: no pointer, nothing written
    assert store.get_many([f"job{i}-{k}" for i in range(8) for k in (0, 1, 24)]) == [{"k": 0}, None, {"k": 24}] * 8


def test_indexes_are_written_with_the_transaction_and_read_in_score_order(store):
    def tx_three(tx):
        tx.put("doc", {"n": 1})
        for member, score in (("c", 30.0), ("a", 10.0), ("b", 20.0)):
            tx.index("todo", member, score)

    store.transact(tx_three)
    assert store.due("todo", until=25, limit=10) == [("a", 10.0), ("b", 20.0)]
    assert store.due("todo", until=100, limit=1) == [("a", 10.0)]
    assert store.due("other", until=100, limit=10) == []

    def tx_then_fail(tx):
        tx.index("todo", "d", 1.0)
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.transact(tx_then_fail)
    store.transact(lambda tx: (tx.index("todo", "a", None), tx.index("todo", "c", 5.0)))
    assert store.due("todo", until=100, limit=10) == [("c", 5.0), ("b", 20.0)]


def test_ordered_sets_read_in_transactions_and_ranked_outside(store):
    store.transact(lambda tx: [tx.index("set", m, s) for m, s in (("b", 2.0), ("a", 1.0), ("c", 3.0))])

    def take_first(tx):
        [(member, _)] = tx.first("set", 1)
        tx.index("set", member, None)
        tx.index("set", "z", 0.5)
        return member, tx.first("set", 3)  # its own writes included

    assert store.transact(take_first) == ("a", [("z", 0.5), ("b", 2.0), ("c", 3.0)])
    assert [store.rank("set", m) for m in ("z", "b", "c", "a")] == [0, 1, 2, None]
    everything = store.due("set", until=float("inf"), limit=10)
    assert len(everything) == 3 and store.due("none", until=float("inf"), limit=10) == []
    assert [(m, s) for m, s in everything if s > 0.5] == [("b", 2.0), ("c", 3.0)]


def test_a_transaction_that_read_an_ordered_set_runs_again_if_it_changed(store):
    if not store.url.startswith("redis"):
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): no other writer can come in between")
    store.transact(lambda tx: tx.index("queue", "first", 1.0))
    calls = []

    def pick(tx):
        calls.append(tx.first("queue", 1))
        if len(calls) == 1:  # another writer adds a member with a lower score meanwhile
            store.transact(lambda other: other.index("queue", "sooner", 0.0))
        tx.put("picked", {"member": calls[-1][0][0]})

    store.transact(pick)
    assert len(calls) == 2 and store.get("picked") == {"member": "sooner"}
