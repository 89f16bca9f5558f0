import json

from ansible_collections.pilito.priority_queue.plugins.modules.celery_queue_move import plan, readdress


def message(exchange, routing_key):
    return json.dumps({"body": "W1tdLCB7fSwge31d", "headers": {"task": "t", "argsrepr": "[]"},
                       "properties": {"priority": 0, "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                                      "body_encoding": "base64", "delivery_tag": "tag"}})


def test_a_moved_message_names_its_new_queue_on_the_default_exchange():
    moved = json.loads(readdress(message("low_priority", "low_priority"), "celery"))
    assert moved["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert moved["headers"] == {"task": "t", "argsrepr": "[]"}, "nothing else changes (empty lists stay lists)"


def test_a_message_already_addressed_there_is_kept_byte_for_byte():
    raw = message("", "celery")
    assert readdress(raw, "celery") is raw


def test_what_is_not_kombu_json_moves_unchanged():
    for raw in ["plain text", "[1, 2]", json.dumps({"properties": {}}), json.dumps({"properties": {"delivery_info": 3}})]:
        assert readdress(raw, "celery") == raw


def test_plan_takes_the_highest_priority_first_within_the_limit():
    assert plan({"0": 5, "3": 0, "6": 3, "9": 1}, limit=6) == {"0": 5, "3": 0, "6": 1, "9": 0}
    assert plan({"0": 5, "3": 0, "6": 3, "9": 1}) == {"0": 5, "3": 0, "6": 3, "9": 1}
