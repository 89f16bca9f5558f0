from ansible_collections.pilito.priority_queue.plugins.modules.celery_queue_snapshot import (
    counts,
    merged,
    missing_after,
    written_keys,
)


def snapshot(lists, unacked=None, index=None):
    return {"queues": {"low_priority": list(lists)}, "lists": lists, "unacked": unacked or {},
            "unacked_index": index or {}, "unacked_key": "unacked", "unacked_index_key": "unacked_index"}


def test_snapshot_counts_waiting_and_reserved_messages():
    saved = snapshot({"low_priority": ["a", "b"], "low_priority\x06\x166": ["c"]}, {"t1": "x"})
    assert counts(saved) == {"messages": 4, "queues": {"low_priority": 3}, "reserved": 1}


def test_a_broker_that_lost_everything_gets_every_saved_message_back():
    saved = snapshot({"low_priority": ["b", "a"], "low_priority\x06\x166": ["c"]}, {"t1": "x"}, {"t1": 1.5})
    writes, figures = merged(snapshot({"low_priority": [], "low_priority\x06\x166": []}), saved)
    assert writes == dict(lists={"low_priority": ["b", "a"], "low_priority\x06\x166": ["c"]}, unacked={"t1": "x"},
                          unacked_index={"t1": 1.5})
    assert figures == dict(put_back=4, kept=0, beside=0)
    assert written_keys(writes, saved) == ["low_priority", "low_priority\x06\x166", "unacked", "unacked_index"]


def test_a_broker_that_kept_its_data_is_left_alone_and_a_second_restore_changes_nothing():
    saved = snapshot({"low_priority": ["b", "a"]}, {"t1": "x"}, {"t1": 1.5})
    writes, figures = merged(saved, saved)
    assert written_keys(writes, saved) == [] and figures == dict(put_back=0, kept=3, beside=0)


def test_messages_sent_since_stay_ahead_of_the_saved_ones_each_saved_one_once():
    # Lists are pushed at the head (index 0) and consumed from the tail: the saved ones go first.
    saved = snapshot({"low_priority": ["b", "a"]})
    writes, figures = merged(snapshot({"low_priority": ["new2", "new1"]}), saved)
    assert writes["lists"] == {"low_priority": ["new2", "new1", "b", "a"]}
    assert figures == dict(put_back=2, kept=0, beside=2)
    # The broker kept the saved ones and new ones came on top: nothing to write.
    writes, figures = merged(snapshot({"low_priority": ["new1", "b", "a"]}), saved)
    assert writes["lists"] == {} and figures == dict(put_back=0, kept=2, beside=1)
    # It kept only the older one (its last second lost): the newer goes back once, behind the new one.
    writes, figures = merged(snapshot({"low_priority": ["new1", "a"]}), saved)
    assert writes["lists"] == {"low_priority": ["new1", "b", "a"]} and figures == dict(put_back=1, kept=1, beside=1)


def test_after_a_restore_each_saved_message_must_be_there_exactly_once():
    saved = snapshot({"low_priority": ["b", "a"]}, {"t1": "x"})
    assert missing_after(snapshot({"low_priority": ["new", "b", "a"]}, {"t1": "x"}), saved) == []
    assert missing_after(snapshot({"low_priority": ["b", "a", "a"]}, {}), saved) == [
        "'low_priority': 1 saved messages not there exactly once", "'unacked': 1 reserved messages missing"]
