from ansible_collections.pilito.priority_queue.plugins.filter.monitoring import (
    flower_errors,
    published_port,
    queue_check_errors,
    queue_check_thresholds,
)

QUEUES = ["high_priority", "default", "low_priority", "celery"]


def test_sound_thresholds_have_no_error():
    thresholds = {"high_priority": {"max_messages": 50, "max_age_seconds": 2.5, "min_consumers": 2},
                  "celery": {"max_messages": 0}}
    assert queue_check_errors(thresholds, QUEUES) == []


def test_each_problem_names_the_variable_the_queue_and_the_limit():
    thresholds = {"urgent": {"max_messages": 1}, "default": {"max_mesages": 1},
                  "low_priority": {"max_messages": 1.5, "min_consumers": -1, "max_age_seconds": "soon"}}
    assert queue_check_errors(thresholds, QUEUES) == [
        "priority_queue_queue_check_thresholds['urgent']: 'urgent' is not a queue of the topology "
        "(high_priority, default, low_priority, celery)",
        "priority_queue_queue_check_thresholds['default'] may set max_messages, max_age_seconds, min_consumers; "
        "got {'max_mesages': 1}",
        "priority_queue_queue_check_thresholds['low_priority'].max_messages must be a whole number not below 0, "
        "got 1.5",
        "priority_queue_queue_check_thresholds['low_priority'].min_consumers must be a whole number not below 0, "
        "got -1",
        "priority_queue_queue_check_thresholds['low_priority'].max_age_seconds must be a number not below 0, "
        "got 'soon'",
    ]
    assert queue_check_errors(["x"], QUEUES) == [
        "priority_queue_queue_check_thresholds must map queue names to limits, got ['x']"]


def test_every_topology_queue_needs_a_consumer_unless_its_own_limits_say_otherwise():
    merged = queue_check_thresholds(["high_priority", "default"],
                                    {"high_priority": {"max_messages": 5}, "default": {"min_consumers": 0},
                                     "celery": {"max_messages": 0}})
    assert merged == {"high_priority": {"min_consumers": 1, "max_messages": 5}, "default": {"min_consumers": 0},
                      "celery": {"max_messages": 0}}


def flower(**changes):
    settings = dict(bind="127.0.0.1", port=5555, users={}, oauth={}, open_metrics=False, url_prefix="",
                    memory="256m", uid=65534, service="flower")
    settings.update(changes)
    return settings


def test_flower_on_loopback_needs_no_authentication():
    assert flower_errors(flower()) == []
    assert flower_errors(flower(bind="::1")) == []
    assert flower_errors(flower(bind="localhost", url_prefix="/ops/flower/")) == []


def test_flower_beyond_loopback_without_authentication_is_refused_naming_the_variables():
    errors = flower_errors(flower(bind="0.0.0.0"))
    assert errors[0].startswith("priority_queue_flower_bind 0.0.0.0 publishes Flower beyond loopback without "
                                "authentication: set priority_queue_flower_users")
    assert errors[1].startswith("priority_queue_flower_bind 0.0.0.0: Flower answers /metrics and /healthcheck")
    assert "priority_queue_flower_open_metrics: true" in errors[1]
    assert flower_errors(flower(bind="10.0.0.5", users={"ops": "pw"}, open_metrics=True)) == []
    assert len(flower_errors(flower(bind="10.0.0.5", users={"ops": "pw"}))) == 1


def test_bad_users_and_oauth_are_named_and_no_password_is_shown():
    errors = flower_errors(flower(users={"a:b": "secret-one", "ops": ""}, oauth={"provider": "x", "colour": "y"}))
    text = " ".join(errors)
    assert "secret-one" not in text
    assert errors == [
        "priority_queue_flower_users: the user name 'a:b' must be a non-empty name without ':'",
        "priority_queue_flower_users['ops'] has no password (a string, from a vault)",
        "priority_queue_flower_oauth has unknown settings colour; known: provider, key, secret, redirect_uri, allowed",
        "priority_queue_flower_oauth lacks key, secret, redirect_uri, allowed",
        "set priority_queue_flower_users or priority_queue_flower_oauth, not both",
    ]


def test_port_prefix_memory_uid_and_service_are_checked():
    errors = flower_errors(flower(bind="flower.example.com", port=70000, url_prefix="a b", memory="lots", uid=-1,
                                  service="-x"), app_services=["web"])
    assert [error.split(" ")[0] for error in errors] == [
        "priority_queue_flower_bind", "priority_queue_flower_bind", "priority_queue_flower_bind",
        "priority_queue_flower_port", "priority_queue_flower_url_prefix", "priority_queue_flower_memory",
        "priority_queue_flower_uid", "priority_queue_flower_service"]
    taken = flower_errors(flower(service="flower"), app_services=["web", "flower"])
    assert taken == ["priority_queue_flower_service 'flower' is a service of the app's compose files already: "
                     "name Flower's service otherwise, or remove the app's own"]


def test_published_ports_put_ipv6_addresses_in_brackets():
    assert published_port("127.0.0.1", 5555) == "127.0.0.1:5555:5555"
    assert published_port("::1", 8555) == "[::1]:8555:5555"
