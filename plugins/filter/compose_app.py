# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the role reads from the app's own compose files (`docker compose config --format json`):
how its worker is started, what PYTHONPATH its services need, which service names are taken.
The app is the user's: only the topology's options change, the rest of its command stays."""

from __future__ import annotations

import json
import re
import shlex

# Worker options the topology decides; everything else in the app's command is kept.
# Each maps to whether it takes a value.
TOPOLOGY_OPTIONS = {
    "-Q": True, "--queues": True, "-X": True, "--exclude-queues": True,
    "-c": True, "--concurrency": True, "--autoscale": True,
    "-n": True, "--hostname": True,
    "--prefetch-multiplier": True,  # the rendered config sets 1; a command-line value would override it
}
SHELLS = ("sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env sh")


class AppCommandError(ValueError):
    """The worker command cannot be read from the app; the message says what to set."""


def compose_argv(project_dir, files):
    """`docker compose` for the project directory and these compose files, as an argument list."""
    argv = ["docker", "compose", "--project-directory", project_dir]
    for name in files or []:
        argv += ["-f", name if str(name).startswith("/") else f"{project_dir}/{name}"]
    return argv


def app_services(config):
    """The parts of `docker compose config --format json` the role uses, per service, without the
    environment's values (they hold secrets) but for PYTHONPATH."""
    services = {}
    for name, service in ((config or {}).get("services") or {}).items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):  # KEY=value form
            environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
        command = service.get("command")
        entrypoint = service.get("entrypoint")
        services[name] = dict(
            image=service.get("image") or "",
            build=bool(service.get("build")),
            # What a pool must not inherit through `extends`: one container name, one host port.
            container_name=bool(service.get("container_name")),
            ports=bool(service.get("ports")),
            command=shlex.split(command) if isinstance(command, str) else list(command or []),
            entrypoint=shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint or []),
            pythonpath=environment.get("PYTHONPATH") or "",
            restart=restart_policy(service),
        )
    return services


# Compose's deploy.restart_policy conditions, as the restart policies Docker runs them with.
DEPLOY_CONDITIONS = {"any": "always", "on-failure": "on-failure", "none": "no"}


def restart_policy(service):
    """The restart policy Compose gives a service's containers ("" or "no": none), from `restart`
    or, where that is unset, deploy.restart_policy (whose condition defaults to "any")."""
    restart = str(service.get("restart") or "")
    deploy_policy = (service.get("deploy") or {}).get("restart_policy")
    if restart or deploy_policy is None:
        return restart
    return DEPLOY_CONDITIONS.get(deploy_policy.get("condition") or "any", "")


def without_restart_policy(services, names):
    """Those of these services (that exist) whose containers would not come back by themselves
    after a crash, an engine restart or a reboot."""
    return [name for name in names if name in services and services[name].get("restart", "") in ("", "no")]


def containers_without_restart_policy(inspect_output, services):
    """[{container, service}] of the containers (`docker inspect`, JSON) of these services that run
    with no restart policy."""
    found = []
    for item in json.loads(inspect_output or "[]"):
        service = ((item.get("Config") or {}).get("Labels") or {}).get("com.docker.compose.service", "")
        policy = ((item.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or ""
        if service in services and policy in ("", "no"):
            found.append(dict(container=item.get("Name", "").lstrip("/"), service=service))
    return found


def services_down(ps_output, services, stopped_on_purpose=()):
    """Those of these services with a container that is not running (`docker compose ps --all
    --format json`: exited, dead or created; one that Docker restarts is left to it), in the order
    given, but those a rollback plan stopped on purpose."""
    rows = []
    text = (ps_output or "").strip()
    if text.startswith("["):
        rows = json.loads(text)
    elif text:
        rows = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
    down = {row.get("Service") for row in rows if row.get("State") in ("exited", "dead", "created")}
    return [name for name in services if name in down and name not in (stopped_on_purpose or ())]


# systemd's time spans as `systemctl show` prints them ("1min 30s", "500ms", "infinity").
TIMESPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": 86400, "w": 604800,
                  "M": 2629800, "y": 31557600}
TIMESPAN_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|min|s|h|d|w|M|y)")


def engine_stop_timeout(show_output):
    """How long the service manager lets the Docker engine stop: {managed, seconds, said}, from
    `systemctl show docker.service --property=LoadState --property=TimeoutStopUSec`. Docker itself
    waits each container's stop_grace_period at an engine stop; systemd kills the engine (and the
    pools' running tasks) when its own timeout ends first. managed is False where systemd does not
    run the engine (no systemd, or no docker.service); seconds is None for no limit."""
    props = dict(line.split("=", 1) for line in (show_output or "").splitlines() if "=" in line)
    said = props.get("TimeoutStopUSec", "").strip()
    if props.get("LoadState") != "loaded" or not said:
        return {"managed": False, "seconds": None, "said": said}
    if said == "infinity":
        return {"managed": True, "seconds": None, "said": said}
    parts = TIMESPAN_PART.findall(said)
    if not parts or TIMESPAN_PART.sub("", said).strip():
        raise ValueError(f"cannot read systemd's TimeoutStopUSec {said!r}")
    return {"managed": True, "seconds": sum(float(number) * TIMESPAN_UNITS[unit] for number, unit in parts),
            "said": said}


# What a worker host's copy of the app's worker leaves out: what ties it to the app host's project.
NOT_ON_WORKER_HOSTS = ("build", "container_name", "depends_on", "expose", "links", "networks", "ports",
                       "profiles", "volumes_from", "network_mode")


def worker_host_compose(config, template, app_address):
    """The compose project a worker host runs: the app's worker service as the app host resolves it
    (image, environment, volumes, command), never started itself (profile `template`; the pools
    extend it), with the app's service names resolving to the app host's address, so a broker or
    database URL written for the app's network reaches the app host's published ports."""
    services = (config or {}).get("services") or {}
    worker = {key: value for key, value in services[template].items() if key not in NOT_ON_WORKER_HOSTS}
    worker["profiles"] = ["template"]
    worker["extra_hosts"] = sorted(f"{name}:{app_address}" for name in services if name != template)
    return {"name": config.get("name"), "services": {template: worker}}


def project_mounts(config, template, project_dir):
    """The bind mounts of the app's worker that come from its project directory (its code, as a
    checkout mounted into the container): a worker host needs a copy of them."""
    service = ((config or {}).get("services") or {}).get(template) or {}
    root = project_dir.rstrip("/")
    return sorted({volume["source"] for volume in service.get("volumes") or []
                   if isinstance(volume, dict) and volume.get("type") == "bind"
                   and (volume.get("source") == root or str(volume.get("source", "")).startswith(root + "/"))})


def _worker_index(tokens):
    """Where the `worker` subcommand of a Celery command line is, or None."""
    for index, token in enumerate(tokens):
        if token == "worker" and index > 0:
            before = tokens[:index]
            if any(t == "celery" or t.endswith("/celery") or t.startswith("celery") for t in before):
                return index
    return None


def _split_shell(tokens):
    """(wrapper, inner tokens) for `sh -c "..."` commands, else (None, tokens)."""
    if len(tokens) == 3 and tokens[0] in SHELLS and tokens[1] == "-c":
        inner = shlex.split(tokens[2])
        if inner and inner[0] == "exec":
            return (tokens[:2], ["exec"]), inner[1:]
        return (tokens[:2], []), inner
    return None, tokens


def _without_topology_options(options):
    kept, skip = [], False
    for token in options:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in TOPOLOGY_OPTIONS:
            skip = "=" not in token and TOPOLOGY_OPTIONS[name]
            continue
        if len(token) > 2 and token[:2] in ("-Q", "-X", "-c", "-n") and not token.startswith("--"):
            continue  # attached short form: -Qhigh,low, -c4
        kept.append(token)
    return kept


def worker_command(command, pool, variable="priority_queue_worker_template_service"):
    """The pool's worker command: the app's own (its executable, app and other options, e.g. -E),
    with queues, concurrency or autoscale and node name set by the topology."""
    wrapper, tokens = _split_shell(list(command or []))
    index = _worker_index(tokens)
    if index is None:
        raise AppCommandError(
            f"cannot find a Celery worker command in {variable}'s command {shlex.join(command or []) or '(none)'}: "
            f"set priority_queue_worker_command to the command that starts a worker, e.g. "
            f"[python3, -m, celery, -A, proj, worker]")
    options = _without_topology_options(tokens[index + 1:])
    options += ["--queues", ",".join(pool["queues"])]
    if pool.get("autoscale"):
        options += ["--autoscale", str(pool["autoscale"])]
    else:
        options += ["--concurrency", str(pool["concurrency"])]
    options += ["--hostname", f"{pool['name']}@%h"]
    result = tokens[:index + 1] + options
    if wrapper:
        shell, prefix = wrapper
        return shell + [shlex.join(prefix + result)]
    return result


def celery_prefix(command):
    """The part of a worker command before `worker` (e.g. python3 -m celery -A proj), which also
    runs `inspect` and `--version`; a `sh -c` wrapper is dropped."""
    _wrapper, tokens = _split_shell(list(command or []))
    index = _worker_index(tokens)
    if index is None:
        raise AppCommandError(f"cannot find a Celery worker command in {shlex.join(command or [])}")
    return tokens[:index]


def celery_executable(command):
    """The prefix without -A/--app and its value: what `--version` can run without the app."""
    prefix, kept, skip = celery_prefix(command), [], False
    for token in prefix:
        if skip:
            skip = False
            continue
        if token in ("-A", "--app"):
            skip = True
            continue
        if token.startswith(("--app=", "-A")) and token not in ("-A",):
            continue
        kept.append(token)
    return kept


def joined_pythonpath(config_dir, *paths):
    """The rendered config's directory first, then the first PYTHONPATH the app already sets."""
    existing = next((path for path in paths if path), "")
    return f"{config_dir}:{existing}" if existing and existing != config_dir else config_dir


def image_pythonpath(image_env):
    """PYTHONPATH from an image's Config.Env list."""
    for item in image_env or []:
        if item.startswith("PYTHONPATH="):
            return item.split("=", 1)[1]
    return ""


def image_pythonpaths(results):
    """Image name -> its PYTHONPATH, from a loop of community.docker.docker_image_info over image
    names (an image not present yet, e.g. still to be built, gives "")."""
    paths = {}
    for result in results or []:
        images = result.get("images") or [{}]
        paths[result.get("item")] = image_pythonpath(((images[0] or {}).get("Config") or {}).get("Env"))
    return paths


def running_images(lines):
    """Service -> {image, id} from `docker inspect` lines "<service> <image name> <image id>"; with
    several containers of a service, the first."""
    images = {}
    for line in lines or []:
        parts = str(line).split()
        if len(parts) == 3 and parts[0] not in images:
            images[parts[0]] = dict(image=parts[1], id=parts[2])
    return images


def images_to_restore(recorded, info_results):
    """The recorded images whose name now points at another image, and whose recorded image is still
    on the host: [{image, id}]. info_results: a loop of community.docker.docker_image_info over the
    recorded names and ids."""
    found = {}
    for result in info_results or []:
        images = result.get("images") or []
        found[result.get("item")] = (images[0] or {}).get("Id", "") if images else ""
    restore = []
    for image, image_id in sorted({(item["image"], item["id"]) for item in (recorded or {}).values()}):
        if found.get(image, "") != image_id and found.get(image_id):
            restore.append(dict(image=image, id=image_id))
    return restore


def containers(lines):
    """[{container, service}] from `docker compose ps --format` __priority_queue_ps_format lines (ID, service,
    one-off label). One-off containers (`docker compose run`, the role's own checks too) belong to no
    service's replicas, and may be gone a moment later: left out."""
    found = []
    for line in lines or []:
        parts = str(line).split()
        if len(parts) == 3 and parts[2] == "False":
            found.append(dict(container=parts[0], service=parts[1]))
    return found


REPLACING = ("Recreate", "Stop", "Stopping", "Remove", "Removing")


def replaced_containers(plan):
    """[{container, service}] of the running containers a docker_compose_v2 check-mode plan replaces,
    stops or removes: the workers among them drain first."""
    names = {action.get("id") for action in (plan or {}).get("actions") or []
             if action.get("what") == "container" and action.get("status") in REPLACING}
    return [dict(container=item.get("ID"), service=item.get("Service"))
            for item in (plan or {}).get("containers") or [] if item.get("Name") in names]


def compose_failure(result):
    """The line of a failed Compose run that says what went wrong, and the container it names."""
    text = "\n".join(str(result.get(key) or "") for key in ("stderr", "msg"))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if re.search(r"unhealthy|exited|error|failed", line, re.I)),
                  lines[-1] if lines else "failed")
    match = re.search(r"container (\S+) (?:is unhealthy|exited|has exited)", text)
    return dict(reason=reason[-300:], container=match.group(1) if match else "")


def app_errors(services, pools, template, producers, web, broker, db=None, worker_command_override=None):
    """What in the app's compose files the topology cannot work with, each naming its variable."""
    errors = []
    names = set(services or {})
    listed = ", ".join(sorted(names)) or "none"
    if template not in names:
        errors.append(f"priority_queue_worker_template_service {template!r} is not a service of the app's compose "
                      f"files (services: {listed})")
    for service in producers or []:
        if service not in names:
            errors.append(f"priority_queue_producer_services names {service!r}, which is not a service of the app's "
                          f"compose files (services: {listed})")
    for variable, service in (("priority_queue_web_service", web), ("priority_queue_broker_service", broker),
                              ("priority_queue_db_service", db)):
        if service and service not in names:
            errors.append(f"{variable} {service!r} is not a service of the app's compose files (services: {listed})")
    if template in names and not worker_command_override:
        try:
            worker_command(services[template]["command"], dict(name="pool", queues=["q"], concurrency=1))
        except AppCommandError as exc:
            errors.append(str(exc))
    for pool in pools or []:
        name = pool.get("name")
        if name != template and name in names:
            errors.append(f"priority_queue_pools[{name!r}]: {name!r} is already a service of the app's compose files; "
                          f"the rendered pool would turn it into a Celery worker. Name the pool differently")
    return errors


class FilterModule:
    def filters(self):
        return {
            "app_services": app_services,
            "without_restart_policy": without_restart_policy,
            "containers_without_restart_policy": containers_without_restart_policy,
            "services_down": services_down,
            "engine_stop_timeout": engine_stop_timeout,
            "worker_host_compose": worker_host_compose,
            "project_mounts": project_mounts,
            "compose_argv": compose_argv,
            "worker_command": worker_command,
            "celery_prefix": celery_prefix,
            "celery_executable": celery_executable,
            "joined_pythonpath": joined_pythonpath,
            "image_pythonpaths": image_pythonpaths,
            "app_errors": app_errors,
            "compose_failure": compose_failure,
            "running_images": running_images,
            "containers": containers,
            "replaced_containers": replaced_containers,
            "images_to_restore": images_to_restore,
        }
