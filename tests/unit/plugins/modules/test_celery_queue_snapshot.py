from ansible_collections.pilito.priority_queue.plugins.modules.celery_queue_snapshot import conflicts, counts, pending


def snapshot(lists, unacked=None):
    return {"queues": {"low_priority": list(lists)}, "lists": lists, "unacked": unacked or {}, "unacked_index": {},
            "unacked_key": "unacked", "unacked_index_key": "unacked_index"}


def test_snapshot_counts_waiting_and_reserved_messages():
    saved = snapshot({"low_priority": ["a", "b"], "low_priority\x06\x166": ["c"]}, {"t1": "x"})
    assert counts(saved) == {"messages": 4, "queues": {"low_priority": 3}, "reserved": 1}


def test_restore_writes_only_empty_keys_and_refuses_foreign_messages():
    saved = snapshot({"low_priority": ["a", "b"], "low_priority\x06\x166": ["c"]})
    empty = snapshot({"low_priority": [], "low_priority\x06\x166": []})
    assert pending(empty, saved) == ["low_priority", "low_priority\x06\x166"]
    kept = snapshot({"low_priority": ["a", "b"], "low_priority\x06\x166": ["c"]})
    assert pending(kept, saved) == [] and conflicts(kept, saved) == []
    foreign = snapshot({"low_priority": ["z"], "low_priority\x06\x166": []})
    assert conflicts(foreign, saved) == ["queue low_priority (Redis key 'low_priority') holds 1 messages"]
