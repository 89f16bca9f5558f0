from ansible_collections.pilito.priority_queue.plugins.modules.celery_worker_info import problems_with, trimmed_tasks

EXPECT = [dict(name="fast", replicas=2, queues=["high"]), dict(name="general", replicas=1, queues=["high", "low"])]


def workers(**consumed):
    return {node: dict(pool=node.split("@")[0], queues=queues) for node, queues in consumed.items()}


def test_every_pool_whole_and_on_its_queues_has_no_problem():
    found = workers(**{"fast@a": ["high"], "fast@b": ["high"], "general@c": ["low", "high"]})
    assert problems_with(found, EXPECT) == []


def test_a_missing_replica_and_a_worker_on_other_queues_are_named():
    found = workers(**{"fast@a": ["high"], "general@c": ["high"], "stranger@d": ["low"]})
    assert problems_with(found, EXPECT) == [
        "pool fast: 1 of 2 workers answered (fast@a)",
        "worker general@c consumes high; pool general must consume high, low"]


def test_a_drained_worker_consumes_nothing():
    assert problems_with(workers(**{"general@c": []}), EXPECT[1:]) == [
        "worker general@c consumes nothing; pool general must consume high, low"]


def test_tasks_keep_their_identity_not_their_arguments():
    task = {"id": "1", "name": "chat.reply", "args": ["secret prompt"], "time_start": 1.5, "hostname": "w@h"}
    assert trimmed_tasks([task]) == [{"id": "1", "name": "chat.reply", "time_start": 1.5, "hostname": "w@h"}]
