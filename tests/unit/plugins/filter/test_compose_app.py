import json

import pytest

from ansible_collections.pilito.priority_queue.plugins.filter.compose_app import (
    AppCommandError,
    app_errors,
    app_services,
    celery_executable,
    celery_prefix,
    compose_argv,
    compose_failure,
    containers,
    containers_without_restart_policy,
    engine_stop_timeout,
    image_pythonpath,
    image_pythonpaths,
    images_to_restore,
    joined_pythonpath,
    project_mounts,
    replaced_containers,
    restart_policy,
    services_down,
    running_images,
    without_restart_policy,
    worker_command,
    worker_host_compose,
)

POOL = dict(name="fast", queues=["high", "default"], concurrency=3)


@pytest.mark.parametrize("command, expected", [
    # The demo: its node name and concurrency are replaced, --loglevel kept.
    (["celery", "-A", "core", "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "w@%h"],
     ["celery", "-A", "core", "worker", "--loglevel", "INFO"]),
    # No celery on PATH: the module form, with -E (task events) kept.
    (["python3", "-m", "celery", "-A", "app.worker", "worker", "-E", "-Q", "celery", "-c4"],
     ["python3", "-m", "celery", "-A", "app.worker", "worker", "-E"]),
    # A venv's executable, options in = form, an exclude list and a prefetch that would undo the topology's.
    (["/venv/bin/celery", "--app=proj", "worker", "--queues=a,b", "-X", "c", "--prefetch-multiplier=4", "-l", "info"],
     ["/venv/bin/celery", "--app=proj", "worker", "-l", "info"]),
])
def test_worker_command_keeps_the_apps_own_and_sets_the_topologys(command, expected):
    assert worker_command(command, POOL) == expected + ["--queues", "high,default", "--concurrency", "3",
                                                        "--hostname", "fast@%h"]


def test_autoscale_replaces_concurrency():
    command = worker_command(["celery", "-A", "p", "worker", "-c", "2"], dict(POOL, autoscale="10,2"))
    assert command[4:] == ["--queues", "high,default", "--autoscale", "10,2", "--hostname", "fast@%h"]


def test_a_shell_wrapped_command_keeps_its_shell_and_exec():
    command = ["sh", "-c", "exec celery -A proj worker --concurrency 8 -E"]
    assert worker_command(command, POOL) == [
        "sh", "-c", "exec celery -A proj worker -E --queues high,default --concurrency 3 --hostname fast@%h"]


@pytest.mark.parametrize("command", [[], ["./start-worker.sh"], ["celery", "-A", "p", "beat"], ["python", "worker"]])
def test_a_command_without_a_celery_worker_says_what_to_set(command):
    with pytest.raises(AppCommandError, match="set priority_queue_worker_command"):
        worker_command(command, POOL)


def test_prefix_and_executable():
    command = ["python3", "-m", "celery", "-A", "jobs.worker", "worker", "-E"]
    assert celery_prefix(command) == ["python3", "-m", "celery", "-A", "jobs.worker"]
    assert celery_executable(command) == ["python3", "-m", "celery"]
    assert celery_executable(["celery", "--app=x", "worker"]) == ["celery"]


def test_the_apps_pythonpath_is_kept_after_the_config_dir():
    assert joined_pythonpath("/opt/pq", "", "/srv/code") == "/opt/pq:/srv/code"
    assert joined_pythonpath("/opt/pq", "/app/lib:/app", "/srv/code") == "/opt/pq:/app/lib:/app"
    assert joined_pythonpath("/opt/pq", "", "") == "/opt/pq"
    assert image_pythonpath(["PATH=/usr/bin", "PYTHONPATH=/srv/code"]) == "/srv/code"


CONFIG = {"services": {
    "web": {"image": "app:1", "command": "gunicorn app:wsgi", "environment": {"SECRET": "s3cret", "PYTHONPATH": "/x"}},
    "worker": {"image": "app:1", "command": ["python3", "-m", "celery", "-A", "w", "worker"]},
    "db": {"image": "postgres", "environment": ["POSTGRES_PASSWORD=pw"]},
    "redis": {"image": "redis", "build": {"context": "."}},
}}


def test_app_services_drop_environment_values():
    services = app_services(CONFIG)
    assert services["web"] == dict(image="app:1", build=False, container_name=False, ports=False,
                                   command=["gunicorn", "app:wsgi"], entrypoint=[], pythonpath="/x", restart="")
    assert "s3cret" not in repr(services) and "pw" not in repr(services)
    assert services["redis"]["build"] is True


@pytest.mark.parametrize("service, policy", [
    ({}, ""),
    ({"restart": "always"}, "always"),
    ({"restart": "no"}, "no"),
    ({"deploy": {"restart_policy": {}}}, "always"),
    ({"deploy": {"restart_policy": {"condition": "on-failure"}}}, "on-failure"),
    ({"deploy": {"restart_policy": {"condition": "none"}}}, "no"),
    ({"restart": "unless-stopped", "deploy": {"restart_policy": {"condition": "none"}}}, "unless-stopped"),
    ({"deploy": {"replicas": 2}}, ""),
])
def test_restart_policy_reads_restart_then_deploy(service, policy):
    assert restart_policy(service) == policy


def test_services_without_restart_policy_are_named_in_order():
    services = app_services({"services": {"redis": {}, "db": {"restart": "no"}, "web": {"restart": "always"}}})
    assert without_restart_policy(services, ["web", "db", "redis", "absent"]) == ["db", "redis"]


def test_running_containers_without_restart_policy():
    inspect = json.dumps([
        {"Name": "/p-worker-1", "Config": {"Labels": {"com.docker.compose.service": "worker"}},
         "HostConfig": {"RestartPolicy": {"Name": ""}}},
        {"Name": "/p-redis-1", "Config": {"Labels": {"com.docker.compose.service": "redis"}},
         "HostConfig": {"RestartPolicy": {"Name": "always"}}},
        {"Name": "/p-web-1", "Config": {"Labels": {"com.docker.compose.service": "web"}},
         "HostConfig": {"RestartPolicy": {"Name": "no"}}},
        {"Name": "/other", "Config": {"Labels": {}}, "HostConfig": {"RestartPolicy": {"Name": ""}}},
    ])
    assert containers_without_restart_policy(inspect, ["worker", "redis", "web"]) == [
        dict(container="p-worker-1", service="worker"), dict(container="p-web-1", service="web")]
    assert containers_without_restart_policy("", ["worker"]) == []


def errors(**changes):
    args = dict(services=app_services(CONFIG), pools=[dict(name="worker"), dict(name="fast")], template="worker",
                producers=["web"], web="web", broker="redis", db="db")
    args.update(changes)
    return app_errors(**args)


def test_a_sound_app_has_no_errors():
    assert errors() == []


@pytest.mark.parametrize("changes, message", [
    (dict(template="celery_worker"), "priority_queue_worker_template_service 'celery_worker' is not a service"),
    (dict(producers=["web", "beat"]), "priority_queue_producer_services names 'beat', which is not a service"),
    (dict(broker="broker"), "priority_queue_broker_service 'broker' is not a service"),
    (dict(pools=[dict(name="worker"), dict(name="db")]),
     "priority_queue_pools['db']: 'db' is already a service of the app's compose files"),
    (dict(template="web"), "cannot find a Celery worker command in priority_queue_worker_template_service's command"),
])
def test_app_problems_name_their_variable(changes, message):
    assert any(message in error for error in errors(**changes)), errors(**changes)


def test_an_explicit_worker_command_is_not_read_from_the_template():
    assert errors(template="web", pools=[dict(name="fast")],
                  worker_command_override=["celery", "-A", "w", "worker"]) == []


def test_image_pythonpaths_from_the_image_info_loop():
    results = [{"item": "app:1", "images": [{"Config": {"Env": ["PYTHONPATH=/srv/code"]}}]},
               {"item": "app:2", "images": []}]
    assert image_pythonpaths(results) == {"app:1": "/srv/code", "app:2": ""}


def test_compose_argv():
    assert compose_argv("/srv/my app", ["a.yml", "/etc/b.yml"]) == [
        "docker", "compose", "--project-directory", "/srv/my app", "-f", "/srv/my app/a.yml", "-f", "/etc/b.yml"]


def test_running_images_per_service():
    lines = ["api app:2 sha256:b", "jobs app:2 sha256:b", "jobs app:2 sha256:b", "queue redis:7 sha256:r", "odd"]
    assert running_images(lines) == {"api": {"image": "app:2", "id": "sha256:b"},
                                     "jobs": {"image": "app:2", "id": "sha256:b"},
                                     "queue": {"image": "redis:7", "id": "sha256:r"}}


def test_images_to_restore_are_the_moved_tags_whose_old_image_is_still_here():
    recorded = {"api": {"image": "app:2", "id": "sha256:old"}, "jobs": {"image": "app:2", "id": "sha256:old"},
                "queue": {"image": "redis:7", "id": "sha256:r"}, "gone": {"image": "x:1", "id": "sha256:gone"}}
    info = [{"item": "app:2", "images": [{"Id": "sha256:new"}]}, {"item": "sha256:old", "images": [{"Id": "sha256:old"}]},
            {"item": "redis:7", "images": [{"Id": "sha256:r"}]}, {"item": "sha256:r", "images": [{"Id": "sha256:r"}]},
            {"item": "x:1", "images": [{"Id": "sha256:newer"}]}, {"item": "sha256:gone", "images": []}]
    assert images_to_restore(recorded, info) == [{"image": "app:2", "id": "sha256:old"}]


def test_containers_from_compose_ps():
    lines = ["a1 web False", "b2 celery_ai False", "", "c3 celery_ai True", "d4 web", "e5 x y False"]
    assert containers(lines) == [{"container": "a1", "service": "web"}, {"container": "b2", "service": "celery_ai"}]


def test_replaced_containers_from_a_compose_plan():
    plan = {"actions": [{"what": "container", "id": "p-celery_worker-1", "status": "Recreate"},
                        {"what": "container", "id": "p-celery_ai-1", "status": "Create"},
                        {"what": "network", "id": "p_default", "status": "Recreate"},
                        {"what": "container", "id": "p-web-1", "status": "Stopping"}],
            "containers": [{"Name": "p-celery_worker-1", "ID": "w1", "Service": "celery_worker"},
                           {"Name": "p-web-1", "ID": "x1", "Service": "web"},
                           {"Name": "p-db-1", "ID": "d1", "Service": "db"}]}
    assert replaced_containers(plan) == [{"container": "w1", "service": "celery_worker"},
                                         {"container": "x1", "service": "web"}]
    assert replaced_containers({}) == []


def test_compose_failure_names_the_reason_and_the_container():
    result = {"msg": "General error: container p-responders-1 is unhealthy  Container p-db-1  Running\n"
                     " Container p-api-1  Healthy\ncontainer p-responders-1 is unhealthy", "stderr": ""}
    assert compose_failure(result) == {"reason": "container p-responders-1 is unhealthy", "container": "p-responders-1"}
    assert compose_failure({"msg": "something odd"}) == {"reason": "something odd", "container": ""}


APP_CONFIG = {
    "name": "shop",
    "services": {
        "worker": {
            "image": "shop:7", "build": {"context": "."}, "container_name": "w", "ports": [{"target": 8000}],
            "depends_on": {"redis": {"condition": "service_healthy"}}, "networks": {"default": None},
            "command": ["celery", "-A", "shop", "worker"], "environment": {"BROKER_URL": "redis://redis:6379/0"},
            "volumes": [
                {"type": "bind", "source": "/srv/shop", "target": "/app", "read_only": True},
                {"type": "bind", "source": "/srv/shop/media", "target": "/media"},
                {"type": "bind", "source": "/srv/shopping", "target": "/other"},
                {"type": "volume", "source": "cache", "target": "/cache"},
            ],
        },
        "redis": {"image": "redis:7"},
        "db": {"image": "postgres:16"},
    },
}


def test_a_worker_host_runs_the_app_worker_as_resolved_with_the_app_names_pointing_at_the_app_host():
    project = worker_host_compose(APP_CONFIG, "worker", "10.0.0.5")
    assert project["name"] == "shop"
    worker = project["services"]["worker"]
    assert worker["profiles"] == ["template"]  # never started itself; the pools extend it
    assert worker["extra_hosts"] == ["db:10.0.0.5", "redis:10.0.0.5"]
    assert worker["environment"] == {"BROKER_URL": "redis://redis:6379/0"}
    assert worker["image"] == "shop:7" and worker["command"] == ["celery", "-A", "shop", "worker"]
    for tied_to_the_app_host in ("build", "container_name", "ports", "depends_on", "networks"):
        assert tied_to_the_app_host not in worker
    assert list(project["services"]) == ["worker"]


def test_only_the_project_directorys_bind_mounts_are_its_code():
    assert project_mounts(APP_CONFIG, "worker", "/srv/shop/") == ["/srv/shop", "/srv/shop/media"]
    assert project_mounts(APP_CONFIG, "redis", "/srv/shop") == []


def test_services_down_are_the_stopped_ones_but_those_stopped_on_purpose():
    ps = "\n".join(json.dumps(row) for row in [
        {"Service": "redis", "State": "exited"}, {"Service": "web", "State": "running"},
        {"Service": "celery_ai", "State": "exited"}, {"Service": "celery_ai", "State": "running"},
        {"Service": "celery_worker", "State": "created"}, {"Service": "flower", "State": "restarting"},
        {"Service": "migrate", "State": "exited"}])
    services = ["web", "celery_worker", "celery_ai", "redis", "flower"]
    assert services_down(ps, services) == ["celery_worker", "celery_ai", "redis"]
    assert services_down(ps, services, ["celery_ai"]) == ["celery_worker", "redis"]
    assert services_down("[" + ps.replace("\n", ",") + "]", ["redis"]) == ["redis"]
    assert services_down("", services) == []


def test_the_engines_stop_timeout_is_read_from_systemd_in_seconds():
    def shown(timeout, state="loaded"):
        return f"LoadState={state}\nTimeoutStopUSec={timeout}\n"
    assert engine_stop_timeout(shown("1min 30s")) == {"managed": True, "seconds": 90, "said": "1min 30s"}
    assert engine_stop_timeout(shown("2min"))["seconds"] == 120
    assert engine_stop_timeout(shown("1h 5min 500ms"))["seconds"] == 3900.5
    assert engine_stop_timeout(shown("infinity")) == {"managed": True, "seconds": None, "said": "infinity"}
    # No docker.service (a snap, a container, an engine started by hand): systemd shows defaults for it.
    assert engine_stop_timeout(shown("1min 30s", "not-found"))["managed"] is False
    # No systemd at all: the command failed and printed nothing on stdout.
    assert engine_stop_timeout("") == {"managed": False, "seconds": None, "said": ""}
    with pytest.raises(ValueError, match="TimeoutStopUSec 'soon'"):
        engine_stop_timeout(shown("soon"))
